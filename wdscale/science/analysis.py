"""Analysis of stored runs: power-law fits with bootstrap CIs, LR optima, drift, rescaled spectra.

Everything here works on plain records (the dicts the store keeps and ``sweep --json`` prints) and numpy
arrays, so pages, ``wdscale validate`` and ``wdscale report`` share one implementation.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..core.rules import rule_exponents
from ..core.theory import implied_wd_exponent


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def fit_power_law(x, y, n_boot: int = 500, seed: int = 0) -> dict:
    """Fit y = c * x^k by least squares in log-log; 95% CI of k from a bootstrap over the points."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly = np.log(x[ok]), np.log(y[ok])
    n = int(ok.sum())
    out = {"exponent": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "prefactor": float("nan"),
           "n": n}
    if n < 2 or np.ptp(lx) == 0:
        return out
    k, c = np.polyfit(lx, ly, 1)
    out.update(exponent=float(k), prefactor=float(np.exp(c)))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if np.ptp(lx[idx]) == 0:
            continue
        boots.append(np.polyfit(lx[idx], ly[idx], 1)[0])
    if boots:
        out["ci_low"], out["ci_high"] = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
    return out


def optimum(xs, losses) -> dict:
    """Optimal x of a loss curve, interpolated in log x.

    A parabola through the grid minimum and its two neighbours (in log x) gives the vertex when the minimum is
    interior and the parabola convex; otherwise the grid point (``method`` says which: quadratic, edge, grid,
    none).  None/NaN/inf losses are diverged runs and are ignored."""
    pts = sorted((float(x), float(l)) for x, l in zip(xs, losses) if _finite(l) and x and x > 0)
    if not pts:
        return {"x_opt": None, "loss_opt": None, "method": "none", "i_min": None}
    lx = np.log([p[0] for p in pts])
    ly = np.array([p[1] for p in pts])
    i = int(np.argmin(ly))
    res = {"x_opt": pts[i][0], "loss_opt": float(ly[i]), "method": "grid", "i_min": i}
    if len(pts) >= 2 and i in (0, len(pts) - 1):
        res["method"] = "edge"  # the true optimum may lie outside the grid
        return res
    if len(pts) >= 3:
        a, b, c = np.polyfit(lx[i - 1:i + 2], ly[i - 1:i + 2], 2)
        if a > 0:
            v = float(np.clip(-b / (2 * a), lx[i - 1], lx[i + 1]))
            res.update(x_opt=float(np.exp(v)), loss_opt=float(a * v * v + b * v + c), method="quadratic")
    return res


