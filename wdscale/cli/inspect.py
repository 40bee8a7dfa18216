"""``wdscale inspect``: σ_top of your own checkpoints, matched by name across widths (science.inspect)."""
from __future__ import annotations

import re

from ..core.rules import CLASSES, RULES
from ..science.inspect import format_report, inspect, to_json
from . import _finite, _num_list


def _override(s: str):
    import argparse

    if "=" not in s:
        raise argparse.ArgumentTypeError(f"{s!r}: expected REGEX=CLASS")
    pat, cls = s.rsplit("=", 1)
    if cls not in CLASSES:
        raise argparse.ArgumentTypeError(f"unknown class {cls!r}; choose from {', '.join(CLASSES)}")
    try:
        re.compile(pat)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"bad regex {pat!r}: {e}")
    return pat, cls


def configure(p) -> None:
    p.description = ("σ_top, ‖W‖_F and stable rank of every matrix in your checkpoints (safetensors or a torch "
                     "state dict, loaded with weights_only=True); given several widths, the σ_top ratio per "
                     "matrix, the fitted width exponent α and the λ exponent that would hold σ_top flat.")
    p.add_argument("ckpts", nargs="+", metavar="CKPT", help="checkpoint files (or folders of shards)")
    p.add_argument("--base", default=None, metavar="CKPT", help="the proxy (default: the narrowest)")
    p.add_argument("--widths", type=_num_list(int), default=None, help="width per CKPT, in order, --base first if it is not a CKPT (default: inferred)")
    p.add_argument("--rule", default="mup", choices=list(RULES),
                   help="how the checkpoints' widths were trained (for the λ exponent; default mup: η ∝ 1/d, "
                        "λ fixed)")
    p.add_argument("-a", type=_finite, default=None, help="custom rule: matrix lr ~ m^-a")
    p.add_argument("-b", type=_finite, default=None, help="custom rule: matrix wd ~ m^b")
    p.add_argument("--tol", type=_finite, default=0.10, help="relative σ_top change still counted as matched")
    p.add_argument("--override", type=_override, action="append", default=[], metavar="REGEX=CLASS",
                   help="class of the parameters whose name matches REGEX (repeatable)")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    if args.tol <= 0:
        raise ValueError(f"--tol must be > 0, got {args.tol}")
    if (args.a is not None or args.b is not None) and args.rule != "custom":
        raise ValueError("-a/-b are the exponents of --rule custom; add --rule custom (or drop -a/-b)")
    if args.widths is not None and any(w <= 0 for w in args.widths):
        raise ValueError(f"widths must be positive, got {args.widths}")
    report = inspect(args.ckpts, base=args.base, widths=args.widths, overrides=dict(args.override),
                     rule=args.rule, a=args.a, b=args.b, tol=args.tol)
    if args.json:
        print(to_json(report))
    else:
        print(format_report(report))
    return 0
