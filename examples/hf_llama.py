"""A Hugging Face LlamaForCausalLM as a wdscale model file: `wdscale study --model examples/hf_llama.py`.

The lm preset's design on Hugging Face's own Llama: byte-level (vocab 256), depth 2, a fixed head dim of 16
(heads = width / 16), an MLP of about 8/3 d (rounded to a multiple of 8), untied embedding and readout, no dropout.
Data: random windows of wdscale's built-in byte corpus (the Python stdlib), seq_len 64, batch 8.
"""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from wdscale.models.data import TextData

SEQ_LEN, BATCH, HEAD_DIM, DEPTH = 64, 8, 16, 2


def build(width: int) -> torch.nn.Module:
    cfg = LlamaConfig(vocab_size=256, hidden_size=width, intermediate_size=8 * round(width * 8 / 3 / 8),
                      num_hidden_layers=DEPTH, num_attention_heads=width // HEAD_DIM,
                      num_key_value_heads=width // HEAD_DIM, head_dim=HEAD_DIM, max_position_embeddings=SEQ_LEN + 1,
                      tie_word_embeddings=False, attention_dropout=0.0, rms_norm_eps=1e-6,
                      attn_implementation="eager")
    return LlamaForCausalLM(cfg)


def _windows(data_seed: int) -> TextData:
    return TextData("stdlib", SEQ_LEN, BATCH, data_seed=data_seed)


def batches(seed: int):
    # the model shifts labels itself: windows of SEQ_LEN + 1 bytes give SEQ_LEN next-byte predictions
    for w in _windows(seed):
        yield {"input_ids": w, "labels": w}


def val_batches() -> list:
    return [{"input_ids": w, "labels": w} for w in _windows(0).val]
