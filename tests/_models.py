"""Tiny model files for the crash tests (tests/test_child.py, tests/test_app.py): written into a test's folder."""

# A model file whose loss does something bad once the hidden width is 64; width 32 trains normally (and preflight,
# which only calls the loss at the base width, never sees it).
MODEL = '''import os
import time

import torch


def build(width):
    return torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                               torch.nn.Tanh(), torch.nn.Linear(width, 2))


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randn(8, 4, generator=g)


def val_batches():
    return [torch.ones(8, 4)]


def loss(model, batch):
    time.sleep(PACE)
    if model[2].weight.shape[-1] >= 64:
        CRASH
    return model(batch).pow(2).mean()
'''
CRASHES = {
    "raises": "raise RuntimeError('the model file broke at width 64')",
    "exits": "os._exit(3)",
    "oom": "torch.empty(2 ** 31, dtype=torch.float64).fill_(1.0)  # 16 GiB",
    "slow": "time.sleep(0.2)",  # killed from outside while it trains
}


def model_file(folder, crash: str, pace: float = 0.0) -> str:
    path = folder / f"{crash}.py"
    path.write_text(MODEL.replace("CRASH", CRASHES[crash]).replace("PACE", repr(pace)))
    return str(path)
