"""Ensemble batching: E independent models of one width stored as tensors with a leading member dim.

Every member of a sweep at one width (its own eta, lam, rule and init seed) trains in the same batched
matmuls.  Nothing ever mixes across the member dimension, so each member follows exactly the trajectory it
would follow alone (tests/test_ensemble.py checks this against ``torch.optim.AdamW`` on a plain module).

The models are built from the modules here (``Linear``, ``RMSNorm``) and read what they measure through
``activations``: forward hooks that attach for one block of code and detach after it.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from ..core.rules import Resolved


class EnsembleModule(nn.Module):
    """Base class for ensemble-batched models.

    Subclasses create every weight with ``add`` (shape (E, ...), its public name and rule class) and hand the
    returned tensors to their modules.  The public names (``l0_wq``, ``emb``, ``readout``) are what
    ``named_parameters``, ``param_class``, ``member_state`` and ``matrices`` use, and the order of ``add`` calls is
    the order the init draws in; the modules hold the same tensors, as tied weights do.  Subclasses implement
    ``loss(batch) -> (E,)``.  ``readout_mult`` is a (E,) buffer: the readout class's forward multiplier per member.
    """

    def __init__(self, n_members: int, width: int):
        super().__init__()
        self.E = n_members
        self.width = width
        self.param_class: dict[str, str] = {}
        self.fan_in: dict[str, int] = {}
        self.register_buffer("readout_mult", torch.ones(n_members))

    def add(self, name: str, shape: tuple, cls: str, fill: float | None = None,
            fan_in: int | None = None) -> nn.Parameter:
        """Register weight ``name`` of per-member ``shape`` and class ``cls``.  ``fan_in``: the inputs each output
        sums over, for the init (default: the last dim; a lookup table's is 1)."""
        p = nn.Parameter(torch.zeros(self.E, *shape) if fill is None else torch.full((self.E, *shape), fill))
        self.register_parameter(name, p)
        self.param_class[name] = cls
        self.fan_in[name] = shape[-1] if fan_in is None else fan_in
        return p

    @torch.no_grad()
    def init_member(self, i: int, seed: int, res: Resolved) -> None:
        """Draw member i's weights with the init ``res`` gives each class, and set its forward multipliers."""
        if any(g["mult"] != 1 for c, g in res.groups.items() if c != "readout"):
            raise ValueError("these models apply a forward multiplier to the readout only")
        g = torch.Generator().manual_seed(int(seed))
        for name, p in self.named_parameters():
            std = res.init_std(self.param_class[name], self.fan_in[name])
            if std is not None:
                # Drawn on the CPU in fp32 so a member's init does not depend on device or ensemble size.
                p[i].copy_(torch.randn(p.shape[1:], generator=g) * std)
        self.readout_mult[i] = res.readout_mult

    def probes(self) -> dict[str, nn.Module]:
        """Modules ``activations`` records besides the matrices, by name: here the logits."""
        return {"logits": self}

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        return {n: p[i].detach().to("cpu", torch.float32).clone() for n, p in self.named_parameters()}

    def load_member(self, i: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.named_parameters():
                p[i].copy_(state[n])

    def matrices(self) -> dict[str, torch.Tensor]:
        """Every 2-D (per member) parameter, the ones whose spectra we track."""
        return {n: p for n, p in self.named_parameters() if p.ndim == 3}


class Linear(nn.Module):
    """x W^T for every member at once, with one weight or several fused into one matmul (outputs side by side).

    Fusing q, k, v (or gate and up) keeps one (3d x d) matmul where three would run; the concatenation costs
    O(d^2), the matmul O(tokens d^2).  Each weight keeps its own name and spectrum."""

    def __init__(self, *weights: nn.Parameter):
        super().__init__()
        self.weights = nn.ParameterList(weights)
        self.sizes = [w.shape[1] for w in weights]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, ..., in), or (B, in) shared by every member -> (E, ..., out) / (E, B, out)."""
        w = self.weights[0] if len(self.sizes) == 1 else torch.cat(tuple(self.weights), dim=1)
        if x.ndim == 2:  # one input for every member: a single (B, in) x (in, E*out) GEMM, not E small ones
            E, out = w.shape[:2]
            return (x @ w.reshape(E * out, -1).T).view(x.shape[0], E, out).transpose(0, 1)
        return elinear(x, w)


class RMSNorm(nn.Module):
    def __init__(self, gain: nn.Parameter):
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.gain)


@contextmanager
def activations(model: EnsembleModule):
    """``with activations(model) as seen:`` every forward inside the block fills ``seen``: name -> (input, output).

    Names: each weight of a ``Linear`` by its public name (a fused matmul's output split per weight; a shared
    (B, in) input expanded to every member), and the model's ``probes()`` (its logits; the Transformer's ``emb``
    and ``l{i}_block``, the residual stream after block i).  The hooks are removed on leaving, so the model is
    what it was: as microsoft/mup's coordinate check, measurement never changes the forward."""
    seen: dict = {}
    public = {id(p): n for n, p in model.named_parameters()}

    def on_linear(mod, args, out):
        x = args[0]
        if x.ndim == 2:
            x = x.expand(out.shape[0], *x.shape)
        for w, y in zip(mod.weights, out.split(mod.sizes, dim=-1)):
            seen[public[id(w)]] = (x, y)

    def on_probe(name):
        return lambda mod, args, out: seen.__setitem__(name, (args[0], out))

    hooks = [m.register_forward_hook(on_linear) for m in model.modules() if isinstance(m, Linear)]
    hooks += [m.register_forward_hook(on_probe(n)) for n, m in model.probes().items()]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def elinear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Member-batched linear map: x (E, ..., in), w (E, out, in) -> (E, ..., out)."""
    E = w.shape[0]
    lead = x.shape[1:-1]
    y = torch.bmm(x.reshape(E, -1, x.shape[-1]), w.transpose(1, 2))
    return y.reshape(E, *lead, w.shape[1])


def rms_norm(x: torch.Tensor, gain: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim; gain (E, d) broadcast over the middle dims.

    In fp32 with a gain it runs as one autograd Function with a hand-written backward: ~40% fewer passes over
    the activations than autograd's composite, which matters because at the demo's widths these elementwise
    passes cost about as much as the matmuls (tests/test_ensemble.py checks values and gradients against the
    composite)."""
    if gain is not None and x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
        return _RMSNorm.apply(x, gain, eps)
    return _rms_norm_composite(x, gain, eps)


