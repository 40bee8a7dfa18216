"""The lam-exponent scan (issue 32): which lam ~ d^q lets the proxy's eta0 transfer, and does sigma_top say so.

Why a scan: three named rules (mup q = 0, wd q = 1/2, indep q = 1) and "the least drift wins" hide both that the
drift may cross zero between or past them, and that in some regimes no q zeroes it.  Under mu-P's eta ~ 1/d (rule
``custom``, a = 1) the scan sets lam = lam0 * m^q on a q grid and reads two lines off the runs:

* drift(q): octaves the optimal eta0 moves per width doubling (``verdict.transfer_verdict``); where it is zero,
  q_drift*, the proxy's lr transfers;
* e(q): sigma_top's width exponent at the *fixed* rule lr eta0, seeds pooled (as ``study.top_sv_exponents``); where
  it is zero, q_sigma*, the sublayer gain is width-invariant.

The argument's mechanism, "keep sigma_top width-invariant and eta transfers", becomes a test: q_sigma* = q_drift*.
Both crossings get a bootstrap CI over seeds, resampled *jointly* (one seed draw for every q, width and line), so
their gap is a paired difference.  A line that does not cross inside the grid is reported with its side and edge
value, never extrapolated.  Everything is a pure function of records except ``scan_configs``, which builds configs.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from ..core.rules import rule_exponents
from ..training.store import _clean
from .analysis import (drift_octaves, fit_power_law, matrix_top_sv, optimum, run_loss, seed_mean,
                       seed_mean_curves)
from .law import class_matrices, fitted_exponent, sqrt_law_exponent
from .regimes import MIN_B_HAT, fitted_b, fitted_b_sqrt
from .verdict import DEFAULT_THRESHOLD, transfer_verdict

QS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
NAMED_Q = {"mup": 0.0, "wd": 0.5, "indep": 1.0}  # the named rules are points of the scan: its twins
MOONSHOT = 0.15  # a predictor within this of q_drift* in every regime would answer the question
LEVEL = 95.0
MIN_DISTINCT = 5  # distinct bootstrap values a percentile CI needs before it is read as one
nan = float("nan")


def twin_rule(q: float) -> str | None:
    """The named rule that *is* lam ~ d^q under eta ~ 1/d (mup, wd, indep), else None."""
    return next((r for r, t in NAMED_Q.items() if math.isclose(q, t, abs_tol=1e-9)), None)


def q_of(rec: dict) -> float | None:
    """The lam exponent q of a record under eta ~ 1/d: mup 0, wd 0.5, indep 1, custom with a = 1 its b; else None
    (sp scales no lr; the ``fitted`` rules are their own study's phase, reported apart)."""
    rule = rec.get("rule")
    if rule in NAMED_Q:
        return NAMED_Q[rule]
    if rule == "custom":
        a, b = rule_exponents("custom", rec.get("a"), rec.get("b"))
        return float(b) if a == 1.0 else None
    return None


def scan_configs(spec: dict, eta0: float, lam0: float, qs=QS, seeds=None, steps: int | None = None,
                 notes: list | None = None) -> list:
    """The scan's RunConfigs: for each q the study's transfer grid (``study.transfer_lrs``: the spec's
    ``lr_octaves`` around eta0, on the lr ladder) at the spec's widths, lam0 and ``seeds`` (default the spec's).

    q = 0, 1/2, 1 are emitted as ``mup``, ``wd``, ``indep``: the very runs (same run ids) of the named-rule phase, so
    the store's cache never trains them twice.  Other q are ``custom`` with a = 1, b = q (``study.fitted_configs``).
    A q whose lam makes some run unusable (per-step decay lr*wd >= 1) is left out; its reason goes to ``notes``."""
    from .study import fitted_configs, transfer_configs  # local: study pulls in the trainer (torch)

    d = dict(spec) if seeds is None else {**spec, "seeds": tuple(seeds)}
    out = []
    for q in qs:
        named = twin_rule(q)
        try:
            cs, why = (transfer_configs(eta0, lam0, steps, d, rules=[named]), None) if named else \
                fitted_configs(eta0, lam0, steps, d, "custom", float(q))
        except ValueError as e:  # a named rule's unusable run (fitted_configs catches its own)
            cs, why = [], f"{named} (q = {q:g}) not trained: {e}"
        out += cs
        if why and notes is not None:
            notes.append(why)
    return out


# -- the rows: one per q ----------------------------------------------------------------------------------------
def _by_q(records: list[dict]) -> dict:
    """{q: records}: finished runs with a q, each run id once (a twin stored by two phases is one run)."""
    seen, out = set(), defaultdict(list)
    for r in records:
        q, rid = q_of(r), r.get("run_id")
        if q is None or r.get("status", "done") != "done" or (rid is not None and rid in seen):
            continue
        seen.add(rid)
        out[round(q, 9)].append(r)
    return dict(sorted(out.items()))


def _at_eta0(recs: list[dict], eta0: float | None) -> list[dict]:
    return [r for r in recs if eta0 and math.isclose(r["lr"], eta0, rel_tol=1e-9) and not r.get("diverged")
            and r.get("top_sv") and r.get("param_class")]


def infer_eta0(records: list[dict]) -> float | None:
    """The grid lr nearest the base width's optimum (every q trains the same model there), as ``study_regime``
    does when it is not told eta0.  Pass the proxy's eta0 where it is known: the grid is built around it."""
    base = [r for r in records if q_of(r) is not None and r["width"] == r["base_width"]]
    curve = seed_mean_curves(base, "lr").get(base[0]["width"]) if base else None
    if not curve:
        return None
    xs, ls = seed_mean(curve)
    x = optimum(xs, [v if math.isfinite(v) else None for v in ls])["x_opt"]
    return min(xs, key=lambda v: abs(math.log(v / x))) if x else None


def scan_rows(records: list[dict], threshold: float = DEFAULT_THRESHOLD, eta0: float | None = None,
              n_boot: int = 400, boots: dict | None = None) -> list[dict]:
    """Per q: the drift of eta0* per doubling with its CI and verdict (``verdict.transfer_verdict``, threshold
    +-``threshold``); the drift per adjacent width pair (does it fade with width?), its CI from the joint seed
    bootstrap (``boots``, ``seed_boot``'s; none with one seed); and sigma_top's width exponent per matrix class and
    pooled (geometric mean over the hidden matrices) with CIs.

    sigma_top is read at the fixed rule lr eta0 (not at each width's optimum), seeds pooled, CI from a bootstrap
    over runs, as ``study.top_sv_exponents`` does: the scan's e(q) at q = 0, 1/2, 1 is the demo's number.
    ``eta0`` defaults to ``infer_eta0``."""
    eta0 = eta0 or infer_eta0(records)
    boots = boots if boots is not None else seed_boot(records, eta0, n_boot)
    rows = []
    for q, recs in _by_q(records).items():
        vs = [v for v in transfer_verdict(recs, "lr", threshold=threshold, n_boot=n_boot) if len(v["widths"]) >= 2]
        row = {"q": q, "rule": twin_rule(q) or "custom", "drift": nan, "drift_ci": [nan, nan], "verdict": None,
               "transfers": None, "optima": {}, "on_edge": [], "pair_drifts": [], "notes": []}
        if vs:
            v = max(vs, key=lambda v: len(v["widths"]))  # one group per q in a scan; more: the widest
            lo, hi = v["drift_ci"]
            row.update(drift=v["drift"], drift_ci=[lo, hi], verdict=v["verdict"], notes=v["notes"],
                       transfers=bool(-threshold <= lo and hi <= threshold) if math.isfinite(lo) else None,
                       optima={w: o["x_opt"] for w, o in v["optima"].items()},
                       on_edge=[w for w, o in v["optima"].items() if o["method"] in ("edge", "none")])
            ws = sorted(v["optima"])
            for w1, w2 in zip(ws, ws[1:]):
                pair = [drift_octaves({w: o[q].get(w) for w in (w1, w2)}) for o in boots["optima"]]
                pair = [x for x in pair if math.isfinite(x)]
                enough = pair and len(pair) >= len(boots["optima"]) // 2
                ci = [float(x) for x in np.percentile(pair, [2.5, 97.5])] if enough else [nan, nan]
                row["pair_drifts"].append({"widths": [w1, w2], "drift_ci": ci,
                                           "drift": drift_octaves({w: row["optima"][w] for w in (w1, w2)})})
        sel = _at_eta0(recs, eta0)
        per = {}
        for k, names in (class_matrices(sel[0]) if sel else {}).items():
            f = fit_power_law([r["width"] for r in sel], [matrix_top_sv(r, names) or nan for r in sel], n_boot=n_boot)
            per[k] = {"exponent": f["exponent"], "ci": [f["ci_low"], f["ci_high"]], "n": f["n"]}
        pooled = per.pop("pooled", {"exponent": nan, "ci": [nan, nan]})
        row.update(sigma_exponent=pooled["exponent"], sigma_exponent_ci=pooled["ci"], sigma_per_class=per)
        rows.append(row)
    return rows


# -- the seed bootstrap of both lines ---------------------------------------------------------------------------
def _curve(by_lr: dict, seeds: list) -> tuple[list, list]:
    """(lrs, seed-mean loss over ``seeds``, a multiset) as ``analysis.seed_mean``: one diverged seed makes it None."""
    xs, ls = [], []
    for x, by_seed in sorted(by_lr.items()):
        vals = [by_seed[s] for s in seeds if s in by_seed]
        if vals:
            xs.append(x)
            ls.append(float(np.mean(vals)) if all(math.isfinite(v) for v in vals) else None)
    return xs, ls


def seed_boot(records: list[dict], eta0: float | None, n_boot: int = 400, seed: int = 0) -> dict:
    """Both lines recomputed on bootstrap resamples of the seeds: {qs, seeds, drift: [[per q] per resample],
    sigma: [...], optima: [{q: {width: eta0*}} per resample]}.  One draw of seeds serves every q and width (a seed
    is one init everywhere), so the lines and their crossings stay paired.  With fewer than two seeds, no
    resamples: there is no spread over seeds to read."""
    by_q = _by_q(records)
    loss = {q: defaultdict(lambda: defaultdict(dict)) for q in by_q}
    for q, recs in by_q.items():
        for r in recs:
            v = run_loss(r)
            if not math.isnan(v):
                loss[q][r["width"]][float(r["lr"])][r["seed"]] = v
    sv = {q: [(r["width"], r["seed"], matrix_top_sv(r) or nan) for r in _at_eta0(recs, eta0)]
          for q, recs in by_q.items()}
    seeds = sorted({r["seed"] for recs in by_q.values() for r in recs})
    out = {"qs": list(by_q), "seeds": seeds, "drift": [], "sigma": [], "optima": []}
    if len(seeds) < 2:
        return out
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        pick = Counter(int(s) for s in rng.choice(seeds, len(seeds)))
        multi = [s for s, k in pick.items() for _ in range(k)]
        opt = {q: {w: optimum(*_curve(c, multi))["x_opt"] for w, c in loss[q].items()} for q in by_q}
        out["optima"].append(opt)
        out["drift"].append([drift_octaves(opt[q]) for q in by_q])
        pts = {q: [(w, v) for w, s, v in sv[q] for _ in range(pick[s])] for q in by_q}
        out["sigma"].append([fit_power_law([w for w, _ in pts[q]], [v for _, v in pts[q]], n_boot=0)["exponent"]
                             for q in by_q])
    return out


# -- crossings and the mechanism --------------------------------------------------------------------------------
def _zeros(pts: list[tuple]) -> list[float]:
    """Every q where the piecewise-linear line through the (q, value) points meets zero."""
    out = [q for q, v in pts[:1] if v == 0]
    for (q0, v0), (q1, v1) in zip(pts, pts[1:]):
        if v1 == 0 or v0 * v1 < 0:
            out.append(q1 if v1 == 0 else q0 + (q1 - q0) * v0 / (v0 - v1))
    return out


def _edge(pts: list[tuple]) -> tuple[float, float, bool]:
    """(q, value, upper) of the grid edge nearer zero: the side a crossing would lie past."""
    (q, v), upper = min(((pts[0], False), (pts[-1], True)), key=lambda e: abs(e[0][1]))
    return q, v, upper


def _pct(vals: list[float], level: float = LEVEL) -> list[float]:
    """Percentile CI by order statistics (no interpolation, so +-inf, 'past a grid edge', stays itself)."""
    s, a = sorted(vals), (1 - level / 100) / 2
    return [s[int(math.floor(a * (len(s) - 1)))], s[int(math.ceil((1 - a) * (len(s) - 1)))]]


def _points(qs, values) -> list[tuple]:
    return sorted((float(q), float(v)) for q, v in zip(qs, values) if v is not None and math.isfinite(v))


def _join(*notes) -> str | None:
    return "; ".join(n for n in notes if n) or None


def crossing(qs, values, boot_values=(), name: str = "the line", level: float = LEVEL) -> dict:
    """Where a line over the q grid crosses zero: linear interpolation between grid points, never past the grid.

    Returns {q, ci, reason, note, side, edge_q, edge_value, boots}.  q is None when the line does not cross inside
    the grid; ``reason`` then names the side and the value at that edge.  ``boots``: the crossing of each bootstrap
    line (+inf / -inf where it stays clear of zero, past the upper / lower edge); ``ci`` their percentiles (an
    infinite bound: the CI reaches past that edge).  Several crossings: the lowest, and ``note`` says so."""
    pts = _points(qs, values)
    out = dict.fromkeys(("q", "ci", "reason", "note", "side", "edge_q", "edge_value"), None) | {"boots": []}
    if len(pts) < 2:
        return {**out, "reason": f"{name}: fewer than two q with a value"}
    zs = _zeros(pts)
    if not zs:
        q, v, upper = _edge(pts)
        return {**out, "side": "above" if upper else "below", "edge_q": q, "edge_value": v,
                "reason": f"{name} stays {'positive' if v > 0 else 'negative'}: {v:+.2f} at q = {q:g}, the grid's "
                          f"{'upper' if upper else 'lower'} edge; no q in [{pts[0][0]:g}, {pts[-1][0]:g}] zeroes it "
                          "(not extrapolated)"}
    out["q"] = zs[0]
    if len(zs) > 1:
        out["note"] = (f"{name} crosses zero {len(zs)} times (q = {', '.join(f'{z:.2f}' for z in zs)}): the lowest "
                       "is reported; the line is flat within its noise there")
    for line in boot_values:
        bp = _points(qs, line)
        if len(bp) >= 2:
            bz = _zeros(bp)
            out["boots"].append(bz[0] if bz else (math.inf if _edge(bp)[2] else -math.inf))
    if len(out["boots"]) < max(2, len(boot_values) // 2):
        out["note"] = _join(out["note"], "no CI: fewer than two seeds to resample")
        return out
    out["ci"] = _pct(out["boots"], level)
    past = [e for b, e in zip(out["ci"], ("lower", "upper")) if math.isinf(b)]
    out["note"] = _join(out["note"], past and f"the CI reaches past the grid's {' and '.join(past)} edge")
    return out


def _q(c):
    return c.get("q") if isinstance(c, dict) else c


def mechanism(q_drift, q_sigma, boots, level: float = LEVEL) -> dict:
    """The argument as a test: "sigma_top matching predicts the lam that transfers" holds when the CI of
    q_drift* - q_sigma* contains 0, and fails, with the gap, when it does not.  {holds, gap, gap_ci, reason}.

    ``q_drift``, ``q_sigma``: ``crossing`` dicts (or plain numbers); ``boots``: paired (q_drift*, q_sigma*) per seed
    resample (``crossing``'s ``boots``).  Where one line does not cross inside the grid, the test still fails when
    the other crossing's CI lies wholly inside it: the gap is then bounded away from 0 (``_bounded_gap``)."""
    qd, qs_ = _q(q_drift), _q(q_sigma)
    out = {"holds": None, "gap": None, "gap_ci": None, "reason": None}
    if qd is None or qs_ is None:
        return {**out, **_bounded_gap(q_drift, q_sigma)}
    out["gap"] = qd - qs_
    gaps = [a - b for a, b in boots if not math.isnan(a - b)]  # both past the same edge: no gap to read
    if len(gaps) < max(2, len(boots) // 2):
        return {**out, "reason": "not testable: no CI of the gap (fewer than two seeds to resample)"}
    distinct = len({(round(a, 9), round(b, 9)) for a, b in boots if not math.isnan(a - b)})
    if distinct < MIN_DISTINCT:  # 2 seeds resample to 3 distinct draws: a percentile CI of 3 values means nothing
        return {**out, "reason": f"the seed bootstrap gives only {distinct} distinct draws (point gap "
                                 f"{out['gap']:+.2f}); train >= 3 seeds for a CI"}
    lo, hi = _pct(gaps, level)
    out.update(gap_ci=[lo, hi], holds=bool(lo <= 0 <= hi))
    head = f"q_drift* − q_σ* = {out['gap']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    out["reason"] = (f"{head} contains 0: matching σ_top predicts the λ that transfers here" if out["holds"] else
                     f"{head} excludes 0: matching σ_top does not give the λ that transfers; the steady-state gain "
                     "is not what sets the optimal lr here")
    return out


def _bounded_gap(q_drift, q_sigma) -> dict:
    """{holds, gap_ci, reason} when one crossing x lies past a grid edge E and the other, y, has a CI inside.

    x past the upper edge: x - y > E - y_hi; past the lower edge: x - y < E - y_lo.  When that bound excludes 0 the
    mechanism fails; the gap q_drift* - q_sigma* is x - y (x = q_drift*) or y - x."""
    miss, known, sign = (q_drift, q_sigma, 1) if _q(q_drift) is None else (q_sigma, q_drift, -1)
    name = "q_drift*" if sign == 1 else "q_σ*"
    ci = known.get("ci") if isinstance(known, dict) else None
    side, E = (miss.get("side"), miss.get("edge_q")) if isinstance(miss, dict) else (None, None)
    if _q(known) is None or not ci or side is None or not all(math.isfinite(c) for c in ci):
        return {"reason": f"not testable: {name} is not inside the grid"
                          + ("" if _q(known) is not None else ", nor is the other crossing")}
    bound = E - ci[1] if side == "above" else E - ci[0]
    if (side == "above") != (bound > 0):
        return {"reason": f"not testable: {name} lies past the grid's edge q = {E:g}, within reach of the other "
                          "crossing's CI"}
    lo, hi = (bound, math.inf) if side == "above" else (-math.inf, bound)
    return {"holds": False, "gap_ci": [lo, hi] if sign == 1 else [-hi, -lo],
            "reason": f"{name} lies past the grid's {'upper' if side == 'above' else 'lower'} edge (q = {E:g}) and the "
                      f"other crossing's CI lies inside: |q_drift* − q_σ*| > {abs(bound):.2f}, so matching σ_top "
                      "does not give the λ that transfers"}


# -- the predictors, scored; the recipe -------------------------------------------------------------------------
LABELS = {"paper_recipe": "paper's recipe 2α̂ − 1", "measured_law": "measured law e_mup / b̂",
          "constant_timescale": "constant timescale (ηλ fixed)", "lam_fixed": "λ fixed (Power Lines, fixed tokens)"}


def _pred(key: str, q: float | None, basis: str) -> dict:
    return {"predictor": key, "label": LABELS[key], "q": q, "basis": basis}


def _constant_preds(why: str = "no proxy records given") -> list[dict]:  # the measured two unknown (``why``)
    return [_pred("paper_recipe", None, why), _pred("measured_law", None, why),
            _pred("constant_timescale", 1.0, "tau = 1/(eta lam) fixed: Wang & Aitchison; Kosson et al."),
            _pred("lam_fixed", 0.0, "Bergsma et al. 2025 (Power Lines) at a fixed token budget")]


def predictors(proxy_records: list[dict], ensemble_2d0_records: list[dict], eta0: float | None = None,
               lam0: float | None = None, n_boot: int = 300) -> list[dict]:
    """Each predictor of q_drift*, from the cheapest runs only: the proxy's eta x lam grid at d0 and one mup ensemble
    at 2 d0 (at eta0, lam0; other widths are ignored).  [{predictor, label, q, basis}], q None where not measurable:

    * ``paper_recipe``: 2 alpha_hat - 1 = 2 e_mup (``regimes.fitted_b_sqrt``'s e_mup, unrounded);
    * ``measured_law``: e_mup / b_hat (``regimes.fitted_b``, b_hat on the proxy grid, unrounded);
    * ``constant_timescale``: q = 1; ``lam_fixed``: q = 0.
    (eta0, lam0) default to the proxy grid's seed-averaged minimum (``study.proxy_optimum``)."""
    if eta0 is None or lam0 is None:
        from .study import proxy_optimum  # local: study pulls in the trainer (torch)

        best = proxy_optimum(proxy_records)
        eta0, lam0 = eta0 or best["eta0"], lam0 or best["lam0"]
    d0 = min(r["width"] for r in proxy_records)
    mup = [r for r in list(proxy_records) + [r for r in ensemble_2d0_records if r["width"] == 2 * d0]
           if r["rule"] == "mup" and math.isclose(r["wd"], lam0, rel_tol=1e-9)]
    law, sq = fitted_b(mup, eta0, n_boot=n_boot, proxy=proxy_records), fitted_b_sqrt(mup, eta0, n_boot=n_boot)
    why = f"not measurable from mup at η0 = {eta0:g} at d0 = {d0} and {2 * d0}"
    out = _constant_preds(why)
    if sq:
        out[0] = _pred("paper_recipe", sqrt_law_exponent(sq["e_mup"]), f"e_mup = {sq['e_mup']:+.3f} (d0, 2 d0, mup)")
    if law:
        out[1] = _pred("measured_law", fitted_exponent(law["e_mup"], law["b_hat"]),
                       f"e_mup = {law['e_mup']:+.3f}, b̂ = {law['b_hat']:.3f} (proxy grid)")
    else:
        out[1]["basis"] = why + f", or b̂ < {MIN_B_HAT:g} on the proxy grid"
    return out


def scoreboard(preds: list[dict], q_drift) -> list[dict]:
    """One row per predictor: {predictor, label, q, error}, error = q - q_drift* (None without either)."""
    qd = _q(q_drift)
    return [{"predictor": p["predictor"], "label": p.get("label", p["predictor"]), "q": p["q"],
             "error": (p["q"] - qd) if p["q"] is not None and qd is not None else None} for p in preds]


def recipe(eta0: float, lam0: float, d0: int, target_width: int, q: float | None, q_ci=None,
           max_width: int | None = None) -> dict:
    """The hidden matrices' (eta, lam) at width D: eta = eta0 * d0 / D, lam = lam0 * (D/d0)^q, and the lam band q's
    CI gives (an open CI bound: None).  The other classes follow rules.py's mu-P table.  ``extrapolates`` when D is
    past ``max_width``, the widest width measured (or when that is not given)."""
    m = target_width / d0
    eta = eta0 * d0 / target_width
    lam = lam0 * m ** q if q is not None else None
    band = None
    if q is not None and q_ci:
        ends = [lam0 * m ** b if b is not None and math.isfinite(b) else None for b in q_ci]
        band = sorted(ends) if None not in ends else (ends if m >= 1 else ends[::-1])
    ext = max_width is None or target_width > max_width
    s = f"At width {target_width}: η = η0·d0/D = {eta0:.4g}·{d0}/{target_width} = {eta:.4g}"
    if lam is None:
        s += " for the hidden matrices; no λ exponent in the scanned grid lets η0 transfer: no λ to recommend."
    else:
        b = f" [λ {' to '.join('open' if x is None else f'{x:.4g}' for x in band)} over q_drift*'s CI]" if band else ""
        s += (f" and λ = λ0·(D/d0)^q_drift* = {lam0:g}·({target_width}/{d0})^{q:.2f} = {lam:.4g}{b} for the hidden "
              "matrices; gains keep η0 with λ = 0, the embedding and readout η0 and λ0.")
    if ext:
        s += (f" This extrapolates beyond the widths measured{f' (up to {max_width})' if max_width else ''}: q was "
              "measured there, and the drift per doubling can change with width.")
    return {"target_width": target_width, "base_width": d0, "eta": eta, "lam": lam, "lam_band": band, "q": q,
            "q_ci": q_ci, "extrapolates": ext, "sentence": s}


# -- the summary ------------------------------------------------------------------------------------------------
def scan_summary(records: list[dict], eta0: float | None = None, threshold: float = DEFAULT_THRESHOLD,
                 preds: list[dict] | None = None, proxy_records: list[dict] | None = None, lam0: float | None = None,
                 target_width: int | None = None, n_boot: int = 400, seed: int = 0) -> dict:
    """The scan's JSON: both crossings with CIs (null outside the grid, the reason beside), the rows, the
    mechanism verdict and the predictors' scoreboard (``preds``; else ``predictors(proxy_records, the scan's 2 d0
    runs)``; else the two constant predictors only); the recipe at ``target_width`` when lam0 is given."""
    eta0 = eta0 or infer_eta0(records)
    boots = seed_boot(records, eta0, n_boot, seed)
    rows = scan_rows(records, threshold, eta0, n_boot, boots)
    qs = [r["q"] for r in rows]
    cd = crossing(qs, [r["drift"] for r in rows], boots["drift"], "drift")
    cs = crossing(qs, [r["sigma_exponent"] for r in rows], boots["sigma"], "σ_top's width exponent")
    mech = mechanism(cd, cs, list(zip(cd["boots"], cs["boots"])))
    ok = _points(qs, [r["drift"] for r in rows])
    if cs["q"] is not None and len(ok) >= 2:  # what matching sigma_top leaves behind
        mech["drift_at_q_sigma"] = float(np.interp(cs["q"], *zip(*ok)))
    base = min((r["base_width"] for r in records if q_of(r) is not None), default=None)
    if preds is None and proxy_records:
        preds = predictors(proxy_records, [r for r in records if base and r["width"] == 2 * base], eta0, lam0)
    board = scoreboard(preds or _constant_preds(), cd)
    scored = [b for b in board if b["error"] is not None]
    best = min(scored, key=lambda b: abs(b["error"]), default=None)
    out = {"eta0": eta0, "lam0": lam0, "base_width": base, "threshold": threshold,
           "widths": sorted({r["width"] for r in records if q_of(r) is not None}), "seeds": boots["seeds"],
           "qs": qs, "q_drift": cd["q"], "q_drift_ci": cd["ci"], "q_drift_reason": cd["reason"],
           "q_drift_note": cd["note"], "q_sigma": cs["q"], "q_sigma_ci": cs["ci"], "q_sigma_reason": cs["reason"],
           "q_sigma_note": cs["note"], "rows": rows, "mechanism": mech, "scoreboard": board,
           "closest": best["predictor"] if best else None,
           "within_moonshot": [b["predictor"] for b in scored if abs(b["error"]) <= MOONSHOT],
           "named_transfer": [r["rule"] for r in rows if r["rule"] != "custom" and r["transfers"]]}
    if target_width and lam0 and base:
        out["recipe"] = recipe(eta0, lam0, base, target_width, cd["q"], cd["ci"], max(out["widths"]))
    return _clean(out)


def format_scan(s: dict) -> str:
    """``scan_summary`` as plain text for the CLI: the rows, both crossings, the mechanism, the scoreboard."""
    def _f(x, fmt: str = "+.2f") -> str:
        return "-" if x is None else format(x, fmt)

    def _ci(c) -> str:  # a None bound: the CI reaches past the grid's edge there
        return "" if not c else f"[{_f(c[0])}, {_f(c[1])}]"
    lines = [f"λ ∝ d^q scan under η ∝ 1/d: η0 = {_f(s['eta0'], '.3g')}, widths {s['widths']}, seeds "
             f"{s['seeds']}",
             f"{'q':>5} {'rule':7} {'drift (oct/doubling)':>21} {'95% CI':>16} {'σ_top ∝ d^':>11} {'95% CI':>16}  "
             "drift per width pair"]
    for r in s["rows"]:
        pairs = "; ".join(f"{p['widths'][0]}→{p['widths'][1]}: {_f(p['drift'])}" for p in r["pair_drifts"])
        lines.append(f"{r['q']:>5g} {r['rule']:7} {_f(r['drift']):>21} {_ci(r['drift_ci']):>16} "
                     f"{_f(r['sigma_exponent']):>11} {_ci(r['sigma_exponent_ci']):>16}  {pairs}")
    for key, what in (("q_drift", "q_drift* (the drift is zero: η0 transfers)"),
                      ("q_sigma", "q_σ* (σ_top is width-invariant)")):
        v = s[key]
        lines.append(f"{what}: " + (f"{v:.2f} {_ci(s[key + '_ci'])}" if v is not None else s[key + "_reason"])
                     + (f" ({s[key + '_note']})" if s.get(key + "_note") else ""))
    m = s["mechanism"]
    lines.append(f"mechanism (σ_top matching predicts the λ that transfers): "
                 f"{ {True: 'HOLDS', False: 'FAILS', None: 'UNTESTED'}[m['holds']]}: {m['reason']}"
                 + (f"; at q_σ* the drift is {m['drift_at_q_sigma']:+.2f}" if m.get("drift_at_q_sigma") is not None
                    else ""))
    if not s["named_transfer"] and any(r["rule"] != "custom" for r in s["rows"]):
        lines.append(f"no named rule transfers here (no drift CI of mup, wd, indep inside ±{s['threshold']:g})")
    lines.append("predictors of q_drift* (from the d0 grid and one 2·d0 ensemble):")
    lines += [f"  {b['label']:36} q = {_f(b['q'], '.2f'):>5}   error {_f(b['error'])}" for b in s["scoreboard"]]
    if s["closest"]:
        near = s["within_moonshot"]
        lines.append(f"closest: {s['closest']}; " + (f"within ±{MOONSHOT:g}: {', '.join(near)}" if near
                                                       else f"none within ±{MOONSHOT:g}"))
    if s.get("recipe"):
        lines.append(s["recipe"]["sentence"])
    return "\n".join(lines)
