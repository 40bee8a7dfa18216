"""``wdscale validate``: reproduce Fan et al.'s claims with the tool itself, and say where they hold here.

The sweeps go through ``run_sweep`` into a store (so a rerun is free and the runs can be opened in the app),
and every number comes from ``wdscale.analysis``.  Measured, not tuned: the grid is chosen only so that every
run reaches AdamW's steady state (steps >= 3 tau for the hidden matrices at every width, tau = 1/(eta*lam)
with eta, lam the *matrix* class's lr and torch weight_decay); the table reports steps/tau so you can check.

Claims (paper values; Fan et al. 2025, arXiv 2510.15262):

1. at fixed width, sigma_top of a hidden matrix scales as (eta/lam)^0.5;
2. under eta2 ~ 1/d, sigma_top scales as d^0.25 with lam fixed (``mup``), d^0 with lam ~ sqrt(d) (``wd``) and
   d^-0.25 with lam ~ d (``indep``);
3. the optimal lr drifts with width unless sigma_top is held fixed (octaves per doubling of width);
4. the singular-value spectra, rescaled by sqrt(eta/lam) (fixed width) or by sigma_top (across widths), collapse.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .store import _clean

from . import analysis, plots

# The synthetic core v2 (docs/synthetic.md) around the demo proxy's optimum (eta0 ~ 8e-3, lam0 = 3 at d0 = 32):
# the slowest matrix (mup, smallest lr, widest) has eta2*lam2 = 5.7e-3/8 * 3 = 2.1e-3 per step at d = 256, so
# 1500 steps ~ 3.2 tau (quick: widths up to 128, 1000 steps ~ 4.3 tau).
SYN_BASE = 32
SYN_WIDTHS = (32, 64, 128, 256)
SYN_RULES = ("mup", "wd", "indep")
SYN_LRS = (5.7e-3, 8e-3, 1.13e-2, 1.6e-2, 2.26e-2, 3.2e-2)
SYN_WD = 3.0
ETA_LAM_WIDTH = 64
ETA_LAM_LRS = (4e-3, 8e-3, 1.6e-2)
ETA_LAM_WDS = (2.0, 4.0, 8.0)
PAPER_WIDTH_EXPONENT = {"mup": 0.25, "wd": 0.0, "indep": -0.25}
# Collapse is also measured on the top of the spectrum only (rank/d <= 1/8): the tail of a steady-state
# spectrum is tiny and noisy in log scale.
TOP_RANK_FRACTION = 0.125
TOLERANCE = 0.1  # |measured - paper| within this counts as agreement (the lead's target for claim 1)


def configure(p) -> None:
    p.add_argument("--quick", action="store_true", help="synthetic core only, one seed (a few minutes on a CPU)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--out", default="validation", help="folder for the store, figures (HTML, PNG) and results")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-png", action="store_true", help="HTML figures only (no browser needed)")


# ---------------------------------------------------------------------------------------------------------
# The sweeps
# ---------------------------------------------------------------------------------------------------------
def synthetic_configs(quick: bool) -> list:
    from .sweep import expand_grid

    steps = 1000 if quick else 1500
    seeds = (0,) if quick else (0, 1)
    widths = SYN_WIDTHS[:3] if quick else SYN_WIDTHS
    cs = expand_grid("synthetic", widths, SYN_BASE, SYN_RULES, SYN_LRS, [SYN_WD], steps, seeds)
    # claim 1: lr and wd both varied at one width (mup; the matrix eta/lam spans 16x)
    cs += expand_grid("synthetic", [ETA_LAM_WIDTH], SYN_BASE, ["mup"], ETA_LAM_LRS, ETA_LAM_WDS, steps, seeds)
    return cs


def transformer_configs() -> list:
    """A small Transformer (2 layers, seq 64, batch 8): widths 64 and 128 only, so it fits a CPU budget."""
    from .sweep import expand_grid

    common = dict(depth=2, seq_len=64, batch_size=8, head_dim=32)
    # lam0 = 2: the slowest matrix (mup, lr 5e-3, d=128) has eta2*lam2 = 5e-3, tau = 200; 600 steps = 3 tau
    cs = expand_grid("transformer", [64, 128], 64, ["mup", "wd", "indep"], [5e-3, 1e-2, 2e-2], [2.0], 600,
                     **common)
    cs += expand_grid("transformer", [128], 64, ["mup"], [5e-3, 1e-2, 2e-2], [4.0], 600, **common)
    return cs


# ---------------------------------------------------------------------------------------------------------
# The analysis (pure: records + a spectra reader in, a results dict out)
# ---------------------------------------------------------------------------------------------------------
def _matrix_names(rec):
    return [n for n, c in rec["param_class"].items() if c == "matrix"]


def _final_spectra(rec, spectra_of, names):
    """Final singular values of each hidden matrix of a run: {name: (k,) array}."""
    sp = spectra_of(rec["run_id"])
    return {n: np.asarray(sp[n])[-1] for n in names if n in sp}


def analyse(records: list[dict], spectra_of=None, eta_lam_width: int | None = None) -> dict:
    """Every claim's measurement from plain records; ``spectra_of(run_id)`` gives stored spectra (optional)."""
    ok = [r for r in records if not r.get("diverged")]
    out = {"n_runs": len(records), "n_diverged": len(records) - len(ok)}
    taus = [r["groups"]["matrix"]["steps_over_tau"] for r in ok if r.get("groups")]
    out["min_steps_over_tau"] = min(taus) if taus else None

    # 1. sigma_top vs matrix eta/lam at fixed width (the width with the most distinct eta/lam)
    fits = {f["width"]: f for f in analysis.eta_lam_exponent(ok)}
    if fits:
        w = eta_lam_width if eta_lam_width in fits else max(
            fits, key=lambda k: len({r["matrix_lr"] / r["matrix_wd"] for r in ok if r["width"] == k}))
        out["eta_lam"] = {**fits[w], "width": w, "paper": 0.5,
                          "agrees": abs(fits[w]["exponent"] - 0.5) <= TOLERANCE}
        out["eta_lam_points"] = [(r["matrix_lr"] / r["matrix_wd"], analysis.matrix_top_sv(r), r["rule"])
                                 for r in ok if r["width"] == w and r.get("matrix_wd")]

    # per hidden matrix too: W1 (scale-invariant) and W2 (the sublayer gain) need not follow the law alike
    names = sorted({n for r in ok for n, c in r["param_class"].items() if c == "matrix"})
    if "eta_lam" in out and len(names) > 1:
        w = out["eta_lam"]["width"]
        out["eta_lam_by_matrix"] = {n: next((f for f in analysis.eta_lam_exponent(ok, params=[n])
                                             if f["width"] == w), None) for n in names}

    # 2. sigma_top vs width per rule: one fit per (rule, lr, wd); the summary is the median over lrs
    widths_rows = analysis.width_exponents(ok)
    out["width_rows"] = widths_rows
    summary = {}
    for rule in sorted({r["rule"] for r in widths_rows}):
        rows = [r for r in widths_rows if r["rule"] == rule and math.isfinite(r["exponent"])]
        if not rows:
            continue
        exps = [r["exponent"] for r in rows]
        paper = PAPER_WIDTH_EXPONENT.get(rule)
        med = float(np.median(exps))
        summary[rule] = {"exponent": med, "min": min(exps), "max": max(exps), "n_lrs": len(rows),
                         "ci_low": float(np.median([r["ci_low"] for r in rows])),
                         "ci_high": float(np.median([r["ci_high"] for r in rows])),
                         "implied_lambda_exponent": float(np.median([r["implied_lambda_exponent"] for r in rows])),
                         "paper": paper, "agrees": None if paper is None else abs(med - paper) <= TOLERANCE}
    out["width_exponent"] = summary
    if len(names) > 1:
        out["width_exponent_by_matrix"] = {
            n: {rule: float(np.median([r["exponent"] for r in analysis.width_exponents(ok, params=[n], n_boot=50)
                                       if r["rule"] == rule])) for rule in summary} for n in names}

    # 3. lr optimum per width and its drift (octaves per doubling of width), per rule at each wd
    drift = {}
    for (rule, wd), by_w in analysis.lr_optima(ok).items():
        if len(by_w) < 2:
            continue
        opts = {w: o["x_opt"] for w, o in by_w.items()}
        drift[f"{rule}@wd={wd:g}"] = {
            "rule": rule, "wd": wd, "drift_octaves_per_doubling": analysis.drift_octaves(opts),
            "optima": {str(w): o["x_opt"] for w, o in by_w.items()},
            "methods": {str(w): o["method"] for w, o in by_w.items()},
            "width_ratio": max(by_w) / min(by_w)}
    out["lr_drift"] = drift

    # 4. spectrum collapse
    if spectra_of is not None and "eta_lam" in out:
        w = out["eta_lam"]["width"]
        raw, resc = [], []
        for r in ok:
            if r["width"] != w or r["rule"] != "mup":
                continue
            for n, sv in _final_spectra(r, spectra_of, _matrix_names(r)).items():
                x, y = analysis.rescaled(sv, r["matrix_lr"], r["matrix_wd"], w)
                raw.append((x, sv))
                resc.append((x, y))
        top = lambda cs: [(x[x <= TOP_RANK_FRACTION], y[x <= TOP_RANK_FRACTION]) for x, y in cs]
        out["collapse_fixed_width"] = {"width": w, "raw": analysis.collapse_metric(raw),
                                       "rescaled": analysis.collapse_metric(resc), "n_curves": len(resc),
                                       "raw_top": analysis.collapse_metric(top(raw)),
                                       "rescaled_top": analysis.collapse_metric(top(resc))}
        shape = {}
        for rule in summary:
            per_lr = []
            for row in (x for x in widths_rows if x["rule"] == rule):
                curves = []
                for r in ok:
                    if (r["rule"], r["lr"], r["wd"]) == (rule, row["lr"], row["wd"]):
                        for n, sv in _final_spectra(r, spectra_of, _matrix_names(r)).items():
                            if sv[0] > 0:
                                curves.append((np.arange(1, len(sv) + 1) / r["width"], sv / sv[0]))
                per_lr.append((analysis.collapse_metric(curves), analysis.collapse_metric(
                    [(x[x <= TOP_RANK_FRACTION], y[x <= TOP_RANK_FRACTION]) for x, y in curves])))
            if per_lr:
                shape[rule] = {"all": float(np.nanmedian([p[0] for p in per_lr])),
                               "top": float(np.nanmedian([p[1] for p in per_lr]))}
        out["collapse_shape_across_widths"] = shape
    return out


