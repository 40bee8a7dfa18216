"""A LLaMA-style decoder-only Transformer, ensemble-batched: E independent models in the same matmuls.

    idx --Embedding--> h --[ h += Attention(RMSNorm(h)); h += SwiGLU(RMSNorm(h)) ] * depth --RMSNorm--> readout * mult

* byte tokens (vocab 256), untied embedding (class ``embedding``) and readout (class ``readout``);
* pre-norm RMSNorm with gains (class ``vector``), no biases anywhere;
* causal self-attention with RoPE, fixed head dim (``head_dim``, so heads = d / head_dim), SDPA kernel;
* SwiGLU MLP, hidden = 8/3 d rounded up to a multiple of 8.

The parametrization is the member's ``Resolved`` (wdscale/core/rules.py), read in ``init_member``: each class's init
std, the readout multiplier (1/m under mu-P rules, 1 under SP) and the attention logit scale, per member, so SP
and mu-P members can share one ensemble.  The head dim stays fixed as width grows, so every rule's scale is
1/sqrt(head_dim) and at m = 1 an ``sp`` and a ``mup`` member with the same seed are the same model
(tests/test_transformer.py): SP-vs-mu-P comparisons are not confounded by the attention temperature.

Every weight has a leading member dim E and a public name (``emb``, ``l{i}_wq/wk/wv/wo``, ``l{i}_w1`` (gate),
``l{i}_w3`` (up), ``l{i}_w2`` (down), ``readout``, the gains ``l{i}_norm1/2`` and ``norm_out``): the name stores,
spectra and the optimizer see.  q, k, v (and w1, w3) are separate weights, each with its own spectrum, fused into
one matmul in the forward pass (``ensemble.Linear``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .data import VOCAB, TextData, check_corpus
from .ensemble import EnsembleModule, Linear, RMSNorm

DEFAULT_DEPTH = 4
DEFAULT_BATCH = 16
ROPE_BASE = 10_000.0


def mlp_hidden(d: int) -> int:
    return 8 * math.ceil(8 * d / 3 / 8)


@dataclass(frozen=True)
class TransformerConfig:
    width: int
    depth: int = DEFAULT_DEPTH
    head_dim: int = 32
    seq_len: int = 128  # the RoPE tables are built for this; a longer input extends them once
    vocab: int = VOCAB

    def __post_init__(self):
        if self.width % self.head_dim:
            raise ValueError(f"width {self.width} is not a multiple of head_dim {self.head_dim}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")

    @property
    def n_heads(self) -> int:
        return self.width // self.head_dim

    @property
    def hidden(self) -> int:
        return mlp_hidden(self.width)


def rope_tables(seq_len: int, head_dim: int, device=None, dtype=None, base: float = ROPE_BASE):
    """cos, sin of shape (seq_len, head_dim/2): position t rotates pair i by t * base^(-2i/head_dim)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv_freq[None]
    dtype = dtype or torch.get_default_dtype()
    return ang.cos().to(device, dtype), ang.sin().to(device, dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, H, hd) by position; cos/sin (T, hd/2).  Half-split pairing (x_i, x_{i+hd/2}).

    A rotation by angle t*f for q at t and k at s leaves q.k depending on t - s only: relative positions."""
    x1, x2 = x.chunk(2, dim=-1)  # split, not slicing: its backward is a cat, not zeros + copy
    c, s = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    return torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)


class Rotary(nn.Module):
    """RoPE's cos, sin tables, built for ``seq_len`` positions."""

    def __init__(self, head_dim: int, seq_len: int):
        super().__init__()
        self.head_dim = head_dim
        cos, sin = rope_tables(seq_len, head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        if T > self.cos.shape[0]:  # longer than built for: extend the tables once
            self.cos, self.sin = rope_tables(T, self.head_dim, device=self.cos.device)
        return self.cos[:T], self.sin[:T]


class Embedding(nn.Module):
    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight  # (E, V, d)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids shared by all members -> (E, B, T, d)."""
        E, V, d = self.weight.shape
        # All members in one lookup: member e's rows sit at e*V .. e*V+V-1 of the flat table.
        flat_idx = idx[None] + (torch.arange(E, device=idx.device) * V)[:, None, None]
        return F.embedding(flat_idx, self.weight.reshape(E * V, d))


class Attention(nn.Module):
    """Causal self-attention: RoPE on q and k, a per-member logit scale, SDPA."""

    def __init__(self, wq, wk, wv, wo, head_dim: int):
        super().__init__()
        self.qkv = Linear(wq, wk, wv)  # one fused (3d x d) matmul
        self.out = Linear(wo)
        self.head_dim = head_dim

    def forward(self, x: torch.Tensor, rope: tuple, scale: torch.Tensor) -> torch.Tensor:
        """x (E, B, T, d), rope = (cos, sin) each (T, hd/2), scale (E,) -> (E, B, T, d)."""
        d = x.shape[-1]
        qk, v = self.qkv(x).split((2 * d, d), dim=-1)                             # (E, B, T, 2d), (E, B, T, d)
        qk = apply_rope(rearrange(qk, "e b t (h k) -> e b t h k", k=self.head_dim), *rope)  # (E, B, T, 2H, hd)
        q, k = qk.chunk(2, dim=-2)                                                 # (E, B, T, H, hd) each
        q = q * scale.view(-1, 1, 1, 1, 1).to(q.dtype)
        q = rearrange(q, "e b t h k -> (e b) h t k")                               # (E*B, H, T, hd)
        k = rearrange(k, "e b t h k -> (e b) h t k")                               # (E*B, H, T, hd)
        v = rearrange(v, "e b t (h k) -> (e b) h t k", k=self.head_dim)            # (E*B, H, T, hd)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)    # the scale is already in q
        return self.out(rearrange(a, "(e b) h t k -> e b t (h k)", e=x.shape[0]))  # (E, B, T, d)


class SwiGLU(nn.Module):
    def __init__(self, w1, w3, w2):
        super().__init__()
        self.gate_up = Linear(w1, w3)  # one fused (2f x d) matmul
        self.down = Linear(w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (E, B, T, f) each
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, add, cfg: TransformerConfig):
        """``add(name, shape, cls, ...)`` creates a weight on the model under this layer's public name."""
        super().__init__()
        d, f = cfg.width, cfg.hidden
        self.norm1 = RMSNorm(add("norm1", (d,), "vector", fill=1.0))
        self.attn = Attention(*(add(n, (d, d), "matrix") for n in ("wq", "wk", "wv", "wo")), cfg.head_dim)
        self.norm2 = RMSNorm(add("norm2", (d,), "vector", fill=1.0))
        self.mlp = SwiGLU(add("w1", (f, d), "matrix"), add("w3", (f, d), "matrix"), add("w2", (d, f), "matrix"))

    def forward(self, h: torch.Tensor, rope: tuple, scale: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.norm1(h), rope, scale)
        return h + self.mlp(self.norm2(h))


class Transformer(EnsembleModule):
    def __init__(self, n_members: int, cfg: TransformerConfig):
        super().__init__(n_members, cfg.width)
        self.cfg = cfg
        d, V = cfg.width, cfg.vocab
        self.embed = Embedding(self.add("emb", (V, d), "embedding", fan_in=1))  # a lookup: one input per output
        self.blocks = nn.ModuleList(Block(self._layer(i), cfg) for i in range(cfg.depth))
        self.final_norm = RMSNorm(self.add("norm_out", (d,), "vector", fill=1.0))
        self.head = Linear(self.add("readout", (V, d), "readout"))
        self.rope = Rotary(cfg.head_dim, cfg.seq_len)
        # per member, set from its Resolved by init_member
        self.register_buffer("attn_scale", torch.full((n_members,), 1.0 / math.sqrt(cfg.head_dim)))

    def _layer(self, i: int):
        return lambda name, *a, **k: self.add(f"l{i}_{name}", *a, **k)

    def init_member(self, i: int, seed: int, res) -> None:
        super().init_member(i, seed, res)
        self.attn_scale[i] = res.attn_scale(self.cfg.head_dim)

    def probes(self) -> dict[str, nn.Module]:
        """Besides the matrices: the embedding's output (``emb``), the residual stream after each block, logits."""
        return {"emb": self.embed, **{f"l{i}_block": b for i, b in enumerate(self.blocks)}, **super().probes()}

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids shared by all members -> logits (E, B, T, vocab)."""
        h = self.embed(idx)
        rope = self.rope(idx.shape[1])
        for block in self.blocks:
            h = block(h, rope, self.attn_scale)
        z = self.head(self.final_norm(h))
        return z * self.readout_mult.view(-1, 1, 1, 1).to(z.dtype)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """batch (B, T+1) token windows -> (E,) mean next-byte cross-entropy (nats) per member."""
        logits = self(batch[:, :-1])
        E = logits.shape[0]
        tgt = batch[:, 1:].reshape(1, -1).expand(E, -1).reshape(-1)
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt, reduction="none")
        return ce.view(E, -1).mean(1)


# ------------------------------------------------------------------------------------------------
# Hooks used by train.py: build, preflight, flops_per_step
# ------------------------------------------------------------------------------------------------
def _dims(cfg):
    return (cfg.depth or DEFAULT_DEPTH), (cfg.batch_size or DEFAULT_BATCH)


def build(cfg, n_members: int, device):
    depth, batch = _dims(cfg)
    model = Transformer(n_members, TransformerConfig(cfg.width, depth, cfg.head_dim, cfg.seq_len))
    data = TextData(cfg.corpus, cfg.seq_len, batch, cfg.data_seed, device, train_bytes=cfg.train_bytes)
    return model.to(device), data


def n_params(cfg) -> dict:
    """Per-member parameter counts: matmul weights (readout included, embedding not) and total."""
    depth, _ = _dims(cfg)
    d, f, V = cfg.width, mlp_hidden(cfg.width), VOCAB
    per_layer = 4 * d * d + 3 * d * f
    matmul = depth * per_layer + V * d
    return {"matmul": matmul, "total": matmul + V * d + depth * 2 * d + d}


def flops_per_step(cfg, n_members: int = 1) -> float:
    """Forward + backward FLOPs of one training step of the whole ensemble.

        6 * N_matmul * tokens  +  12 * depth * T * d * tokens,   tokens = batch * T * n_members

    6 N per token: 2 (multiply-add) x 3 (forward, grad wrt input, grad wrt weight) for every matmul weight
    (readout included, embedding lookup excluded).  12 L T d per token: QK^T and AV, 2 * 2 T d each in the
    forward, x3 with the backward, counted over the full T x T square as in nanoGPT / PaLM (a causal kernel
    may skip the upper half, so this slightly overstates the work).  Norms, RoPE, softmax and the optimizer
    are not counted: this is model FLOPs, the numerator of MFU."""
    depth, batch = _dims(cfg)
    tokens = batch * cfg.seq_len * n_members
    return float(6 * n_params(cfg)["matmul"] * tokens + 12 * depth * cfg.seq_len * cfg.width * tokens)


def memory_estimate(cfg, n_members: int) -> int:
    """Bytes for an ensemble: fp32 params + grads + two Adam moments, plus the activations kept for backward.

    Activations per token, per layer: ~14 d (residual, norms, q k v, rotated q k, attention out, wo out and
    the backward's temporaries) + 6 f (gate, up, SiLU, product, their grads); plus logits, their float copy,
    softmax and grad (4 V) and a few d at the ends.  Calibrated on CPU (d=128, 8 members: estimate within
    ~10% of the measured peak RSS); enough to refuse a run that cannot fit."""
    depth, batch = _dims(cfg)
    d, f = cfg.width, mlp_hidden(cfg.width)
    state = 4 * n_params(cfg)["total"] * 4
    act = batch * cfg.seq_len * (depth * (14 * d + 6 * f) + 4 * VOCAB + 4 * d) * 4
    return n_members * (state + act)


def available_memory(device) -> int:
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def preflight(configs, device="cpu") -> None:
    """Fail fast, one line: width vs head_dim, corpus readable and long enough, ensemble fits in memory."""
    from .config import check_fits, pick_device

    dev = pick_device(device)
    for c in configs:
        if c.head_dim <= 0 or c.head_dim % 2:
            raise ValueError(f"head_dim must be a positive even integer, got {c.head_dim}")
        if c.width % c.head_dim:
            raise ValueError(f"width {c.width} is not a multiple of head_dim {c.head_dim} "
                             f"(heads = width / head_dim)")
        if c.seq_len <= 0:
            raise ValueError(f"seq_len must be > 0, got {c.seq_len}")
    for c in {(c.corpus, c.seq_len, _dims(c)[1]): c for c in configs}.values():
        check_corpus(c.corpus, c.seq_len, _dims(c)[1])
    check_fits(configs, memory_estimate, available_memory(dev), dev.type, lambda c: f"transformer width {c.width}",
               "use fewer widths/members, a smaller batch or seq_len")

