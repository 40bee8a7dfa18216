"""The synthetic core: a normalized residual MLP fitting a power-law random-feature teacher on a finite,
noisy training set.  It is built to meet the steady-state argument's assumptions (docs/synthetic.md):

    x (d_in)  --W_in-->  h (d)                                  embedding, fan-in d_in >= every width
    per block: h <- h + W2 · n(relu(W1 · n(h)))                 W1, W2: d x d, the ``matrix`` class
    y = W_out · n(h) / m                                         mu-P readout (1/m under mu-P rules)

with n(.) = RMSNorm with a learned gain.  Why this shape:

* **Full-rank, width-d inputs.**  Every hidden matrix sees an RMS-normalized width-d vector.  The input is
  isotropic Gaussian with d_in = 256 >= the widths studied, so even the first block's W1 gets a rank-d input
  (the previous core fed its first matrix a 32-dim input: its sigma_top grew with lam, against the law).
* **Scale-invariant layers.**  W1 is exactly scale-invariant (relu is positively homogeneous and a norm follows),
  so AdamW's norm equilibrium ||W||_F ~ sqrt(eta N / (2 lam)) holds for it as in Kosson et al.  W2's scale is
  the *sublayer gain* (how much the block adds to the residual stream), the quantity Fan et al. argue must stay
  width-invariant: its sigma_top is what the rules move.
* **An interior LR optimum, and a job for weight decay.**  The teacher's random features carry a power-law
  spectrum of coefficients (as in power-law random-feature models of scaling laws), the labels carry noise
  (``noise``), and the training set is finite (``n_train``, revisited for many epochs).  Weight decay then
  regularizes, the best (eta, lam) is interior, and at the proxy's optimum every matrix is many tau deep in the
  steady state.  ``n_train=None`` gives the fresh-data variant (no over-fitting; decay only slows learning).

The loss reported (``val_loss``) is the mean squared error on a fixed, clean held-out set.
"""
from __future__ import annotations

import functools
from dataclasses import astuple, dataclass

import torch
from torch import nn

from .ensemble import EnsembleModule, Linear, RMSNorm

VERSION = 2  # part of a synthetic run's id: runs of the earlier core (version 1) are never reused as cached


@dataclass
class SyntheticConfig:
    d_in: int = 256
    d_out: int = 8
    depth: int = 2  # residual blocks, two hidden matrices each
    batch_size: int = 128
    n_train: int | None = 2048  # finite training set (None: a fresh batch every step)
    noise: float = 0.5  # label noise std on training targets (the targets have unit variance)
    n_features: int = 2048  # teacher random features
    power: float = 1.5  # teacher coefficient of feature k ~ k^-power/2 ... see Teacher
    n_val: int = 1024


class Teacher:
    """A fixed random-feature regression y = A · (c ⊙ relu(G x / sqrt(d_in))), outputs scaled to unit variance.

    c_k = k^(-power/2): the target's energy along feature k falls as k^-power, a power-law spectrum, so a
    model keeps finding smaller components the longer and wider it trains.  Seeded: always the same teacher.
    """

    def __init__(self, cfg: SyntheticConfig, seed: int = 1234):
        g = torch.Generator().manual_seed(seed)
        k = torch.arange(1, cfg.n_features + 1, dtype=torch.float32)
        self.g = torch.randn(cfg.n_features, cfg.d_in, generator=g) / cfg.d_in ** 0.5
        self.a = torch.randn(cfg.d_out, cfg.n_features, generator=g) * k.pow(-cfg.power / 2)
        x = torch.randn(8192, cfg.d_in, generator=g)
        raw = self._raw(x)
        self.mean, self.scale = raw.mean(0), 1.0 / raw.std(0)

    def _raw(self, x):
        f = torch.relu(x @ self.g.T)
        return (f - f.mean(1, keepdim=True)) @ self.a.T

    def __call__(self, x):
        return (self._raw(x) - self.mean) * self.scale


