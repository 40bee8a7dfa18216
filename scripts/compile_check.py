"""Does torch.compile pay for itself on this machine?  The Transformer step at the LM preset's sizes, eager vs
compiled, cold (an empty inductor cache: what a first-time user waits) and warm (the cache on disk hit).

    python scripts/compile_check.py [--steps 30] [--shapes 32x32,64x18,128x24] [--json FILE]

Each measurement runs in a fresh Python process (no in-memory compile cache), with ``WDSCALE_CACHE`` pointed at a
scratch folder: empty for "cold", the one the cold run filled for "warm".  Reported per width x members: the
median step (after the first 3) and the first step's extra wall time over eager's (the compile), in wall time and
in CPU time (this process and the C compilers it ran) (the two agree on an idle core; on a shared one the CPU time is the fair figure; a
parallel compile in worker processes would not show in it, and the rows say how many torch threads ran).  The torch
threads are whatever the process has (docs/gpu/gpu_check.md says how its figures were taken).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, statistics, sys, time
import torch
from wdscale.models import presets
from wdscale.models.config import RunConfig
from wdscale.training.train import TrainOptions, train_ensemble
width, n, steps, compile_ = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
spec = presets.get("lm")
cs = [RunConfig(model="transformer", width=width, base_width=spec["base_width"], rule="mup", lr=4e-3 * (1 + i / n),
                wd=0.1, steps=steps, seed=i, data_seed=0, **spec["common"]) for i in range(n)]
def cpu_s():  # this process and the compilers it ran (inductor calls the C compiler in child processes)
    u = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(x.ru_utime + x.ru_stime for x in u)
stamps, cpu = [], []
t0, c0 = time.perf_counter(), cpu_s()
def clock(*a):
    stamps.append(time.perf_counter())
    cpu.append(cpu_s())
r = train_ensemble(cs, TrainOptions(n_evals=1, spectra_every=10 ** 9, compile=compile_, callbacks=[clock]))
gaps = [b - a for a, b in zip(stamps, stamps[1:])][3:]
cgaps = [b - a for a, b in zip(cpu, cpu[1:])][3:]
print(json.dumps({"first_step_s": stamps[0] - t0, "step_s": statistics.median(gaps), "threads": torch.get_num_threads(),
                  "first_step_cpu_s": cpu[0] - c0, "step_cpu_s": statistics.median(cgaps),
                  "loss": [x["train_loss"][-1] for x in r]}))
"""


def child(width: int, n: int, steps: int, compile_: bool, cache: str) -> dict:
    env = {**os.environ, "WDSCALE_CACHE": cache, "PYTHONPATH": str(ROOT)}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)  # the trainer puts it under WDSCALE_CACHE
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, str(width), str(n), str(steps), "1" if compile_ else "0"],
                       env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--shapes", default="32x32,64x18,128x24", help="width x members, comma list")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    rows = []
    for shape in args.shapes.split(","):
        width, n = (int(x) for x in shape.split("x"))
        with tempfile.TemporaryDirectory(prefix="wdscale-compile-") as cache:
            eager = child(width, n, args.steps, False, cache)
            cold = child(width, n, args.steps, True, cache)
            warm = child(width, n, args.steps, True, cache)
        row = {"width": width, "members": n, "threads": eager["threads"], "eager_step_s": eager["step_s"],
               "compiled_step_s": warm["step_s"], "cold_compile_s": cold["first_step_s"] - eager["first_step_s"],
               "warm_compile_s": warm["first_step_s"] - eager["first_step_s"],
               # CPU time of this process: what the figures are when the core is shared with other work
               "eager_step_cpu_s": eager["step_cpu_s"], "compiled_step_cpu_s": warm["step_cpu_s"],
               "cold_compile_cpu_s": cold["first_step_cpu_s"] - eager["first_step_cpu_s"],
               "warm_compile_cpu_s": warm["first_step_cpu_s"] - eager["first_step_cpu_s"],
               "max_loss_rel_diff": max(abs(a - b) / abs(a) for a, b in zip(eager["loss"], warm["loss"]))}
        row["speedup"] = row["eager_step_s"] / row["compiled_step_s"]
        saved = row["eager_step_s"] - row["compiled_step_s"]
        row["break_even_steps_cold"] = row["cold_compile_s"] / saved if saved > 0 else float("inf")
        row["break_even_steps_warm"] = row["warm_compile_s"] / saved if saved > 0 else float("inf")
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
