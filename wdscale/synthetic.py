"""The synthetic core: a small normalized FFN learning a fixed random teacher (the paper's minimal setting).

    x (d_in) --W_in--> h0 (d) --[RMSNorm, gain, ReLU, W_l]*depth--> h --RMSNorm--> W_out / m --> y (d_out)

``W_in`` is the embedding class (fan-in d_in is fixed), the ``depth`` hidden d x d matrices are the
``matrix`` class whose spectra the paper studies, ``W_out`` is the mu-P readout.  The teacher is a fixed
random two-layer tanh network; data are fresh Gaussian inputs every step (no over-fitting, so the training
loss on a held-out set is the validation metric).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .ensemble import EnsembleModule, elinear, rms_norm


@dataclass
class SyntheticConfig:
    d_in: int = 32
    d_out: int = 16
    depth: int = 2
    teacher_width: int = 128
    batch_size: int = 128
    n_val: int = 2048


class Teacher:
    """A fixed random net y = A2 tanh(A1 x); outputs scaled to unit variance. Seeded, so always the same."""

    def __init__(self, cfg: SyntheticConfig, seed: int = 1234):
        g = torch.Generator().manual_seed(seed)
        self.a1 = torch.randn(cfg.teacher_width, cfg.d_in, generator=g) * (2.0 / cfg.d_in ** 0.5)
        self.a2 = torch.randn(cfg.d_out, cfg.teacher_width, generator=g) / cfg.teacher_width ** 0.5
        x = torch.randn(4096, cfg.d_in, generator=g)
        self.scale = 1.0 / self._raw(x).std()

    def _raw(self, x):
        return torch.tanh(x @ self.a1.T) @ self.a2.T

    def __call__(self, x):
        return self._raw(x) * self.scale


class SyntheticData:
    """Infinite stream of (x, y) batches from the teacher, deterministic in ``data_seed``."""

    def __init__(self, cfg: SyntheticConfig, data_seed: int = 0, device="cpu", dtype=torch.float32):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.teacher = Teacher(cfg)
        self.gen = torch.Generator().manual_seed(10_000 + int(data_seed))
        gv = torch.Generator().manual_seed(99_991)  # the validation set is the same for every run
        xv = torch.randn(cfg.n_val, cfg.d_in, generator=gv)
        self.val = (xv.to(device, dtype), self.teacher(xv).to(device, dtype))

    def __iter__(self):
        return self

    def __next__(self):
        x = torch.randn(self.cfg.batch_size, self.cfg.d_in, generator=self.gen)
        return x.to(self.device, self.dtype), self.teacher(x).to(self.device, self.dtype)


class SyntheticFFN(EnsembleModule):
    def __init__(self, n_members: int, width: int, cfg: SyntheticConfig | None = None):
        super().__init__(n_members, width)
        self.cfg = cfg = cfg or SyntheticConfig()
        d = width
        self.add("w_in", (d, cfg.d_in), "embedding")
        for l in range(cfg.depth):
            self.add(f"norm{l}", (d,), "vector", fill=1.0)
            self.add(f"h{l}", (d, d), "matrix")
        self.add("norm_out", (d,), "vector", fill=1.0)
        self.add("w_out", (cfg.d_out, d), "readout")

    def forward(self, x: torch.Tensor, capture: dict | None = None) -> torch.Tensor:
        """x (B, d_in) shared by all members, or (E, B, d_in). Returns (E, B, d_out).

        ``capture``, when given, receives each hidden matrix's input and output (for sublayer-gain and
        Kosson measures)."""
        if x.ndim == 2:
            x = x.unsqueeze(0).expand(self.E, *x.shape)
        h = elinear(x, self.w_in)
        for l in range(self.cfg.depth):
            u = torch.relu(rms_norm(h, getattr(self, f"norm{l}")))
            h = elinear(u, getattr(self, f"h{l}"))
            if capture is not None:
                capture[f"h{l}"] = (u, h)
        y = elinear(rms_norm(h, self.norm_out), self.w_out)
        return y * self.readout_mult.view(-1, 1, 1).to(y.dtype)

    def loss(self, batch) -> torch.Tensor:
        x, y = batch
        return (self(x) - y).pow(2).mean(dim=(1, 2))
