"""A minimal GPT in the style of nanoGPT's model.py, as a wdscale model file (tensor batches, its own loss).

Pre-LayerNorm blocks, fused qkv (c_attn: d -> 3d), MLP 4d with GELU, learned positions, and nanoGPT's weight tying
(lm_head shares wte's weight).  Byte-level, seq_len 64, batch 8, head dim 16.  Nothing here knows about mu-P:
wdscale classes the weights from their shapes, re-draws them, sets each class's lr and weight decay, and scales the
logits by 1/m through a forward hook on lm_head.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from wdscale.models.data import TextData

SEQ_LEN, BATCH, HEAD_DIM, DEPTH, VOCAB = 64, 8, 16, 2, 256


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.n_head = d // HEAD_DIM
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, HEAD_DIM).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hd)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HEAD_DIM)  # (B, nh, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, d)
        self.wpe = nn.Embedding(SEQ_LEN, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(DEPTH))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight  # nanoGPT's tie

    def forward(self, idx):  # idx (B, T) -> logits (B, T, VOCAB)
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for b in self.blocks:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def build(width: int) -> nn.Module:
    return GPT(width)


def loss(model, batch):  # batch (B, SEQ_LEN + 1) byte windows: predict each next byte
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))


def batches(seed: int):
    return iter(TextData("stdlib", SEQ_LEN, BATCH, data_seed=seed))


def val_batches() -> list:
    return TextData("stdlib", SEQ_LEN, BATCH, data_seed=0).val
