"""A Hugging Face GPT2LMHeadModel as a wdscale model file: Conv1D layers and a tied embedding / readout.

Byte-level (vocab 256), depth 2, head dim 16 (heads = width / 16), MLP 4d, no dropout.  The readout shares the
token embedding's weight: wdscale classes the weight once (its first holder, the embedding) and puts mu-P's 1/m
logit multiplier on the readout's use only (a forward hook on ``lm_head``), so the lookup is never scaled.
"""
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from wdscale.models.data import TextData

SEQ_LEN, BATCH, HEAD_DIM, DEPTH = 64, 8, 16, 2


def build(width: int) -> torch.nn.Module:
    cfg = GPT2Config(vocab_size=256, n_embd=width, n_layer=DEPTH, n_head=width // HEAD_DIM, n_positions=SEQ_LEN + 1,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                     attn_implementation="eager")
    return GPT2LMHeadModel(cfg)


def _windows(data_seed: int) -> TextData:
    return TextData("stdlib", SEQ_LEN, BATCH, data_seed=data_seed)


def batches(seed: int):
    for w in _windows(seed):
        yield {"input_ids": w, "labels": w}


def val_batches() -> list:
    return [{"input_ids": w, "labels": w} for w in _windows(0).val]