@functools.lru_cache(maxsize=4)
def _dataset(key: tuple) -> tuple:
    """(x_train, y_train, x_val, y_val) on the CPU, built once per config (every width and ensemble shares it)."""
    cfg = SyntheticConfig(*key)
    teacher = Teacher(cfg)
    gv = torch.Generator().manual_seed(99_991)  # the validation set is the same for every run
    xv = torch.randn(cfg.n_val, cfg.d_in, generator=gv)
    yv = teacher(xv)  # clean: the held-out loss measures the function learned, not the label noise
    if cfg.n_train is None:
        return None, None, xv, yv
    gt = torch.Generator().manual_seed(4_242)
    xt = torch.randn(cfg.n_train, cfg.d_in, generator=gt)
    yt = teacher(xt) + cfg.noise * torch.randn(cfg.n_train, cfg.d_out, generator=gt)
    return xt, yt, xv, yv


class SyntheticData:
    """Batches of (x, y): epochs over the finite training set in a ``data_seed``-determined order, or fresh
    teacher samples when ``n_train`` is None.  ``val`` is the fixed clean held-out set."""

    def __init__(self, cfg: SyntheticConfig, data_seed: int = 0, device="cpu", dtype=torch.float32):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        xt, yt, xv, yv = _dataset(astuple(cfg))
        self.gen = torch.Generator().manual_seed(10_000 + int(data_seed))
        self.val = (xv.to(device, dtype), yv.to(device, dtype))
        self.teacher = None if xt is not None else Teacher(cfg)
        if xt is not None:
            self.train = (xt.to(device, dtype), yt.to(device, dtype))
            self.perm, self.pos = None, 0

    def __iter__(self):
        return self

    def __next__(self):
        B = self.cfg.batch_size
        if self.teacher is not None:
            x = torch.randn(B, self.cfg.d_in, generator=self.gen)
            return x.to(self.device, self.dtype), self.teacher(x).to(self.device, self.dtype)
        n = self.cfg.n_train
        if self.perm is None or self.pos + B > n:  # a new epoch (the tail shorter than a batch is skipped)
            self.perm, self.pos = torch.randperm(n, generator=self.gen).to(self.device), 0
        idx = self.perm[self.pos:self.pos + B]
        self.pos += B
        return self.train[0][idx], self.train[1][idx]


class ResidualBlock(nn.Module):
    """h <- h + W2 · n(relu(W1 · n(h)))"""

    def __init__(self, norm_a, w1, norm_b, w2):
        super().__init__()
        self.norm_a, self.w1, self.norm_b, self.w2 = RMSNorm(norm_a), Linear(w1), RMSNorm(norm_b), Linear(w2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.w2(self.norm_b(torch.relu(self.w1(self.norm_a(h)))))


class SyntheticFFN(EnsembleModule):
    """The normalized residual MLP, E members at one width, parameters (E, ...)."""

    def __init__(self, n_members: int, width: int, cfg: SyntheticConfig | None = None):
        super().__init__(n_members, width)
        self.cfg = cfg = cfg or SyntheticConfig()
        d = width
        # fan-in d_in: a dense Gaussian input, so h starts with unit-scale coordinates
        self.embed = Linear(self.add("w_in", (d, cfg.d_in), "embedding"))
        self.blocks = nn.ModuleList(
            ResidualBlock(self.add(f"norm{l}a", (d,), "vector", fill=1.0), self.add(f"w1_{l}", (d, d), "matrix"),
                          self.add(f"norm{l}b", (d,), "vector", fill=1.0), self.add(f"w2_{l}", (d, d), "matrix"))
            for l in range(cfg.depth))
        self.final_norm = RMSNorm(self.add("norm_out", (d,), "vector", fill=1.0))
        self.head = Linear(self.add("w_out", (cfg.d_out, d), "readout"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, d_in) shared by all members, or (E, B, d_in). Returns (E, B, d_out)."""
        h = self.embed(x)  # (E, B, d)
        for block in self.blocks:
            h = block(h)
        y = self.head(self.final_norm(h))
        return y * self.readout_mult.view(-1, 1, 1).to(y.dtype)

    def loss(self, batch) -> torch.Tensor:
        x, y = batch
        return (self(x) - y).pow(2).mean(dim=(1, 2))