def _rms_norm_composite(x: torch.Tensor, gain: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if gain is not None:
        y = y * gain.reshape(gain.shape[0], *([1] * (x.ndim - 2)), gain.shape[-1])
    return y


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gain, eps):
        # ||x|| in one read (no x*x temporary); mean(x^2) = ||x||^2 / d
        r = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps))
        xhat = x * r
        g = gain.reshape(gain.shape[0], *([1] * (x.ndim - 2)), gain.shape[-1])
        ctx.save_for_backward(xhat, r, g)
        ctx.gain_shape = gain.shape
        return xhat * g

    @staticmethod
    def backward(ctx, gy):
        xhat, r, g = ctx.saved_tensors
        gx = gy * g
        E, d = xhat.shape[0], xhat.shape[-1]
        g_gain = torch.linalg.vecdot(gy.reshape(E, -1, d), xhat.reshape(E, -1, d), dim=1).reshape(ctx.gain_shape)
        # d/dx of x * rsqrt(mean(x^2)): r * (gx - xhat * mean(gx * xhat))
        dot = torch.linalg.vecdot(gx, xhat, dim=-1).unsqueeze(-1).div_(d)
        return torch.addcmul(gx, xhat, dot, value=-1).mul_(r), g_gain, None


def singular_values(w: torch.Tensor) -> torch.Tensor:
    """Singular values of a batch of matrices (E, out, in), descending: (E, min(out, in)).

    Computed as sqrt(eigvalsh(W W^T)) on the smaller side: ~5x faster than ``torch.linalg.svdvals`` on the CPU
    for the 128-256 wide matrices the app snapshots, and within ~1e-6 relative of it for the top singular
    values (small ones lose digits like sigma_max^2 * eps / sigma, far below what a log-scale spectrum shows)."""
    w = w.float()
    g = w @ w.transpose(1, 2) if w.shape[1] <= w.shape[2] else w.transpose(1, 2) @ w
    return torch.linalg.eigvalsh(g).flip(-1).clamp_min(0).sqrt()


def _bcast(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (p.ndim - 1)))


