"""Design search for the Transformer regime studies (docs/transformer.md keeps the table this writes).

Each design is a preset's phase 1: the proxy's eta x lam grid at d0 (``wdscale.science.study.proxy_configs``), trained into a
store with ``run_sweep`` (cached: the studies that follow reuse these runs).  Printed per design: the loss grid, the
proxy's optimum (eta0, lam0), whether it is interior in eta and in lam, and S = sum_t eta_t lam at the optimum.

    python scripts/explore_transformer.py --out runs/tf --designs lm,fresh-constant,lm-epochs
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wdscale.models import presets  # noqa: E402
from wdscale.science.study import proxy_configs, proxy_optimum  # noqa: E402
from wdscale.training.store import RunStore  # noqa: E402
from wdscale.training.sweep import run_sweep  # noqa: E402
from wdscale.training.train import TrainOptions  # noqa: E402
from wdscale.science.verdict import record_taus  # noqa: E402


def design(name: str) -> dict:
    if name == "fresh-constant":  # the control: fresh data at a constant lr gives weight decay no job
        d = dict(presets.get("lm"))
        d["common"] = dict(d["common"], schedule="constant", warmup=0.0)
        d["regime"] = "fresh data (one pass), constant lr"
        return d
    return presets.get(name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/tf")
    ap.add_argument("--designs", default="lm,fresh-constant,lm-epochs")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    store = RunStore(args.out)
    rows = []
    for name in args.designs.split(","):
        spec = design(name)
        t0 = time.time()
        recs = run_sweep(proxy_configs(args.steps, spec), store, TrainOptions())
        best = proxy_optimum(recs)
        at = [r for r in recs if r["lr"] == best["eta0"] and r["wd"] == best["lam0"]]
        row = {"design": name, "regime": spec["regime"], "steps": recs[0]["steps"], **spec["common"],
               "eta0": best["eta0"], "lam0": best["lam0"], "loss": best["loss"],
               "eta_interior": best["eta_interior"], "lam_interior": best["lam_interior"],
               "S_at_optimum": record_taus(at[0]) if at else None, "epochs": presets.epochs(spec, recs[0]["steps"]),
               "lrs": best["lrs"], "wds": best["wds"], "grid": best["grid"], "seconds": time.time() - t0}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
