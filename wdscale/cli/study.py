"""``wdscale demo`` and ``wdscale study``: a preset transfer study through the study engine (science.study)."""
from __future__ import annotations

import json

from ..science.study import format_summary, own_spec, proxy_configs, run_study, transfer_configs
from ..training.train import TrainOptions
from .progress import progress_bar


# -- CLI plugin: ``wdscale demo`` -----------------------------------------------------------------------------
def configure(p) -> None:
    from ..models.presets import PRESETS

    p.description = ("A preset transfer study (default for `demo`: the Home page's synthetic demo, headless): the "
                     "proxy's eta x lam optimum at d0, then a steady-state "
                     "transfer study (mup, wd, indep, and the fitted rule) at 3 widths, into the store (cached like "
                     "every sweep).  --preset lm / lm-epochs runs the Transformer study of each regime.")
    p.add_argument("--preset", default="lm" if p.prog.split()[-1] == "study" else "synthetic", choices=list(PRESETS),
                   help="synthetic (the demo, ~1 min), lm (one-pass LM regime; 1 seed took 29 min on one thread of "
                        "a 2-core CPU), lm-epochs (the same model on 100 kB revisited ~10 epochs; 9 lrs per width)")
    p.add_argument("--seeds", default=None, help="comma list of init seeds (default: the preset's)")
    p.add_argument("--out", default=None, help="data dir (default $WDSCALE_DATA or ./runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast, fp32 master weights (for a GPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (CUDA graphs on CUDA); the first run per shape compiles")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    from ..models.own import add_own_args

    g = p.add_argument_group("your own model (docs/own-model.md): the preset's design on a model file")
    g.add_argument("--model", default=None, metavar="FILE.py",
                   help="a model file defining build(width), batches(seed), val_batches() [, loss(model, batch)]; "
                        "the study runs the preset's design (schedule, steps, grids, widths) on it")
    g.add_argument("--widths", default=None, help="comma list of widths (default: the preset's; the smallest is d0)")
    g.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's)")
    g.add_argument("--proxy-lrs", default=None, help="comma list: the proxy grid's lrs eta0 (default: the preset's)")
    g.add_argument("--proxy-wds", default=None,
                   help="comma list: the proxy grid's torch weight_decay lam0 (default: the preset's)")
    add_own_args(g)


def run(args) -> int:
    import os

    import torch

    from ..training.store import RunStore, _clean

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    spec = spec_from_args(args)
    store = RunStore(args.out)
    bar = progress_bar()  # stderr: the JSON on stdout stays clean
    try:
        s = run_study(store, TrainOptions(device=args.device, amp=args.amp, compile=args.compile,
                                         members=getattr(args, "members", "auto")), on_event=bar, spec=spec)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(_clean(s)))
    else:
        print(format_summary(s))
    return 0


def spec_from_args(args) -> dict:
    """The preset's spec with the command's --seeds and model-file options (``study.own_spec``); for a model file,
    the pre-flight checks run and the classes table is printed before anything trains.  Shared by ``demo``,
    ``study`` and ``scan``."""
    from ..models.config import parse_numbers
    from ..models.presets import get

    spec = dict(get(args.preset))
    if args.seeds is not None:
        seeds = parse_numbers(args.seeds, int)
        if not seeds or any(x < 0 for x in seeds):
            raise ValueError(f"--seeds must be a comma list of integers >= 0, got {args.seeds!r}")
        spec["seeds"] = tuple(seeds)
    spec = own_spec(spec, args)
    if getattr(args, "model", None):
        from ..training.train import preflight

        configs = proxy_configs(None, spec)
        preflight(configs, args.device)
        from ..models.own import print_classes

        print_classes(transfer_configs(configs[0].lr, configs[0].wd, None, spec, widths=[max(spec["widths"])],
                                       rules=[spec["rules"][0]]))
    return spec
