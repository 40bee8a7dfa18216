"""``wdscale validate``: reproduce Fan et al.'s claims with the tool itself, and say where they hold here.

The sweeps go through ``run_sweep`` into a store (so a rerun is free and the runs can be opened in the app),
and every number comes from ``wdscale.science.analysis``.  Measured, not tuned: the grid is chosen only so that every
run reaches AdamW's steady state (steps >= 3 tau for the hidden matrices at every width, tau = 1/(eta*lam)
with eta, lam the *matrix* class's lr and torch weight_decay); the table reports steps/tau so you can check.

Claims (paper values; Fan et al. 2025, arXiv 2510.15262):

1. at fixed width, sigma_top of a hidden matrix scales as (eta/lam)^0.5;
2. under eta2 ~ 1/d, sigma_top scales as d^0.25 with lam fixed (``mup``), d^0 with lam ~ sqrt(d) (``wd``) and
   d^-0.25 with lam ~ d (``indep``);
3. the optimal lr drifts with width unless sigma_top is held fixed (octaves per doubling of width);
4. the singular-value spectra, rescaled by sqrt(eta/lam) (fixed width) or by sigma_top (across widths), collapse.

Claim 1 is also measured with eta and lam apart (sigma ~ eta^a lam^-b per matrix class, ``wdscale.science.law``), on this
run and on every shipped reference study (``--law-only``: those alone, nothing trained).
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..training.store import _clean

from . import analysis


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
# The law's range (issue 19): eta and lam swept separately, >= 16x each, at one width under mup (matrix eta = eta0/2).
# At 1000 steps S = sum_t eta_t lam = 1000 * eta/2 * lam: the eta sweep at lam 4 runs from S = 4 to 64; the lam
# sweep at eta 8e-3 has S = 2 at lam 0.5 (below the 3-tau gate, on purpose), so it is repeated at eta 1.6e-2,
# where lam 0.5 reaches S = 4: a bend seen at both etas is the law's, not the horizon's.
RANGE_WIDTH = 64
RANGE_ETAS = (2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)
RANGE_ETA_LAM = 4.0
RANGE_LAMS = (0.5, 1.0, 2.0, 4.0, 8.0)
RANGE_LAM_ETAS = (8e-3, 1.6e-2)
# The Transformer reference studies of the two regimes (read, never trained here): gallery name -> preset
TF_STUDIES = (("tf-lm", "lm"), ("tf-epochs", "lm-epochs"))
PAPER_ALPHA = 0.75
PAPER_WIDTH_EXPONENT = {"mup": 0.25, "wd": 0.0, "indep": -0.25}
# Collapse is also measured on the top of the spectrum only (rank/d <= 1/8): the tail of a steady-state
# spectrum is tiny and noisy in log scale.
TOP_RANK_FRACTION = 0.125
TOLERANCE = 0.1  # |measured - paper| within this counts as agreement (the lead's target for claim 1)


# ---------------------------------------------------------------------------------------------------------
# The sweeps
# ---------------------------------------------------------------------------------------------------------
def synthetic_configs(quick: bool) -> list:
    from ..training.sweep import expand_grid

    steps = 1000 if quick else 1500
    seeds = (0,) if quick else (0, 1)
    widths = SYN_WIDTHS[:3] if quick else SYN_WIDTHS
    cs = expand_grid("synthetic", widths, SYN_BASE, SYN_RULES, SYN_LRS, [SYN_WD], steps, seeds)
    # claim 1: lr and wd both varied at one width (mup; the matrix eta/lam spans 16x)
    cs += expand_grid("synthetic", [ETA_LAM_WIDTH], SYN_BASE, ["mup"], ETA_LAM_LRS, ETA_LAM_WDS, steps, seeds)
    return cs + range_configs(steps, seeds)


def range_configs(steps: int, seeds) -> list:
    """The law's range: eta alone at RANGE_ETA_LAM, lam alone at each of RANGE_LAM_ETAS (width 64, mup).  Points the
    eta/lam grid already has are the same run ids, so they cost nothing; the rest ride in the d=64 ensemble."""
    from ..training.sweep import expand_grid

    cs = expand_grid("synthetic", [RANGE_WIDTH], SYN_BASE, ["mup"], RANGE_ETAS, [RANGE_ETA_LAM], steps, seeds)
    for eta in RANGE_LAM_ETAS:
        cs += expand_grid("synthetic", [RANGE_WIDTH], SYN_BASE, ["mup"], [eta], RANGE_LAMS, steps, seeds)
    return cs


def transformer_configs() -> list:
    """A small Transformer (2 layers, seq 64, batch 8): widths 64 and 128 only, so it fits a CPU budget."""
    from ..training.sweep import expand_grid

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
    from .verdict import MIN_TAUS, record_taus

    out["short_runs"] = sorted((r["width"], r["rule"], r["lr"], r["wd"], round(record_taus(r) or 0.0, 2)) for r in ok
                               if (record_taus(r) or math.inf) < MIN_TAUS)

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

    # 1b. where the law holds: eta and lam apart (present when the run has the range sweeps)
    rng = law_range(ok, eta_lam_width or RANGE_WIDTH)
    if rng["sweeps"]:
        out["law_range"] = rng

    # 1c. the law with a and b apart, per matrix class (wdscale.science.law): sigma ~ eta^a lam^-b, runs at S >= 3
    from .law import measure_law

    out["law"] = measure_law(ok, spectra_of, n_boot=300)

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


def _sweep(points: list, x_of, sign: float) -> dict:
    """One separate sweep: the power-law fit over every run (seeds pooled; 95% CI), the local exponent between
    neighbouring points (seed geometric means), S at each point.  ``sign`` -1 reads sigma ~ lam^-k as k."""
    from .verdict import MIN_TAUS, record_taus

    by_x = defaultdict(list)
    for r in points:
        by_x[x_of(r)].append(r)
    rows = []
    for x in sorted(by_x):
        rs = by_x[x]
        svs = [v for v in (analysis.matrix_top_sv(r) for r in rs) if v]
        S = [t for t in (record_taus(r) for r in rs) if t is not None]
        rows.append({"lr": rs[0]["lr"], "wd": rs[0]["wd"], "matrix_lr": rs[0]["matrix_lr"],
                     "matrix_wd": rs[0]["matrix_wd"], "n": len(svs), "S": min(S) if S else None,
                     "sigma_top": float(np.exp(np.mean(np.log(svs)))) if svs else None})
    for a, b in zip(rows, rows[1:]):
        xa, xb = x_of(a), x_of(b)
        ok = a["sigma_top"] and b["sigma_top"]
        b["local"] = sign * math.log(b["sigma_top"] / a["sigma_top"]) / math.log(xb / xa) if ok else None
    fit = analysis.fit_power_law([x_of(r) for r in points], [analysis.matrix_top_sv(r) or np.nan for r in points])
    k = {"exponent": sign * fit["exponent"], "n": fit["n"],
         "ci": sorted([sign * fit["ci_low"], sign * fit["ci_high"]])}
    steady = [r for r in points if (record_taus(r) or 0) >= MIN_TAUS]
    fs = analysis.fit_power_law([x_of(r) for r in steady], [analysis.matrix_top_sv(r) or np.nan for r in steady])
    k["steady_exponent"] = sign * fs["exponent"]  # the same fit over the points at S >= 3 only
    k["steady_ci"] = sorted([sign * fs["ci_low"], sign * fs["ci_high"]])
    span = [x_of(r) for r in rows]
    return {**k, "points": rows, "span": max(span) / min(span) if span else None}


def law_range(records: list[dict], width: int = RANGE_WIDTH, etas=RANGE_ETAS, eta_lam: float = RANGE_ETA_LAM,
              lams=RANGE_LAMS, lam_etas=RANGE_LAM_ETAS) -> dict:
    """Over what range sigma_top ~ sqrt(eta/lam) holds: eta alone (at lam ``eta_lam``) and lam alone (at each eta
    of ``lam_etas``), under mup at one width.  Each sweep: exponent with CI (paper 0.5), local exponents between
    neighbours, and S = sum_t eta_t lam per point, so the table says where the exponent is ~0.5 and where not."""
    sel = {r["run_id"]: r for r in records if r["width"] == width and r["rule"] == "mup" and not r.get("diverged")
           and r.get("matrix_wd")}.values()  # one point per run, however often the caller lists it
    close = lambda a, b: math.isclose(a, b, rel_tol=1e-6)
    out = {"width": width, "sweeps": []}
    pts = [r for r in sel if close(r["wd"], eta_lam) and any(close(r["lr"], e) for e in etas)]
    if len({r["lr"] for r in pts}) >= 2:
        out["sweeps"].append({"vary": "eta", "at": eta_lam, **_sweep(pts, lambda r: r["matrix_lr"], 1.0)})
    for eta in lam_etas:
        pts = [r for r in sel if close(r["lr"], eta) and any(close(r["wd"], l) for l in lams)]
        if len({r["wd"] for r in pts}) >= 2:
            out["sweeps"].append({"vary": "lam", "at": eta, **_sweep(pts, lambda r: r["matrix_wd"], -1.0)})
    return out


# ---------------------------------------------------------------------------------------------------------
# The regimes: the Transformer reference studies beside the synthetic core and the paper (read, never trained)
# ---------------------------------------------------------------------------------------------------------
def _eta0(records: list[dict], manifest: dict | None = None) -> float | None:
    """The proxy's eta0 on the grid: the manifest's, else the seed-averaged minimum of the base width's mup runs
    (``study_regime``'s own default is the interpolated optimum, which matches no run's lr)."""
    if manifest and manifest.get("eta0"):
        return float(manifest["eta0"])
    from .study import proxy_optimum

    ok = [r for r in records if not r.get("diverged") and r.get("status", "done") == "done"]
    if not ok:
        return None
    base = min(r["base_width"] for r in ok)
    px = [r for r in ok if r["rule"] == "mup" and r["width"] == base]
    try:
        return proxy_optimum(px)["eta0"] if px else None
    except RuntimeError:
        return None


def _alpha_pooled(records: list[dict], eta0: float | None, lam0: float | None) -> dict | None:
    """alpha over every hidden matrix at once (sigma_top / sqrt(eta/lam) against width, every named rule's runs at
    (eta0, lam0), seeds pooled): the one number every study has, whatever its matrices are called."""
    if eta0 is None:
        return None
    close = lambda a, b: b is None or math.isclose(a, b, rel_tol=1e-6)
    xs, ys = [], []
    for r in records:
        if (close(r["lr"], eta0) and close(r["wd"], lam0) and r["rule"] != "fitted" and not r.get("diverged")
                and r.get("matrix_wd")):
            sv = analysis.matrix_top_sv(r)
            if sv:
                xs.append(r["width"])
                ys.append(sv / math.sqrt(r["matrix_lr"] / r["matrix_wd"]))
    f = analysis.fit_power_law(xs, ys, n_boot=400)
    return {"alpha": f["exponent"], "ci": [f["ci_low"], f["ci_high"]], "n": f["n"]}


def regime_study(records: list[dict], name: str, regime: str, manifest: dict | None = None) -> dict:
    from .regimes import study_regime

    eta0 = _eta0(records, manifest)
    s = study_regime(records, eta0=eta0, name=name, regime=regime)
    s["alpha_pooled"] = _alpha_pooled(records, eta0, s.get("lam0"))
    if manifest:
        s["machine"] = (manifest.get("machine") or {}).get("cpu")
        s["wall_seconds"] = manifest.get("wall_seconds")
    return s


def gallery_regimes(root=None) -> tuple[list[dict], list[str]]:
    """(studies, notes): the synthetic reference and the Transformer studies of both regimes, read-only from the
    gallery.  A missing study is one note saying how to build it; a damaged one, the gallery's own message."""
    from ..models import presets
    from ..core.errors import BadInput
    from .gallery import GalleryError, open_reference

    studies, notes = [], []
    for name, preset in (("synthetic-4w", "synthetic"),) + TF_STUDIES:
        try:
            ref = open_reference(name, root)
        except BadInput:
            if name.startswith("tf-"):
                notes.append(f"Transformer reference study {name} ({preset} preset) is missing from the gallery: "
                             f"build it with `python scripts/build_tf_gallery.py {name} --preset {preset}`; once shipped, "
                             f"`wdscale gallery reproduce {name} --out DIR` retrains it")
            continue
        except GalleryError as e:
            notes.append(str(e))
            continue
        studies.append(regime_study(ref.records(), name, presets.get(preset)["regime"], ref.manifest))
    return studies, notes