# ---------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def _main_wd(records):
    """The wd of the width sweep: the most common one."""
    wds = [r["wd"] for r in records]
    return max(set(wds), key=wds.count) if wds else None


def figures(res: dict, records: list[dict], spectra_of) -> dict:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figs = {}
    ok = [r for r in records if not r.get("diverged")]
    wd0 = _main_wd(records)
    if "eta_lam" in res:
        e = res["eta_lam"]
        x = np.array([p[0] for p in res["eta_lam_points"]])
        y = np.array([p[1] for p in res["eta_lam_points"]])
        f = go.Figure(go.Scatter(x=x, y=y, mode="markers", name="runs"))
        xs = np.geomspace(x.min(), x.max(), 20)
        f.add_scatter(x=xs, y=e["prefactor"] * xs ** e["exponent"], name=f"fit: slope {e['exponent']:.2f}")
        f.add_scatter(x=xs, y=e["prefactor"] * np.sqrt(xs / np.sqrt(x.min() * x.max())) *
                      (np.sqrt(x.min() * x.max())) ** e["exponent"], name="slope 0.5 (paper)",
                      line=dict(dash="dot"))
        f.update_layout(title=f"sigma_top vs matrix eta/lam at d={e['width']} (torch wd; decay per step eta*lam)",
                        xaxis=dict(type="log", title="eta/lam of the hidden matrices"),
                        yaxis=dict(type="log", title="sigma_top (geo. mean over hidden matrices)"))
        figs["sigma_vs_eta_over_lam"] = f
    rules = sorted({r["rule"] for r in res.get("width_rows", [])})
    if rules:
        f = make_subplots(rows=1, cols=len(rules), subplot_titles=[
            f"{r}: exponent {res['width_exponent'][r]['exponent']:.2f} (paper {PAPER_WIDTH_EXPONENT.get(r)})"
            for r in rules if r in res["width_exponent"]], shared_yaxes=True)
        for j, rule in enumerate(rules, 1):
            for k, lr in enumerate(sorted({r["lr"] for r in ok})):
                pts = sorted((r["width"], analysis.matrix_top_sv(r)) for r in ok
                             if r["rule"] == rule and r["lr"] == lr and r["wd"] == wd0)
                if len(pts) >= 2:  # one colour per proxy lr across panels
                    f.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                  name=f"lr {lr:g}", row=1, col=j, showlegend=(j == 1), legendgroup=f"{lr:g}",
                                  line=dict(color=_COLORS[k % len(_COLORS)]))
            f.update_xaxes(type="log", title="width d", row=1, col=j)
            f.update_yaxes(type="log", row=1, col=j)
        f.update_layout(title="sigma_top vs width (eta2 = eta0/m) per rule and proxy lr", width=1100)
        figs["sigma_vs_width"] = f
        # the app's own figure (seed means, optimum stars, rule colours): one plotting implementation
        main = [r for r in records if r["wd"] == wd0]
        figs["loss_vs_lr"] = plots.loss_vs_param(main, "lr", analysis.lr_optima(main, param="lr"),
                                                 title="final validation loss vs proxy lr, per rule (★ optimum)")
    if spectra_of is not None and "collapse_fixed_width" in res:
        w = res["collapse_fixed_width"]["width"]
        f = make_subplots(rows=1, cols=2, subplot_titles=["raw sigma_i", "sigma_i / sqrt(eta/lam)"])
        for r in ok:
            if r["width"] != w or r["rule"] != "mup":
                continue
            sv = _final_spectra(r, spectra_of, _matrix_names(r)[:1])
            for n, s in sv.items():
                x, y = analysis.rescaled(s, r["matrix_lr"], r["matrix_wd"], w)
                lab = f"eta {r['matrix_lr']:.3g}, lam {r['matrix_wd']:.3g}"
                f.add_scatter(x=x, y=s, mode="lines", name=lab, row=1, col=1, legendgroup=lab)
                f.add_scatter(x=x, y=y, mode="lines", name=lab, row=1, col=2, legendgroup=lab, showlegend=False)
        for c in (1, 2):
            f.update_xaxes(title="rank / d", row=1, col=c)
            f.update_yaxes(type="log", row=1, col=c)
        f.update_layout(title=f"final spectra of the first hidden matrix at d={w}", width=1100)
        figs["spectra_collapse"] = f
    return figs


