"""A LLaMA-style decoder-only Transformer, ensemble-batched: E independent models in the same matmuls.

    idx --emb--> h --[ h += Attn(RMSNorm(h)); h += SwiGLU(RMSNorm(h)) ] * depth --RMSNorm--> readout * mult

* byte tokens (vocab 256), untied embedding (class ``embedding``) and readout (class ``readout``);
* pre-norm RMSNorm with gains (class ``vector``), no biases anywhere;
* causal self-attention with RoPE, fixed head dim (``cfg.head_dim``, so heads = d / head_dim), SDPA kernel;
* SwiGLU MLP, hidden = 8/3 d rounded up to a multiple of 8;
* mu-P: the logits are multiplied by ``readout_mult`` (1/m under mu-P rules, 1 under SP), a per-member buffer
  set from the member's rule, so SP and mu-P members can share one ensemble;
* attention logits are scaled by ``attn_scale`` = 1/sqrt(head_dim) under *every* rule.  mu-P's 1/head_dim
  differs from SP's 1/sqrt(head_dim) only in how it scales as head_dim grows with width; here head_dim is fixed
  at every width, so mu-P asks for a width-independent scale, and the one that equals SP's at the base width is
  1/sqrt(head_dim).  At m = 1 an ``sp`` and a ``mup`` member with the same seed are then the same model
  (tests/test_transformer.py), so SP-vs-mu-P comparisons are not confounded by the attention temperature.

Every weight has a leading member dim E.  q, k, v (and w1, w3) are separate parameters, so each gets its own
spectrum, but they are concatenated for one fused matmul in the forward pass (the copy costs O(d^2), the
matmul O(tokens d^2)).  Init (``EnsembleModule.init_std``): hidden matrices and the readout N(0, 1/fan_in) with
fan_in = d at the member's own width, embedding N(0, 1) (the residual stream starts at RMS 1 at every width),
gains 1.  The readout is therefore *not* microsoft/mup's MuReadout init (which keeps the base width's variance,
1/d0, or zero-inits); see ``wdscale/rules.py`` for what it is and what that changes.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from .data import VOCAB, TextData, check_corpus
from .ensemble import EnsembleModule, elinear, rms_norm

DEFAULT_DEPTH = 4
DEFAULT_BATCH = 16
ROPE_BASE = 10_000.0


def mlp_hidden(d: int) -> int:
    return 8 * math.ceil(8 * d / 3 / 8)


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


class Transformer(EnsembleModule):
    def __init__(self, n_members: int, width: int, depth: int = DEFAULT_DEPTH, head_dim: int = 32,
                 seq_len: int = 128, vocab: int = VOCAB):
        super().__init__(n_members, width)
        if width % head_dim:
            raise ValueError(f"width {width} is not a multiple of head_dim {head_dim}")
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
        d, f = width, mlp_hidden(width)
        self.depth, self.head_dim, self.n_heads, self.hidden, self.vocab = depth, head_dim, d // head_dim, f, vocab
        self.add("emb", (vocab, d), "embedding")
        for i in range(depth):
            self.add(f"l{i}_norm1", (d,), "vector", fill=1.0)
            for n in ("wq", "wk", "wv", "wo"):
                self.add(f"l{i}_{n}", (d, d), "matrix")
            self.add(f"l{i}_norm2", (d,), "vector", fill=1.0)
            self.add(f"l{i}_w1", (f, d), "matrix")  # gate (through SiLU)
            self.add(f"l{i}_w3", (f, d), "matrix")  # up
            self.add(f"l{i}_w2", (d, f), "matrix")  # down
        self.add("norm_out", (d,), "vector", fill=1.0)
        self.add("readout", (vocab, d), "readout")
        # One attention scale for every rule and member: head_dim does not grow with width (module docstring).
        self.register_buffer("attn_scale", torch.full((n_members,), 1.0 / math.sqrt(head_dim)))
        cos, sin = rope_tables(seq_len, head_dim)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def _rope(self, T: int, device, dtype):
        if T > self.rope_cos.shape[0]:  # longer than built for: extend the tables once
            cos, sin = rope_tables(T, self.head_dim, device=device)
            self.rope_cos, self.rope_sin = cos, sin
        return self.rope_cos[:T], self.rope_sin[:T]

    def forward(self, idx: torch.Tensor, capture: dict | None = None) -> torch.Tensor:
        """idx (B, T) token ids shared by all members -> logits (E, B, T, vocab).

        ``capture``, when given, receives name -> (input, output) for every matrix (``emb``: token ids and
        embeddings; ``readout``: normed features and W x before the readout multiplier), plus the residual
        stream around each block (``l{i}_block``) and the final ``logits``."""
        E, (B, T) = self.E, idx.shape
        d, H, hd, f = self.width, self.n_heads, self.head_dim, self.hidden
        # Embedding lookup for all members at once: member e's rows live at e*V .. e*V+V-1 of the flat table.
        flat_idx = idx[None] + (torch.arange(E, device=idx.device) * self.vocab)[:, None, None]
        h = F.embedding(flat_idx, self.emb.reshape(E * self.vocab, d))  # (E, B, T, d)
        if capture is not None:
            capture["emb"] = (idx, h)
        cos, sin = self._rope(T, h.device, h.dtype)
        scale = self.attn_scale.view(E, 1, 1, 1, 1)
        for i in range(self.depth):
            p = lambda n: getattr(self, f"l{i}_{n}")  # noqa: E731
            h_in = h
            # --- attention: one fused (3d x d) matmul for q, k, v ---
            x = rms_norm(h, p("norm1"))
            qkv = elinear(x, torch.cat((p("wq"), p("wk"), p("wv")), dim=1))  # (E, B, T, 3d)
            qk, v = qkv.split((2 * d, d), dim=-1)
            q, k = apply_rope(qk.reshape(E, B, T, 2 * H, hd), cos, sin).split(H, dim=-2)  # RoPE on q, k at once
            q = (q * scale.to(q.dtype)).reshape(E * B, T, H, hd).transpose(1, 2)
            k = k.reshape(E * B, T, H, hd).transpose(1, 2)
            v = v.reshape(E * B, T, H, hd).transpose(1, 2)
            # the per-member scale is already in q, so SDPA's own scale is 1
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
            a = a.transpose(1, 2).reshape(E, B, T, d)
            o = elinear(a, p("wo"))
            if capture is not None:
                for n, y in zip(("wq", "wk", "wv"), qkv.split(d, dim=-1)):
                    capture[f"l{i}_{n}"] = (x, y)
                capture[f"l{i}_wo"] = (a, o)
            h = h + o
            # --- SwiGLU MLP: one fused (2f x d) matmul for gate and up ---
            x = rms_norm(h, p("norm2"))
            gate, up = elinear(x, torch.cat((p("w1"), p("w3")), dim=1)).split(f, dim=-1)
            u = F.silu(gate) * up
            o = elinear(u, p("w2"))
            if capture is not None:
                capture[f"l{i}_w1"] = (x, gate)
                capture[f"l{i}_w3"] = (x, up)
                capture[f"l{i}_w2"] = (u, o)
                capture[f"l{i}_block"] = (h_in, h + o)
            h = h + o
        x = rms_norm(h, self.norm_out)
        z = elinear(x, self.readout)
        logits = z * self.readout_mult.view(E, 1, 1, 1).to(z.dtype)
        if capture is not None:
            capture["readout"] = (x, z)
            capture["logits"] = (x, logits)
        return logits

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
    model = Transformer(n_members, cfg.width, depth=depth, head_dim=cfg.head_dim, seq_len=cfg.seq_len)
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

