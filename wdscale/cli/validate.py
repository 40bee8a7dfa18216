"""``wdscale validate``: run the claims' sweeps, then write the tables and figures (science.validate measures).

The measuring (configs, ``analyse``, the tables, the regimes and the law) lives in ``science.validate``; this
module trains, draws and writes: it is the only part that needs the figures.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..science import analysis
from ..science.law import format_law
from ..science.validate import (ETA_LAM_WIDTH, PAPER_WIDTH_EXPONENT, SYN_WD, _final_spectra, _jsonable,
                                _matrix_names, analyse, format_law_range, format_regimes, format_table,
                                gallery_law_tables, gallery_regimes, regime_study, synthetic_configs,
                                transformer_configs)
from ..show import plots
from ..training.store import RunStore
from ..training.sweep import run_sweep
from ..training.train import TrainOptions, preflight


def configure(p) -> None:
    p.add_argument("--quick", action="store_true", help="synthetic core only, one seed (a few minutes on a CPU)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--out", default="validation", help="folder for the store, figures (HTML, PNG) and results")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-png", action="store_true", help="HTML figures only (no browser needed)")
    p.add_argument("--law-only", action="store_true",
                   help="train nothing: the measured law sigma ~ eta^a lam^-b (a, b apart, per matrix class) and the "
                        "regimes of the shipped reference studies only (seconds)")


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


def run_part(name: str, configs, out: Path, device: str, progress) -> tuple[dict, list, object]:
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
    if getattr(args, "law_only", False):
        laws, text = gallery_law_tables()
        if args.json:
            print(json.dumps(_jsonable({"law": laws})))
        else:
            print(text)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    progress = None if args.json else (lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    parts = [("synthetic", synthetic_configs(args.quick))]
    if not args.quick:
        parts.append(("transformer", transformer_configs()))
    for _, cs in parts:
        preflight(cs, args.device)
    results, tables, paths = {}, [], {}
    for name, cs in parts:
        res, recs, store = run_part(name, cs, out, args.device, progress)
        results[name] = res
        figs = {f"{name}_{k}": f for k, f in figures(res, recs, store.spectra).items()}
        paths.update(write_figures(figs, out, png=not args.no_png))
        tables.append(format_table(res, f"{name} ({len(recs)} runs, {res['seconds']:.0f} s)"))
        if res.get("law_range"):
            tables.append(format_law_range(res["law_range"]))
        if res.get("law"):
            tables.append(format_law({f"{name} (this run)": res["law"]}))
        if name == "synthetic":  # this run's own transfer grid, beside the gallery's studies
            synth = regime_study([r for r in recs if r["wd"] == SYN_WD], "synthetic (this run)",
                                 "multi-epoch (finite set), constant lr")
    studies, notes = gallery_regimes()
    results["regimes"] = {"studies": [synth] + studies, "notes": notes}
    tables.append(format_regimes([synth] + studies, notes))
    laws, law_text = gallery_law_tables()
    results["law"] = laws
    tables.append(law_text)
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    (out / "table.md").write_text("\n\n".join(tables) + "\n")
    if args.json:
        print(json.dumps(_jsonable({"results": results, "figures": paths})))
    else:
        print("\n\n".join(tables))
        print(f"\nfigures and results in {out}/")
    return 0