def interp_loss(xs, losses, x: float) -> float:
    """Loss at x, linearly interpolated in log x between grid points (inf outside the grid or if diverged)."""
    pts = sorted((float(a), float(l) if _finite(l) else math.inf) for a, l in zip(xs, losses))
    if not pts or x < pts[0][0] * (1 - 1e-9) or x > pts[-1][0] * (1 + 1e-9):
        return math.inf
    for (x0, l0), (x1, l1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            if x1 == x0:
                return l0
            w = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return (1 - w) * l0 + w * l1 if math.isfinite(l0) and math.isfinite(l1) else math.inf
    return pts[0][1]


def run_loss(rec: dict, step: int | None = None) -> float:
    """The one definition of a run's metric: its validation loss (final, or the eval at ``step``).

    +inf once the run has diverged (a diverged run is an unsafe lr, not a missing point); a run that diverged
    *after* ``step`` keeps its eval at ``step``.  NaN when the record has no value there."""
    ds = rec.get("diverged_step")
    if rec.get("diverged") and (step is None or ds is None or ds < step):
        return math.inf
    v = rec.get("final_loss") if step is None else (rec.get("evals") or {}).get(str(step))
    if v is None:
        return math.nan
    v = float(v)
    return v if math.isfinite(v) else math.inf


def record_loss(rec: dict, step: int | None = None):
    """``run_loss`` for plots: None where the run diverged or has no value."""
    v = run_loss(rec, step)
    return v if math.isfinite(v) else None


def seed_mean_curves(records: list[dict], param: str = "lr", step: int | None = None,
                     metric: str = "final_loss") -> dict:
    """{width: {x: [loss per seed]}} of one group of runs; ``seed_mean`` turns it into a curve.

    Seeds are averaged *before* any optimum is taken (everywhere: plots' stars, verdicts, the demo), so the
    optimum is that of the expected loss curve, not of the luckiest seed."""
    by = defaultdict(lambda: defaultdict(list))
    for r in records:
        v = run_loss(r, step) if metric == "final_loss" else r.get(metric)
        v = math.inf if v is None else float(v)
        if math.isnan(v):
            continue
        by[r["width"]][float(r[param])].append(v)
    return {w: dict(sorted(d.items())) for w, d in sorted(by.items())}


def seed_mean(curve: dict) -> tuple[list, list]:
    """(xs, mean loss over seeds); one diverged seed makes that x +inf (an lr that can blow up is unsafe)."""
    xs = list(curve)
    return xs, [float(np.mean(v)) if all(math.isfinite(u) for u in v) else math.inf for v in curve.values()]


def lr_optima(records: list[dict], metric: str = "final_loss", step: int | None = None,
              param: str = "lr") -> dict:
    """{(rule, other): {width: optimum dict}} where ``other`` is the fixed wd (param='lr') or lr (param='wd').

    Seeds are averaged first (``seed_mean_curves``); ``n`` is the number of runs behind each curve."""
    other = "wd" if param == "lr" else "lr"
    groups: dict = defaultdict(list)
    for r in records:
        groups[(r["rule"], r[other])].append(r)
    out = {}
    for key in sorted(groups, key=lambda k: (k[0], k[1])):
        curves = seed_mean_curves(groups[key], param, step, metric)
        out[key] = {}
        for w, curve in curves.items():
            xs, ls = seed_mean(curve)
            out[key][w] = {**optimum(xs, [l if math.isfinite(l) else None for l in ls]),
                           "n": sum(len(v) for v in curve.values())}
    return out


def drift_ci(curves: dict, n_boot: int = 400, seed: int = 0, level: float = 95.0) -> tuple[float, float]:
    """Bootstrap CI of the optimum's drift (octaves per width doubling) from ``seed_mean_curves`` output.

    With >= 2 seeds, seeds are resampled (per width, with replacement) and the seed-mean curve refitted.  With one
    seed, the noise of the loss curve is resampled instead: Gaussian noise with the std read off the curve's
    second differences (their spread, not their mean, so a smooth curvature counts as no noise)."""
    rng = np.random.default_rng(seed)
    widths = list(curves)
    n_seeds = min(min(len(v) for v in c.values()) for c in curves.values()) if curves else 0
    if len(widths) < 2 or n_seeds == 0:
        return float("nan"), float("nan")
    noise = {}
    if n_seeds == 1:
        for w, c in curves.items():
            y = np.array([v[0] for v in c.values()], float)
            y = y[np.isfinite(y)]
            d2 = np.diff(y, 2) if len(y) >= 4 else np.zeros(1)
            noise[w] = float(np.std(d2) / math.sqrt(6))
    drifts = []
    for _ in range(n_boot):
        opt = {}
        for w, c in curves.items():
            xs = list(c)
            if n_seeds >= 2:
                ls = []
                for v in c.values():
                    pick = [v[i] for i in rng.integers(0, len(v), len(v))]
                    ls.append(float(np.mean(pick)) if all(math.isfinite(u) for u in pick) else math.inf)
            else:
                ls = [v[0] + noise[w] * rng.standard_normal() if math.isfinite(v[0]) else math.inf
                      for v in c.values()]
            o = optimum(xs, [l if math.isfinite(l) else None for l in ls])
            opt[w] = o["x_opt"]
        d = drift_octaves(opt)
        if math.isfinite(d):
            drifts.append(d)
    if len(drifts) < n_boot // 2:
        return float("nan"), float("nan")
    lo, hi = np.percentile(drifts, [(100 - level) / 2, 100 - (100 - level) / 2])
    return float(lo), float(hi)


def default_setting(records: list[dict], rule: str) -> tuple[float, float] | None:
    """(lr, wd) of ``rule`` that covers the most widths (ties: the middle lr, then the middle wd), so a page
    opens on a setting whose spectra exist at every width."""
    by = defaultdict(set)
    for r in records:
        if r["rule"] == rule:
            by[(r["lr"], r["wd"])].add(r["width"])
    if not by:
        return None
    most = max(len(ws) for ws in by.values())
    best = sorted(k for k, ws in by.items() if len(ws) == most)
    return best[len(best) // 2]


def swept(records: list[dict], param: str = "lr", min_values: int = 3) -> list[dict]:
    """The records whose curve over ``param`` (same rule, width and other hyper-parameter) has at least
    ``min_values`` grid points: a single point is not a curve and has no optimum to mark."""
    other = "wd" if param == "lr" else "lr"
    by = defaultdict(set)
    for r in records:
        by[(r["rule"], r["width"], r[other])].add(r[param])
    return [r for r in records if len(by[(r["rule"], r["width"], r[other])]) >= min_values]


def drift_octaves(opt_by_width: dict) -> float:
    """Octaves the optimum moves per doubling of width: slope of log2(x_opt) against log2(width)."""
    pts = [(w, o) for w, o in opt_by_width.items() if o]
    if len(pts) < 2:
        return float("nan")
    w = np.log2([p[0] for p in pts])
    x = np.log2([p[1] for p in pts])
    if np.ptp(w) == 0:
        return float("nan")
    return float(np.polyfit(w, x, 1)[0])


def matrix_top_sv(rec: dict, params=None) -> float | None:
    """Geometric mean of sigma_top over the hidden matrices of a run (or over ``params``)."""
    names = params or [n for n, c in rec["param_class"].items() if c == "matrix"]
    vals = [rec["top_sv"].get(n) for n in names]
    vals = [v for v in vals if _finite(v) and v > 0]
    return float(np.exp(np.mean(np.log(vals)))) if vals else None


def width_exponents(records: list[dict], params=None, n_boot: int = 500) -> list[dict]:
    """sigma_top vs width per (rule, lr, wd): measured exponent with CI, and what it implies.

    With the rule's scaling eta ~ m^-a, lam ~ m^b and sigma_top ~ sqrt(eta/lam) d^alpha, the measured exponent is
    alpha - (a + b)/2, so alpha = exponent + (a + b)/2 and the lam exponent that would hold sigma_top fixed under
    eta ~ 1/d is 2 alpha - 1 (Fan et al.: alpha = 0.75 -> lam ~ sqrt(d))."""
    groups = defaultdict(list)
    for r in records:
        if r.get("diverged"):
            continue
        groups[(r["rule"], r["lr"], r["wd"], r.get("a"), r.get("b"))].append(r)
    out = []
    for (rule, lr, wd, a, b), recs in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        ws = [r["width"] for r in recs]
        if len(set(ws)) < 2:
            continue
        sv = [matrix_top_sv(r, params) for r in recs]
        fit = fit_power_law(ws, [s if s is not None else np.nan for s in sv], n_boot=n_boot)
        ea, eb = rule_exponents(rule, a, b)
        alpha = fit["exponent"] + (ea + eb) / 2
        out.append({"rule": rule, "lr": lr, "wd": wd, **fit, "alpha": alpha,
                    "implied_lambda_exponent": implied_wd_exponent(alpha), "widths": sorted(set(ws))})
    return out


def eta_lam_exponent(records: list[dict], params=None, n_boot: int = 500) -> list[dict]:
    """sigma_top vs the matrix class's eta/lam at fixed width (paper: exponent 0.5)."""
    by_w = defaultdict(list)
    for r in records:
        if not r.get("diverged") and r.get("matrix_wd"):
            by_w[r["width"]].append(r)
    out = []
    for w, recs in sorted(by_w.items()):
        x = [r["matrix_lr"] / r["matrix_wd"] for r in recs]
        if len(set(x)) < 2:
            continue
        y = [matrix_top_sv(r, params) or np.nan for r in recs]
        out.append({"width": w, **fit_power_law(x, y, n_boot=n_boot)})
    return out


def rescaled(sv, eta: float, lam: float, width: int):
    """(rank/d, sigma/sqrt(eta/lam)): the coordinates in which spectra of all widths and (eta, lam) collapse."""
    sv = np.asarray(sv, float)
    if lam <= 0:
        raise ValueError("rescaling by sqrt(eta/lam) needs lam > 0")
    return np.arange(1, sv.shape[-1] + 1) / width, sv / math.sqrt(eta / lam)


def final_spectrum_curves(records: list[dict], spectra: dict, param: str) -> tuple[list, list, list]:
    """(raw, rescaled, normalized) curves of the final spectrum of matrix ``param``, one per run.

    raw: sigma_i vs rank i; rescaled: sigma/sqrt(eta/lam) vs rank/d with the *class's* eta, lam at its width (where the
    paper says every width and (eta, lam) collapse); normalized: sigma/sigma_top vs rank/d (the shape).  d is the
    matrix's smaller dimension, the number of singular values.  Runs without that matrix are skipped."""
    raw, resc, norm = [], [], []
    for r in records:
        sv = (spectra.get(r["run_id"]) or {}).get(param)
        if sv is None:
            continue
        final = np.asarray(sv)[-1]
        cls = r["param_class"][param]
        eta, lam = r["groups"][cls]["lr"], r["groups"][cls]["wd"]
        name, w = f"d={r['width']}", r["width"]
        raw.append({"name": name, "x": np.arange(1, len(final) + 1), "y": final, "width": w})
        norm.append({"name": name, "x": np.arange(1, len(final) + 1) / len(final), "y": final / final[0], "width": w})
        if lam > 0:
            xr, yr = rescaled(final, eta, lam, len(final))
            resc.append({"name": f"{name} (η={eta:.3g}, λ={lam:.3g})", "x": xr, "y": yr, "width": w})
    return raw, resc, norm


def norm_rows(records: list[dict], norms: dict) -> list[dict]:
    """Measured ||W||_F of each decayed matrix next to AdamW's steady-state prediction sqrt(eta N / (2 lam)), with the
    class's own eta and lam at its width.  ``norms``: {run_id: {param: (fro, n_entries)}}."""
    from ..core.theory import equilibrium_fro

    rows = []
    for r in records:
        for p, (fro, n) in (norms.get(r["run_id"]) or {}).items():
            cls = r["param_class"].get(p)
            g = r["groups"].get(cls) or {}
            if not g or not g.get("wd"):
                continue  # no decay, no equilibrium to compare with
            rows.append({"rule": r["rule"], "width": r["width"], "param": p, "class": cls, "measured": fro,
                         "predicted": float(equilibrium_fro(g["lr"], g["wd"], n)),
                         "steps_over_tau": g.get("steps_over_tau"), "run_id": r["run_id"]})
    return rows


def median_norm_ratio(rows: list[dict], min_taus: float = 3.0) -> float | None:
    """Median measured/predicted ||W||_F over the rows of runs >= min_taus tau (None when there are none)."""
    ratio = [r["measured"] / r["predicted"] for r in rows if (r["steps_over_tau"] or 0) >= min_taus]
    return float(np.median(ratio)) if ratio else None


def collapse_metric(curves, n_grid: int = 50) -> float:
    """How well curves (x, y) collapse: mean over a common x grid of the std of log y across curves.

    0 is a perfect collapse; 0.1 means the curves differ by ~10% at a typical x.  Uses the x range every curve
    covers; NaN when fewer than two curves overlap."""
    curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x) > 1]
    if len(curves) < 2:
        return float("nan")
    lo = max(c[0].min() for c in curves)
    hi = min(c[0].max() for c in curves)
    if hi <= lo:
        return float("nan")
    grid = np.linspace(lo, hi, n_grid)
    logs = []
    for x, y in curves:
        order = np.argsort(x)
        logs.append(np.log(np.clip(np.interp(grid, x[order], y[order]), 1e-30, None)))
    return float(np.mean(np.std(np.vstack(logs), axis=0)))
