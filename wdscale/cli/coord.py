"""``wdscale coord``: the coordinate check, on a built-in model or your model file (science.coord)."""
from __future__ import annotations

import math

from ..science.coord import coord_check


# -- CLI plugin: ``wdscale coord`` ----------------------------------------------------------------------------
def configure(p) -> None:
    p.description = ("microsoft/mup's coordinate check: the RMS of every module's output on a fixed batch after a few "
                     "AdamW steps, at several widths, and its width exponent per module (mu-P asks ~0).  Works on "
                     "the built-in models and on your own model file (forward hooks on your modules).  A flat coord "
                     "check is about the first steps; whether the lr transfers at the end of training is what "
                     "`wdscale study` answers.")
    p.add_argument("--model", default="synthetic", help="synthetic, transformer, or a model file path.py")
    p.add_argument("--widths", default="32,64,128", help="comma list (the smallest is the base width)")
    p.add_argument("--rules", default="sp,mup", help="comma list of rules")
    p.add_argument("--steps", type=int, default=4, help="AdamW steps")
    p.add_argument("--lr", type=float, default=1e-2, help="eta0")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args) -> int:
    import json

    from ..models.config import parse_numbers
    from ..core.errors import BadInput
    from ..core.rules import RULES

    widths = parse_numbers(args.widths, int)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    if len(widths) < 2 or any(w <= 0 for w in widths):
        raise BadInput(f"--widths needs at least two positive widths, got {args.widths!r}")
    bad = [r for r in rules if r not in RULES or r in ("custom", "fitted", "fitted-sqrt")]
    if not rules or bad:
        raise BadInput(f"--rules: choose from sp, mup, wd, indep (got {args.rules!r})")
    if args.steps < 1 or not (args.lr > 0 and math.isfinite(args.lr)):
        raise BadInput("--steps must be >= 1 and --lr a finite number > 0")
    if args.model not in ("synthetic", "transformer") and not str(args.model).endswith(".py"):
        raise BadInput(f"--model {args.model!r}: choose synthetic, transformer or a model file path.py")
    rows = coord_check(args.model, sorted(widths), rules, args.steps, args.lr, 0.0, min(widths), 0)
    from ..models.own import coord_slopes

    slopes = coord_slopes(rows)
    if args.json:
        print(json.dumps({"rows": rows, "slopes": slopes}))
        return 0
    print(f"coordinate check: {args.model}, widths {sorted(widths)}, {args.steps} AdamW steps at lr {args.lr:g}: "
          "width exponent of each module's output RMS (mu-P: ~0; |slope| > 0.25 flagged)")
    mods = sorted({s["module"] for s in slopes})
    w = max(len(m) for m in mods)
    print(f"  {'module':<{w}}  " + "  ".join(f"{r:>7}" for r in rules))
    for m in mods:
        cells = []
        for r in rules:
            s = next((x["slope"] for x in slopes if x["module"] == m and x["rule"] == r), None)
            cells.append("      -" if s is None else f"{s:+7.2f}" + ("!" if abs(s) > 0.25 else " "))
        print(f"  {m:<{w}}  " + " ".join(cells))
    return 0
