"""``wdscale scan``: which lam ~ d^q lets the proxy's eta0 transfer (science.scan_run.run_scan), and the recipe at a
target width."""
from __future__ import annotations

import json
import os

from ..science.scan import QS
from ..science.scan_run import check_qs, check_target_width, format_run, run_rows, run_scan
from .progress import progress_bar


def configure(p) -> None:
    from . import study

    study.configure(p)  # --preset, --seeds, --out, --json, --device, --amp, --compile, --threads, --model FILE.py ...
    p.description = (
        "The lam-exponent scan: lam = lam0 (d/d0)^q under mu-P's eta ~ 1/d on a q grid (q = 0, 0.5, 1 are mup, wd "
        "and indep: the named rules' own runs, never trained twice), at the proxy's own (eta0, lam0). Reports where "
        "the drift of the optimal eta0 crosses zero (q_drift*) and where sigma_top's width exponent does (q_sigma*), "
        "each with a bootstrap CI over seeds; whether matching sigma_top predicts the lam that transfers; how four "
        "predictors computed from the cheapest runs did; and with --target-width the (eta, lam) to use there. "
        "Runs go into the store (cached like every sweep). docs/scan.md.")
    for a in p._actions:  # the study's --preset help speaks of the study's cost
        if a.dest == "preset":
            a.help = ("the design the scan runs on: synthetic (the demo's: 3 widths, 2 seeds, 7 lrs), lm (the one-pass "
                      "LM regime) or lm-epochs (the multi-epoch control); a Transformer scan takes hours on a CPU")
    p.add_argument("--q", default=None, metavar="Q[,Q...]",
                   help=f"comma list of lam exponents q >= 0 (default {','.join(f'{q:g}' for q in QS)}); widen it "
                        "where a crossing sits at the grid's edge")
    p.add_argument("--target-width", type=int, default=None, metavar="D",
                   help="print the recipe at width D: eta = eta0 d0/D, lam = lam0 (D/d0)^q_drift* with the band "
                        "q_drift*'s CI gives (past the widths measured it extrapolates, and says so)")


def run(args) -> int:
    from .study import spec_from_args
    from ..training.store import RunStore, _clean
    from ..training.train import TrainOptions

    qs = QS if args.q is None else check_qs(_numbers(args.q, "--q"))
    target = check_target_width(args.target_width)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    spec = spec_from_args(args)
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    store = RunStore(args.out)
    bar = progress_bar()  # stderr: the JSON on stdout stays clean
    try:
        res = run_scan(store, spec, qs=qs, target_width=target, on_event=bar,
                       opts=TrainOptions(device=args.device, amp=args.amp, compile=args.compile,
                                         members=getattr(args, "members", "auto")))
    finally:
        bar.close()
    if args.json:
        out = {"runs": run_rows(res["runs"]), "scan": res["scan"], "proxy": res["proxy"],
               "predictors": res["predictors"], "preset": spec.get("name"), "seconds": res["seconds"],
               "n_trained": res["n_trained"], "n_proxy": res["n_proxy"], "n_twins": res["n_twins"]}
        print(json.dumps(_clean(out)))
    else:
        print(format_run(res))
    return 0


def _numbers(text: str, flag: str) -> list[float]:
    from ..models.config import parse_numbers

    try:
        vals = parse_numbers(text, float)
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None
    if not vals:
        raise ValueError(f"{flag} must be a comma list of numbers, got {text!r}")
    return vals
