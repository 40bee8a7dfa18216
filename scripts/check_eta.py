"""ETA vs measured: predict a small study's wall time with wdscale.training.cost, then train it and time it.

    python scripts/check_eta.py synthetic      # widths 32,64,128 (base 32), mup+wd, 5 lrs, 300 steps
    python scripts/check_eta.py transformer    # widths 32,64 (base 32), mup, 2 lrs, 40 steps

Prints the calibration (cached per machine and thread count), the predicted and the measured seconds and
their ratio; docs/app.md quotes the numbers.
"""
import sys
import tempfile
import time

import torch

from wdscale.training import cost
from wdscale.training.store import RunStore
from wdscale.training.sweep import expand_grid, run_sweep

GRIDS = {
    "synthetic": dict(widths=[32, 64, 128], base_width=32, rules=["mup", "wd"],
                      lrs=[0.005, 0.00707, 0.01, 0.01414, 0.02], wds=[3.0], steps=300),
    "transformer": dict(widths=[32, 64], base_width=32, rules=["mup"], lrs=[0.003, 0.01], wds=[0.1], steps=40),
}


def main(model: str) -> int:
    g = GRIDS[model]
    configs = expand_grid(model, g["widths"], g["base_width"], g["rules"], g["lrs"], g["wds"], g["steps"], [0])
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    cal = cost.calibrate(model, threads=threads)
    print(f"calibration ({model}, {threads} threads): a = {cal['a_s'] * 1e3:.2f} ms/step, "
          f"b = {cal['b_s_per_flop'] * 1e12:.2f} ms/GFLOP ... ({time.perf_counter() - t0:.1f} s, cached)")
    eta = cost.study_eta(configs, threads=threads)
    print(f"{model}: {len(configs)} runs, predicted {eta['seconds']:.1f} s "
          f"({', '.join(f'd={w}: {s:.1f}' for w, s in eta['per_width'].items())})")
    store = RunStore(tempfile.mkdtemp(prefix="wdscale-eta-"))
    t0 = time.perf_counter()
    run_sweep(configs, store)
    wall = time.perf_counter() - t0
    print(f"{model}: measured {wall:.1f} s; predicted / measured = {eta['seconds'] / wall:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "synthetic"))