class EnsembleAdamW:
    """AdamW with a learning rate and weight decay per member and per parameter.

    Same maths as ``torch.optim.AdamW`` (decoupled decay ``p *= 1 - lr*wd`` then the Adam step), so the per-step
    decay of a member is lr*wd.  ``step(lr_scale, alive)``: ``lr_scale`` (E,) multiplies every lr of a member
    (the schedule); members with ``alive == False`` are frozen: zero lr, zero decay, gradients ignored.
    """

    def __init__(self, model: EnsembleModule, resolved: list[Resolved], betas=(0.9, 0.95), eps: float = 1e-8,
                 fused: bool | None = None):
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0
        # fused: torch's one-pass AdamW kernel per (member, class) group of tensors.  The multi-tensor path makes
        # ~10 passes over every parameter, moment and gradient; at d=128 with 42 members those arrays are ~17 MB
        # each, so it is memory-bound and cost as much as the matmuls.  Same maths; tests/test_ensemble.py
        # checks both paths against torch.optim.AdamW.
        self.fused = hasattr(torch, "_fused_adamw_") if fused is None else bool(fused)
        self.params = []
        dev = next(model.parameters()).device
        for name, p in model.named_parameters():
            cls = model.param_class[name]
            lr = torch.tensor([r.groups[cls]["lr"] for r in resolved], dtype=torch.float64, device=dev)
            wd = torch.tensor([r.groups[cls]["wd"] for r in resolved], dtype=torch.float64, device=dev)
            self.params.append((name, p, lr, wd, torch.zeros_like(p), torch.zeros_like(p)))
        self.dtype = next(model.parameters()).dtype
        self._lr0 = self._wd = None  # (n_params, E) stacks of the lr and wd columns, built on the first step
        if self.fused:
            self._step_t = torch.zeros((), dtype=torch.float32, device=dev)
            # per member: [(lr, wd, [param index, ...])] for each distinct (lr, wd) of its classes
            self._member_groups = []
            for i in range(len(resolved)):
                by = {}
                for k, (_, _, lr, wd, _, _) in enumerate(self.params):
                    by.setdefault((float(lr[i]), float(wd[i])), []).append(k)
                self._member_groups.append([(lr, wd, ks) for (lr, wd), ks in by.items()])
            # views of member i's slice of every parameter and moment: made once, they stay valid
            self._views = [[(e[1][i], e[4][i], e[5][i]) for e in self.params] for i in range(len(resolved))]

    @torch.no_grad()
    def step(self, lr_scale: torch.Tensor, alive: torch.Tensor) -> None:
        if self.fused:
            return self._step_fused(lr_scale, alive)
        # Speed: the per-member factors of all parameters are computed in one (n_params, E) op each, and the
        # moment updates run as multi-tensor (_foreach) ops; at small widths a step is bound by op count, not
        # FLOPs.  The elementwise maths (and its rounding order) is the same as torch.optim.AdamW's.
        self.t += 1
        bc1 = 1 - self.b1 ** self.t
        bc2_sqrt = math.sqrt(1 - self.b2 ** self.t)
        live = [(i, e) for i, e in enumerate(self.params) if e[1].grad is not None]
        if not live:
            return
        idx = [i for i, _ in live]
        if self._lr0 is None:
            self._lr0 = torch.stack([e[2] for e in self.params])  # (n_params, E) float64
            self._wd = torch.stack([e[3] for e in self.params])
        lr = torch.where(alive, self._lr0 * lr_scale, 0.0)
        decay = (1 - lr * self._wd).to(self.dtype)  # 1 - lr*wd rounded once, as torch does
        scale = (-lr / bc1).to(self.dtype)
        ps = [e[1] for _, e in live]
        ms = [e[4] for _, e in live]
        vs = [e[5] for _, e in live]
        gs = [p.grad for p in ps]
        if not bool(alive.all()):  # one host sync per step, and only to skip a mask that is rarely needed
            gs = [torch.where(_bcast(alive, g), g, 0.0) for g in gs]
        for i, p in zip(idx, ps):
            p.mul_(_bcast(decay[i], p))
        torch._foreach_lerp_(ms, gs, 1 - self.b1)
        torch._foreach_mul_(vs, self.b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - self.b2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, self.eps)
        for i, p, m, d in zip(idx, ps, ms, denom):
            p.addcdiv_(m * _bcast(scale[i], p), d)

    def _step_fused(self, lr_scale: torch.Tensor, alive: torch.Tensor) -> None:
        """One fused AdamW call per distinct (lr, wd) among the live members' classes.  Frozen members are
        skipped whole (weights and moments), which is what the multi-tensor path's zero lr and masked gradients
        amount to for their weights."""
        self.t += 1
        self._step_t.fill_(self.t)
        scale, live = lr_scale.tolist(), alive.tolist()
        calls: dict = {}
        for i, (s, ok) in enumerate(zip(scale, live)):
            if not ok:
                continue
            for lr, wd, ks in self._member_groups[i]:
                c = calls.setdefault((lr * s, wd), ([], [], [], []))
                for k in ks:
                    g = self.params[k][1].grad
                    if g is None:
                        continue
                    p, m, v = self._views[i][k]
                    c[0].append(p), c[1].append(g[i]), c[2].append(m), c[3].append(v)
        for (lr, wd), (ps, gs, ms, vs) in calls.items():
            if ps:
                torch._fused_adamw_(ps, gs, ms, vs, [], [self._step_t] * len(ps), amsgrad=False, lr=lr,
                                    beta1=self.b1, beta2=self.b2, weight_decay=wd, eps=self.eps, maximize=False,
                                    grad_scale=None, found_inf=None)

    def state(self) -> dict:
        """Step count and Adam moments by parameter name (CPU copies): what a checkpoint needs."""
        return {"t": self.t, "m": {n: m.detach().cpu() for n, _, _, _, m, _ in self.params},
                "v": {n: v.detach().cpu() for n, _, _, _, _, v in self.params}}

    def load_state(self, st: dict) -> None:
        self.t = int(st["t"])
        with torch.no_grad():
            for n, _, _, _, m, v in self.params:
                m.copy_(st["m"][n])
                v.copy_(st["v"][n])

    def zero_grad(self) -> None:
        for _, p, *_ in self.params:
            p.grad = None
