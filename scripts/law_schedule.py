"""The law through the schedule: sigma ~ eta^a lam^-b at every spectra snapshot of two stores (docs/law.md).

    python scripts/law_schedule.py COSINE_STORE CONSTANT_STORE [--min-S 3] [--n-boot 300] [--classes top,fro,bulk]

Each store is one eta x lam grid at one width with every spectra snapshot kept (`wdscale sweep ... --schedule
cosine` and `--schedule warmup`, the constant-lr control).  At each snapshot step t the runs with
S(t) = sum_{t' < t} eta_t' lam >= --min-S (S grows with t, so early snapshots keep only the fastest-decaying runs)
give one least-squares fit of log y = a log eta - b log lam + c (``wdscale.science.law.law_points`` / ``fit_law``, each
computation once, bootstrap 95% CIs) for y = sigma_top, ||W||_F and the bulk (median sigma), all hidden matrices
pooled and per matrix class.  Prints Markdown: per quantity the pooled a(t), b(t) of both stores side by side, then
per class (sigma_top, and the quantities of --classes).  Read-only; no training.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wdscale.science import law  # noqa: E402
from wdscale.models.config import _factor  # noqa: E402
from wdscale.training.store import RunStore  # noqa: E402


def study(path: str):
    store = RunStore(path)
    recs = [r for r in store.records(check=False) if r.get("status", "done") == "done"]
    if not recs:
        return None, None
    cache: dict = {}

    def spectra(rid):
        if rid not in cache:
            cache[rid] = store.spectra(rid)
        return cache[rid]
    return recs, spectra


def points_over_time(recs, spectra, min_S: float | None, fixed_at: int | None = None) -> dict:
    """{step: {"lr": lr factor, "n_all": runs, "classes": {class: [law points of the runs past S(t) >= min_S]}}}.

    ``fixed_at``: from that snapshot on keep the runs past the gate there, and only them (one run set through the
    rest of the schedule: a change of a, b is then the schedule's, not a run set growing); earlier steps dropped."""
    runs = law.unique_runs(recs)
    scope = law.choose_scope(recs, min_S or 0.0)
    classes = sorted(set(law.class_matrices(runs[0])) - {"pooled"}) + ["pooled"]
    r0 = runs[0]
    out = {}
    for step in [s for s in law.snapshot_steps(recs, spectra) if s > 0]:
        lr = float(_factor(r0.get("schedule", "constant"), r0.get("warmup") or 0.0, r0["steps"], 1.0, step - 1))
        out[step] = {"lr": lr, "n_all": len(runs),
                     "classes": {k: law.law_points(recs, spectra, k, scope, min_S, step=step) for k in classes}}
    if fixed_at is not None:
        if fixed_at not in out:
            raise SystemExit(f"--fixed-at {fixed_at}: not a snapshot step ({', '.join(map(str, out))})")
        keep = {p["run_id"] for p in out[fixed_at]["classes"]["pooled"]}
        out = {s: {**r, "classes": {k: [p for p in law.law_points(recs, spectra, k, scope, None, step=s)
                                         if p["run_id"] in keep] for k in r["classes"]}}
               for s, r in out.items() if s >= fixed_at}
    return out


def match(pts: dict) -> dict:
    """Keep, at each step and class, only the (eta, lam, width, seed) present in every store."""
    names = list(pts)
    out = {n: {} for n in names}
    for s in set.intersection(*(set(pts[n]) for n in names)):
        for n in names:
            out[n][s] = {**pts[n][s], "classes": {}}
        for k in pts[names[0]][s]["classes"]:
            key = lambda p: (f"{p['eta']:.9g}", f"{p['lam']:.9g}", p["width"], p["seed"])
            common = set.intersection(*({key(p) for p in pts[n][s]["classes"].get(k, [])} for n in names))
            for n in names:
                out[n][s]["classes"][k] = [p for p in pts[n][s]["classes"].get(k, []) if key(p) in common]
    return out


def fit_all(pts: dict, n_boot: int) -> dict:
    """points_over_time -> {step: {"lr", "n_all", "classes": {class: {quantity: fit, "S": [S of the points]}}}}."""
    return {s: {**r, "classes": {k: {**{q: law.fit_law(p, q, n_boot) for q in law.QUANTITIES},
                                     "S": [x["S"] for x in p]} for k, p in r["classes"].items()}}
            for s, r in pts.items()}


def cell(f: dict, x: str) -> str:
    v, ci = f[x], f[f"{x}_ci"]
    if not math.isfinite(v):
        return "-"
    return f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if all(math.isfinite(c) for c in ci) else f"{v:.2f}"


def s_range(S: list) -> str:
    return f"{min(S):.1f}–{max(S):.1f}" if S else "-"


def pooled_table(res: dict, names: list[str], q: str) -> list[str]:
    steps = sorted(set().union(*(r.keys() for r in res.values())))
    head = "| step |" + "".join(f" {n}: lr/η_peak | runs | S range | a [95% CI] | b [95% CI] |" for n in names)
    L = [head, "|---|" + "---|---|---|---|---|" * len(names)]
    for s in steps:
        cells = []
        for n in names:
            r = res[n].get(s)
            if r is None:
                cells.append(" - | - | - | - | - |")
                continue
            c = r["classes"]["pooled"]
            f = c[q]
            cells.append(f" {r['lr']:.2f} | {f['n']} | {s_range(c['S'])} | {cell(f, 'a')} | {cell(f, 'b')} |")
        L.append(f"| {s} |" + "".join(cells))
    return L


def class_table(res: dict, names: list[str], q: str) -> list[str]:
    steps = sorted(set().union(*(r.keys() for r in res.values())))
    classes = [k for k in next(iter(res[names[0]].values()))["classes"] if k != "pooled"]
    L = ["| step | class |" + "".join(f" {n}: runs | a [95% CI] | b [95% CI] |" for n in names),
         "|---|---|" + "---|---|---|" * len(names)]
    for s in steps:
        for k in classes:
            cells = []
            for n in names:
                r = res[n].get(s)
                f = r["classes"][k][q] if r else None
                cells.append(" - | - | - |" if f is None else f" {f['n']} | {cell(f, 'a')} | {cell(f, 'b')} |")
            L.append(f"| {s} | {k} |" + "".join(cells))
    return L


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cosine", help="store of the cosine-decay grid")
    ap.add_argument("constant", help="store of the constant-lr control (linear warmup, then constant)")
    ap.add_argument("--names", default="cosine,constant", help="column names of the two stores")
    ap.add_argument("--min-S", type=float, default=law.MIN_S, help="steady-state gate on S(t) (0: every run)")
    ap.add_argument("--n-boot", type=int, default=300)
    ap.add_argument("--classes", default="top", help="quantities shown per class too (of top,fro,bulk)")
    ap.add_argument("--fixed-at", type=int, default=None,
                    help="one run set: the runs past the S gate at this snapshot, followed through the later ones")
    ap.add_argument("--matched", action="store_true",
                    help="fit each step on the (eta, lam) pairs past the S gate in both stores only")
    args = ap.parse_args(argv)
    names = args.names.split(",")
    paths = dict(zip(names, (args.cosine, args.constant)))
    res, meta = {}, {}
    for n, p in paths.items():
        if not Path(p).exists():
            print(f"*{n}: {p} missing: not in the table*\n")
            continue
        recs, sp = study(p)
        if not recs:
            print(f"*{n}: {p} has no finished runs yet: not in the table*\n")
            continue
        res[n] = points_over_time(recs, sp, args.min_S or None, args.fixed_at)
        r0 = recs[0]
        widths = ", ".join(map(str, sorted({r["width"] for r in recs})))
        meta[n] = (f"{n}: {p}, {len(law.unique_runs(recs))} runs ({len({r['matrix_lr'] for r in recs})} η × "
                   f"{len({r['matrix_wd'] for r in recs})} λ, d = {widths}), schedule {r0.get('schedule')}, "
                   f"warmup {r0.get('warmup') or 0:g}, {r0['steps']} steps, model {r0.get('model')}")
    if not res:
        return 1
    names = [n for n in names if n in res]
    if args.matched and len(names) > 1:
        res = match(res)
    res = {n: fit_all(res[n], args.n_boot) for n in names}
    print("\n".join(f"- {m}" for m in meta.values()))
    print(f"\nσ ∝ η^a·λ^−b fitted at each spectra snapshot over the runs with S(t) ≥ {args.min_S:g}"
          + (f" at step {args.fixed_at} (the same runs at every later step)" if args.fixed_at else "")
          + (" in both stores (the same (η, λ) pairs in each column)" if args.matched else "") +
          f" (bootstrap 95% CIs, {args.n_boot} resamples); lr/η_peak: the schedule's factor at that step.\n")
    for q in law.QUANTITIES:
        print(f"#### {law.QUANTITY_NAMES[q]}, all hidden matrices pooled\n")
        print("\n".join(pooled_table(res, names, q)) + "\n")
    for q in [x for x in args.classes.split(",") if x]:
        print(f"#### {law.QUANTITY_NAMES[q]}, per matrix class\n")
        print("\n".join(class_table(res, names, q)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
