"""σ_top of a matrix, fast: exact SVD when small, randomized block Krylov otherwise.

The one spectral primitive of wdscale: ``inspect`` reads it off checkpoints and ``SpectralMonitor`` off a model
while it trains (warm-started from its last Ritz vectors), so it lives at the bottom, below both.
"""
from __future__ import annotations

import torch

EXACT_BELOW = 256  # min(m, n) at or below this: the full SVD is cheaper than iterating


def top_sv(W: torch.Tensor, block: int = 8, max_steps: int = 40, tol: float = 1e-6, seed: int = 0) -> float:
    """σ_top of a matrix: exact SVD when small, else randomized block Krylov (``krylov_top_sv``)."""
    W = W.detach()
    if W.ndim != 2:
        W = W.reshape(W.shape[0], -1)
    W = W.float()
    if min(W.shape) == 0:
        return 0.0
    if min(W.shape) <= EXACT_BELOW or min(W.shape) <= 2 * block:
        return float(torch.linalg.svdvals(W)[0])
    g = torch.Generator().manual_seed(seed)
    V0 = torch.randn(min(W.shape), block, generator=g, dtype=torch.float64)
    return krylov_top_sv(W, V0, max_steps, tol)[0]


def krylov_top_sv(W: torch.Tensor, V0: torch.Tensor, max_steps: int = 40, tol: float = 1e-6):
    """(σ_top, Ritz vectors) by block Krylov from the block ``V0`` (on W's shorter side).

    Each step multiplies the newest block by W and Wᵀ (two passes over W) and adds it to an orthonormal basis
    V of the Krylov space span{V0, WᵀW V0, (WᵀW)² V0, ...}; the Rayleigh-Ritz value √λ_max(VᵀWᵀWV) is a lower
    bound on σ_top that converges without needing a gap between σ₁ and σ₂ (block Krylov, Musco & Musco 2015).
    Stops after ``max_steps`` or when it moves by less than ``tol`` (relative).  fp32 products, fp64 basis.
    The returned Ritz vectors (CPU fp32, best first, as many as V0 has columns) warm-start the next call on a
    matrix that has moved a little (``monitor.SpectralMonitor``).

    Batched: W (B, m, n) and V0 (B, n, k) give (B,) values and (B, n, k) vectors, one host round trip per step
    for the whole batch (what makes it cheap on a GPU)."""
    single = W.ndim == 2
    if single:
        W, V0 = W[None], V0[None]
    if W.shape[1] < W.shape[2]:
        W = W.transpose(1, 2)  # a view: keep the long side first, the basis lives on the short side
    n, block = W.shape[2], V0.shape[2]
    # The small fp64 linear algebra (QR, eigh of n x k blocks) stays on the CPU: on a GPU each such call
    # costs ~1 ms of solver latency, far more than moving n x k numbers.
    V = torch.linalg.qr(V0.detach().to("cpu", torch.float64))[0]
    Vs, Zs, est, evecs = [], [], None, None
    for step in range(max(1, max_steps)):
        Yt = V.transpose(1, 2).to(W.device, W.dtype) @ W.transpose(1, 2)  # (B, k, m): the fast layout
        Z = (Yt @ W).to("cpu", torch.float64).transpose(1, 2)           # (B, n, k) = WᵀW V
        Vs.append(V)
        Zs.append(Z)
        Vb = torch.cat(Vs, 2)
        T = Vb.transpose(1, 2) @ torch.cat(Zs, 2)
        e, evecs = torch.linalg.eigh(0.5 * (T + T.transpose(1, 2)))
        new = e[:, -1].clamp_min(0).sqrt()
        done = est is not None and bool(((new - est).abs() <= tol * new).all())
        est = new
        if done or step == max_steps - 1 or Vb.shape[2] + block > n:
            break
        proj = lambda X: X - Vb @ (Vb.transpose(1, 2) @ X)  # noqa: E731
        R = proj(proj(Z))                                   # twice is enough (CGS2)
        dead = R.flatten(1).norm(dim=1) <= 1e-12 * Z.flatten(1).norm(dim=1).clamp_min(1e-300)
        if bool(dead.all()):
            break  # Krylov space exhausted: the Ritz values are exact
        if bool(dead.any()):  # exhausted members get fresh directions: the basis must stay orthonormal
            R[dead] = proj(torch.randn(R.shape, dtype=R.dtype, generator=torch.Generator().manual_seed(step)))[dead]
        V = torch.linalg.qr(proj(torch.linalg.qr(R)[0]))[0]
    ritz = (Vb @ evecs[..., -block:].flip(-1)).to(torch.float32)
    est = est.tolist()
    return (est[0], ritz[0]) if single else (est, ritz)