def write_figures(figs: dict, out: Path, png: bool) -> dict:
    """HTML always; PNG through kaleido (one browser for all figures) unless it is unavailable."""
    paths = {}
    for name, f in figs.items():
        p = out / f"{name}.html"
        p.write_text(f.to_html(include_plotlyjs="cdn"))
        paths[name] = {"html": str(p)}
    if png and figs:
        try:
            import kaleido

            kaleido.start_sync_server()
            try:
                for name, f in figs.items():
                    p = out / f"{name}.png"
                    f.write_image(str(p), width=f.layout.width or 800, height=420)
                    paths[name]["png"] = str(p)
            finally:
                kaleido.stop_sync_server()
        except Exception as e:  # no browser: the HTML is still there
            print(f"wdscale validate: PNG export skipped ({type(e).__name__}: {e})", file=sys.stderr)
    return paths


# ---------------------------------------------------------------------------------------------------------
# Table and CLI
# ---------------------------------------------------------------------------------------------------------
def _yn(v):
    return "-" if v is None else ("agrees" if v else "DIFFERS")


def format_table(res: dict, title: str) -> str:
    L = [f"## {title}", "",
         f"{res['n_runs']} runs ({res['n_diverged']} diverged); slowest hidden matrix reached "
         f"{res['min_steps_over_tau']:.1f} tau (steps * eta * lam)" if res.get("min_steps_over_tau") else "", "",
         "| claim | paper | measured | 95% CI | verdict |", "|---|---|---|---|---|"]
    if "eta_lam" in res:
        e = res["eta_lam"]
        L.append(f"| sigma_top ~ (eta/lam)^k at d={e['width']} ({e['n']} runs) | 0.5 | {e['exponent']:.3f} | "
                 f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}] | {_yn(e['agrees'])} |")
    for rule, s in res.get("width_exponent", {}).items():
        L.append(f"| sigma_top ~ d^k, rule {rule} (median over {s['n_lrs']} lrs; range {s['min']:.2f}..{s['max']:.2f}) "
                 f"| {s['paper']} | {s['exponent']:.3f} | [{s['ci_low']:.2f}, {s['ci_high']:.2f}] | "
                 f"{_yn(s['agrees'])} |")
    for n, f in (res.get("eta_lam_by_matrix") or {}).items():
        if f:
            L.append(f"| ... matrix {n} alone | 0.5 | {f['exponent']:.3f} | [{f['ci_low']:.3f}, {f['ci_high']:.3f}] | "
                     f"{_yn(abs(f['exponent'] - 0.5) <= TOLERANCE)} |")
    for n, by_rule in (res.get("width_exponent_by_matrix") or {}).items():
        L.append(f"| sigma_top ~ d^k, matrix {n} alone, per rule | " +
                 ", ".join(f"{r} {PAPER_WIDTH_EXPONENT.get(r)}" for r in by_rule) + " | " +
                 ", ".join(f"{r} {v:.2f}" for r, v in by_rule.items()) + " | | - |")
    for rule, s in res.get("width_exponent", {}).items():
        L.append(f"| implied lam exponent keeping sigma_top fixed, from rule {rule} | 0.5 | "
                 f"{s['implied_lambda_exponent']:.3f} | | {_yn(abs(s['implied_lambda_exponent'] - 0.5) <= 2 * TOLERANCE)} |")
    for key, d in res.get("lr_drift", {}).items():
        opts = ", ".join(f"{w}: {o:.3g}" + ("" if d["methods"][w] == "quadratic" else f" ({d['methods'][w]})")
                         for w, o in d["optima"].items() if o)
        paper = "~0" if d["rule"] == "wd" else "!= 0"
        if any(m != "quadratic" for m in d["methods"].values()):
            verdict = "inconclusive: optimum at the grid edge"  # a drift of an edge point measures the grid
        else:
            verdict = _yn(abs(d["drift_octaves_per_doubling"]) <= 0.25) if d["rule"] == "wd" else "-"
        L.append(f"| lr-optimum drift, {key}, octaves per doubling over {d['width_ratio']:g}x width (optima {opts}) "
                 f"| {paper} | {d['drift_octaves_per_doubling']:+.2f} | | "
                 f"{verdict} |")
    if "collapse_fixed_width" in res:
        c = res["collapse_fixed_width"]
        L.append(f"| spectra at d={c['width']} collapse after dividing by sqrt(eta/lam) (std of log sigma, "
                 f"{c['n_curves']} curves; raw {c['raw']:.3f}) | collapse | {c['rescaled']:.3f} | | "
                 f"{_yn(c['rescaled'] < 0.5 * c['raw'])} |")
        L.append(f"| same, top of the spectrum (rank/d <= {TOP_RANK_FRACTION:g}; raw {c['raw_top']:.3f}) | collapse | "
                 f"{c['rescaled_top']:.3f} | | {_yn(c['rescaled_top'] < 0.5 * c['raw_top'])} |")
    for rule, v in res.get("collapse_shape_across_widths", {}).items():
        L.append(f"| spectrum shape sigma/sigma_top vs rank/d across widths, rule {rule} (whole / top "
                 f"rank/d <= {TOP_RANK_FRACTION:g}) | width-invariant | {v['all']:.3f} / {v['top']:.3f} | | "
                 f"{_yn(v['top'] <= 0.1)} |")
    return "\n".join(L)