# ---------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------
# Table and CLI
# ---------------------------------------------------------------------------------------------------------
def _yn(v):
    return "-" if v is None else ("agrees" if v else "DIFFERS")


def format_table(res: dict, title: str) -> str:
    L = [f"## {title}", "",
         f"{res['n_runs']} runs ({res['n_diverged']} diverged); slowest hidden matrix reached "
         f"{res['min_steps_over_tau']:.1f} tau (steps * eta * lam)" + (
             "; below 3 tau: " + ", ".join(f"d={w} {rule} eta0 {lr:g} lam {wd:g} (S = {S:g})"
                                           for w, rule, lr, wd, S in res["short_runs"]) if res.get("short_runs")
             else "") if res.get("min_steps_over_tau") else "", "",
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


def _f(v, fmt="{:.2f}"):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def format_law_range(rng: dict) -> str:
    """The law's range: one row per sweep (fit over all points, and over the S >= 3 points), then the local
    exponents between neighbours with S at both ends."""
    from .verdict import MIN_TAUS

    L = [f"### Range of the sqrt(eta/lam) law (d={rng['width']}, mup; eta, lam = the matrix class's lr and torch "
         f"wd; S = sum_t eta_t*lam)", "",
         "| sweep | span | k (paper 0.5) | 95% CI | k over S >= 3 only | 95% CI | verdict |", "|---|---|---|---|---|---|---|"]
    name = lambda sw: (f"sigma_top ~ eta^k at lam {sw['at']:g}" if sw["vary"] == "eta"
                       else f"sigma_top ~ lam^-k at eta0 {sw['at']:g}")
    for sw in rng["sweeps"]:
        lo, hi = sw["ci"]
        L.append(f"| {name(sw)} ({sw['n']} runs) | {sw['span']:g}x | {_f(sw['exponent'], '{:.3f}')} | "
                 f"[{_f(lo)}, {_f(hi)}] | {_f(sw['steady_exponent'], '{:.3f}')} | "
                 f"[{_f(sw['steady_ci'][0])}, {_f(sw['steady_ci'][1])}] | "
                 f"{_yn(abs(sw['exponent'] - 0.5) <= TOLERANCE) if math.isfinite(sw['exponent']) else '-'} |")
    L += ["", "| sweep | from -> to (eta0, lam) | matrix eta/lam | S from -> to | local k | within 0.1 of 0.5 |",
          "|---|---|---|---|---|---|"]
    for sw in rng["sweeps"]:
        for a, b in zip(sw["points"], sw["points"][1:]):
            short = " (S < %g)" % MIN_TAUS if min(a["S"] or 0, b["S"] or 0) < MIN_TAUS else ""
            L.append(f"| {sw['vary']} | ({a['lr']:g}, {a['wd']:g}) -> ({b['lr']:g}, {b['wd']:g}) | "
                     f"{a['matrix_lr'] / a['matrix_wd']:.2g} -> {b['matrix_lr'] / b['matrix_wd']:.2g} | "
                     f"{_f(a['S'], '{:.1f}')} -> {_f(b['S'], '{:.1f}')}{short} | {_f(b.get('local'), '{:.3f}')} | "
                     f"{_yn(abs(b['local'] - 0.5) <= TOLERANCE) if b.get('local') is not None else '-'} |")
    return "\n".join(L)


def format_regimes(studies: list[dict], notes: list[str]) -> str:
    """The regimes side by side: one column per study, beside the paper's numbers (alpha = 0.75, lam ~ sqrt(d))."""
    L = ["## The regimes: alpha, drift and the best rule per study, beside the paper", ""]
    if studies:
        cols = ["paper (Fan et al.)"] + [s["name"] for s in studies]
        L += ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        row = lambda label, paper, cell: L.append(f"| {label} | {paper} | " + " | ".join(cell(s) for s in studies) + " |")
        row("regime", "LM pretraining, ~1 pass, warmup + decay", lambda s: s.get("regime") or "-")
        row("model; widths; seeds; runs", "LLaMA-style", lambda s: f"{s.get('model')}; "
            f"{'/'.join(map(str, s.get('widths', [])))}; {len(s.get('seeds', []))}; {s.get('n_runs')}")
        row("epochs over the training data", "~1", lambda s: _f(s.get("epochs"), "{:.2g}"))
        row("eta0, lam0 (proxy)", "-", lambda s: f"{_f(s.get('eta0'), '{:g}')}, {_f(s.get('lam0'), '{:g}')}")
        row("alpha, all hidden matrices pooled (95% CI)", f"{PAPER_ALPHA}", lambda s: (
            f"{_f(s['alpha_pooled']['alpha'])} [{_f(s['alpha_pooled']['ci'][0])}, {_f(s['alpha_pooled']['ci'][1])}]"
            if s.get("alpha_pooled") else "-"))
        row("lam exponent 2 alpha - 1 holding sigma_top flat (pooled)", "0.5", lambda s: _f(
            2 * s["alpha_pooled"]["alpha"] - 1 if s.get("alpha_pooled") else None))
        classes = []
        for s in studies:
            classes += [k for k in s.get("alpha", {}) if k not in classes]
        for k in classes:
            row(f"alpha, {k} (95% CI)", f"{PAPER_ALPHA}", lambda s, k=k: (
                f"{_f(s['alpha'][k]['alpha'])} [{_f(s['alpha'][k]['ci'][0])}, {_f(s['alpha'][k]['ci'][1])}]"
                if k in s.get("alpha", {}) else "-"))
        row("lam exponent 2 alpha - 1, mean over the classes", "0.5", lambda s: _f(
            float(np.nanmean([v["implied_lambda_exponent"] for v in s["alpha"].values()
                              if v["implied_lambda_exponent"] is not None])) if s.get("alpha") else None))
        rules = []
        for s in studies:
            rules += [k for k in s.get("rules", {}) if k not in rules]
        paper_drift = {"wd": "~0 (transfers)", "mup": "!= 0", "indep": "!= 0"}
        for k in rules:
            def cell(s, k=k):
                r = s.get("rules", {}).get(k)
                if not r:
                    return "-"
                b = f" (b = {r['b']:g})" if k == "fitted" and r.get("b") is not None else ""
                edge = f", edge at {r['on_edge']}" if r["on_edge"] else ""
                return f"{r['drift']:+.2f} [{_f(r['drift_ci'][0], '{:+.2f}')}, {_f(r['drift_ci'][1], '{:+.2f}')}]{b}{edge}"
            row(f"lr drift, rule {k} (oct./doubling, 95% CI)", paper_drift.get(k, "-"), cell)
        row("best named rule (smallest |drift|)", "wd (lam ~ sqrt(d))", lambda s: s.get("best_named_rule") or "-")
        row("fitted rule at least as good as the best named", "-", lambda s: "-" if not s.get("fitted") else
            ("yes" if s["fitted"]["at_least_as_good"] else "no"))
        row("smallest S = sum eta_t lam at an optimum", ">= 3", lambda s: _f(s.get("min_S_at_optima"), "{:.1f}"))

        def taus(s):
            vals = [a["tau_epochs"] for r in s.get("rules", {}).values() for a in r["at_optimum"].values()
                    if a.get("tau_epochs") is not None]
            return f"{min(vals):.2g} .. {max(vals):.2g}" if vals else "-"
        row("tau = 1/(eta lam) in epochs at the optima (range)", "-", taus)
        row("every optimum interior", "-", lambda s: "yes" if s.get("all_interior") else "no")
        row("machine; wall time", "-", lambda s: f"{s.get('machine') or 'this run'}; "
            + (f"{s['wall_seconds']:.0f} s" if s.get("wall_seconds") else "-"))
        L.append("")
        L += [f"- {s['name']}: {s['sentence']}" for s in studies if s.get("sentence")]
    L += [f"- {n}" for n in notes]
    return "\n".join(L)


def gallery_law_tables() -> tuple[dict, str]:
    """(laws, markdown): the measured law of every shipped reference study (``gallery.gallery_laws``), with a(t), b(t)
    where a study keeps spectra snapshots and a note where it keeps the final spectrum only."""
    from .gallery import gallery_laws
    from .law import format_law

    laws = gallery_laws()
    L = [format_law(laws)] if laws else ["(no reference study in the gallery: no law to fit)"]
    for name, law in laws.items():
        if law.get("over_time"):
            L += ["", f"a(t), b(t) of σ_top in {name} (all hidden matrices pooled; runs past S(t) ≥ 3 at each "
                      "snapshot):", "", "| step | a | 95% CI | b | 95% CI | runs | median S(t) |",
                  "|---|---|---|---|---|---|---|"]
            L += [f"| {o['step']} | {_f(o['a'])} | [{_f(o['a_ci'][0])}, {_f(o['a_ci'][1])}] | {_f(o['b'])} | "
                  f"[{_f(o['b_ci'][0])}, {_f(o['b_ci'][1])}] | {o['n']} | {_f(o['median_S'], '{:.1f}')} |"
                  for o in law["over_time"]]
        else:
            L.append(f"- {name} keeps the final spectrum only ({law.get('snapshots', 1)} snapshot): no a(t), b(t).")
    return laws, "\n".join(L)


_jsonable = _clean  # NaN/inf -> None, numpy scalars -> float: one implementation, in the store
