"""``wdscale report DIR``: the transfer verdict of a stored sweep (science.report builds it)."""
from __future__ import annotations

import json
import math

from ..science.verdict import DEFAULT_THRESHOLD
from ..science.report import (_json_safe, build_report, law_markdown, load_records, scan_markdown,
                              store_law, store_scan, to_csv, to_markdown)
from ..science.verdict import compare_rules


def configure(p) -> None:
    p.add_argument("dir", metavar="DIR", help="run store (the --out of wdscale sweep)")
    p.add_argument("--format", default="md", choices=["md", "csv", "json"])
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="PASS when |drift of the optimum| <= this many octaves per doubling of width")
    p.add_argument("--regret-threshold", type=float, default=None,
                   help="also require the max regret (loss above each width's best) <= this")
    p.add_argument("--param", default="lr", choices=["lr", "wd"], help="the hyper-parameter whose transfer is judged")
    p.add_argument("--model", default=None, choices=["synthetic", "transformer"], help="only runs of this model")


def run(args) -> int:
    if not (math.isfinite(args.threshold) and args.threshold > 0):
        raise ValueError(f"--threshold must be a finite number > 0, got {args.threshold}")
    if args.regret_threshold is not None and not math.isfinite(args.regret_threshold):
        raise ValueError(f"--regret-threshold must be a finite number, got {args.regret_threshold}")
    records = load_records(args.dir, args.model)
    try:
        verdicts, horizons = build_report(records, args.param, args.threshold, args.regret_threshold)
    except ValueError as e:
        if args.format != "json" or "too few runs" not in str(e):
            raise
        # JSON readers still get what the store can say (the law), and why there is no verdict
        print(json.dumps(_json_safe({"verdicts": [], "horizon": [], "comparison": [], "no_verdict": str(e),
                                     "law": store_law(args.dir, records)})))
        return 0
    scan = store_scan(records, args.threshold) if args.param == "lr" and args.format != "csv" else None
    if args.format == "json":
        print(json.dumps(_json_safe({"verdicts": verdicts, "horizon": horizons,
                                     "comparison": compare_rules(verdicts), "law": store_law(args.dir, records),
                                     **({"scan": scan} if scan else {})})))
    elif args.format == "csv":
        print(to_csv(verdicts, args.param))
    else:
        print("\n".join([to_markdown(verdicts, horizons, args.param)] + law_markdown(store_law(args.dir, records))
                        + scan_markdown(scan)))
    return 0