def run_part(name: str, configs, out: Path, device: str, progress) -> tuple[dict, list, object]:
    from .store import RunStore
    from .sweep import run_sweep
    from .train import TrainOptions

    store = RunStore(out / "runs")
    t0 = time.perf_counter()

    def on_event(e):
        if progress and e["type"] == "chunk":
            progress(f"{name}: ensemble {e['index'] + 1}/{e['of']} (d={e['width']}, {e['n_members']} members)")

    recs = run_sweep(configs, store, TrainOptions(device=device), on_event=on_event)
    res = analyse(recs, store.spectra, ETA_LAM_WIDTH if name == "synthetic" else 128)
    res["seconds"] = time.perf_counter() - t0
    return res, recs, store


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = None if args.json else (lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    parts = [("synthetic", synthetic_configs(args.quick))]
    if not args.quick:
        parts.append(("transformer", transformer_configs()))
    from .train import preflight

    for _, cs in parts:
        preflight(cs, args.device)
    results, tables, paths = {}, [], {}
    for name, cs in parts:
        res, recs, store = run_part(name, cs, out, args.device, progress)
        results[name] = res
        figs = {f"{name}_{k}": f for k, f in figures(res, recs, store.spectra).items()}
        paths.update(write_figures(figs, out, png=not args.no_png))
        tables.append(format_table(res, f"{name} ({len(recs)} runs, {res['seconds']:.0f} s)"))
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    (out / "table.md").write_text("\n\n".join(tables) + "\n")
    if args.json:
        print(json.dumps(_jsonable({"results": results, "figures": paths})))
    else:
        print("\n\n".join(tables))
        print(f"\nfigures and results in {out}/")
    return 0


_jsonable = _clean  # NaN/inf -> None, numpy scalars -> float: one implementation, in the store
