"""Verdicts: is a run long enough to be steady-state evidence, does the LR (or lambda) transfer across widths.

A run shorter than ``MIN_TAUS`` timescales tau = 1/(lr*wd) for a matrix class has not reached the AdamW
steady state, so its spectra and transfer curves say little about the weight-decay rule.  "Steps in tau" is the
accumulated decay S = sum_t eta_t * lam (torch's AdamW decays by eta_t * lam per step): under an lr schedule
(warmup, cosine) it is less than steps * eta * lam, and S is what every verdict counts.

The steady-state gate sits at the *optima*: a study passes it when, at every width, S at the optimal lr (from
the grid point nearest the optimum, scaled: S is proportional to lr * wd) is >= MIN_TAUS.  A grid's lowest lr
may well stop short of steady state; that run only shapes the curve, the rule is judged where it is best.

The transfer verdict reads a stored sweep (records as ``RunStore.records()`` returns them):

* the optimal lr per width (``analysis.optimum``: parabola in log lr through the grid minimum, grid point as
  fallback; diverged runs are excluded from the fit),
* its drift in octaves per doubling of width (``analysis.drift_octaves``; 0 = perfect transfer),
* the regret of transferring: loss at each width when trained at the proxy's (smallest width's) optimal lr,
  read off the width's loss curve by linear interpolation in log lr, minus that width's best measured loss,
* a 95% bootstrap CI of the drift: over seeds (seeds are averaged before any optimum is taken), or over the
  loss curve's noise when there is one seed (``analysis.drift_ci``),
* PASS ("transfers") only when the whole CI lies within +-threshold (and max regret <= regret_threshold, if
  given); FAIL when the whole CI lies outside; INCONCLUSIVE when the CI straddles the threshold, an optimum sits
  on the edge of the grid (the true optimum may lie outside it), or a run stopped before MIN_TAUS tau.

``compare_rules`` ranks the rules of one study by |drift| (then regret) and names the best one in a sentence;
the ranking is inconclusive when the best rule's CI overlaps the runner-up's.  Where no named rule's drift CI lies
inside the threshold, the sentence opens with "No named rule transfers here" before it names the least drift.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

MIN_TAUS = 3.0
DEFAULT_THRESHOLD = 0.25  # octaves of optimum per doubling of width
HORIZON_FRACTIONS = (0.25, 0.5, 1.0)


def horizon_warnings(res, steps: int | None, min_taus: float = MIN_TAUS, lr_sum: float | None = None) -> list[str]:
    """One message per matrix class whose planned steps are < min_taus * tau (empty when steps is None).

    ``lr_sum``: the schedule's sum_t s_t (``RunConfig.lr_sum``); None counts a constant lr."""
    if steps is None:
        return []
    out = []
    for cls, row in res.table(steps, lr_sum=lr_sum).items():
        if cls != "matrix":
            continue
        if row["steps_over_tau"] < min_taus:
            tau = "inf (no decay)" if math.isinf(row["tau"]) else f"{row['tau']:.0f}"
            out.append(f"{cls}: {steps} steps = {row['steps_over_tau']:.2g} tau (S = sum of lr_t*wd; tau = 1/(lr*wd) = {tau} steps) "
                       f"< {min_taus:g} tau: not yet steady state, spectra and transfer are not steady-state evidence")
    return out


def sweep_horizon_warnings(configs, min_taus: float = MIN_TAUS) -> list[str]:
    """Horizon warnings for a whole grid, one line per rule (not one per run): how many of its runs stop
    before min_taus * tau of the matrix class, and the shortest one."""
    short: dict[str, list] = defaultdict(list)
    total: dict[str, int] = defaultdict(int)
    for c in configs:
        total[c.rule] += 1
        row = c.decay_table()["matrix"]
        if row["steps_over_tau"] < min_taus:
            short[c.rule].append((row["steps_over_tau"], c))
    out = []
    for rule, lst in short.items():
        n_tau, c = min(lst, key=lambda t: t[0])
        out.append(f"rule {rule}: {len(lst)} of {total[rule]} runs stop before {min_taus:g} tau of the matrix class "
                   f"(tau = 1/(lr*wd)); shortest: width {c.width}, lr {c.lr:g}, wd {c.wd:g}, {c.steps} steps = "
                   f"{n_tau:.2g} tau. Not yet steady state: raise --steps or --wds for steady-state evidence.")
    return out


def record_taus(rec: dict) -> float | None:
    """S = sum_t eta_t * lam of a stored run's matrix class, the schedule counted (None when the record does not
    say).  Recomputed from the record's config, so runs stored before S knew the schedule read right too."""
    from ..models.config import schedule_sum

    lr, wd = rec.get("matrix_lr"), rec.get("matrix_wd")
    if lr is not None and wd is not None and rec.get("steps") and rec.get("base_width"):
        m = rec["width"] / rec["base_width"]
        return float(lr * wd * schedule_sum(rec.get("schedule") or "constant", float(rec.get("warmup") or 0.0),
                                            int(rec["steps"]), m))
    row = (rec.get("groups") or {}).get("matrix") or {}
    v = row.get("steps_over_tau")
    return float(v) if v is not None else None


def taus_at_optimum(recs: list[dict], param: str, x_opt: float | None) -> float | None:
    """S at ``x_opt`` of one width's records: the nearest grid point's S, scaled by x_opt / x (S ~ lr * wd)."""
    pts = [(r[param], record_taus(r)) for r in recs if r.get(param) and record_taus(r) is not None]
    if x_opt is None or not pts or not (x_opt > 0):
        return None
    x, t = min(pts, key=lambda p: abs(math.log(p[0] / x_opt)))
    return t * x_opt / x


# ---------------------------------------------------------------------------------------------------------
# Transfer verdict
# ---------------------------------------------------------------------------------------------------------
def _config_fields() -> list[str]:
    from ..models.config import RunConfig

    return [f.name for f in dataclasses.fields(RunConfig)]


def nearest_eval_step(rec: dict, fraction: float) -> int | None:
    """The recorded eval step closest to fraction * steps."""
    steps = [int(s) for s in (rec.get("evals") or {})]
    if not steps:
        return None
    target = fraction * rec["steps"]
    return min(steps, key=lambda s: (abs(s - target), s))


def _groups(records: list[dict], param: str) -> dict:
    """Records grouped by everything in the run config except width, the swept param and the seeds.

    So a sweep with several wds gives one lr verdict per wd (and per rule, model, steps, schedule, ...)."""
    skip = {"width", param, "seed", "data_seed"}
    fields = [f for f in _config_fields() if f not in skip] + ["model_version"]  # never mix model versions
    out = defaultdict(list)
    for r in records:
        if r.get("status", "done") != "done":
            continue
        out[tuple((f, r.get(f)) for f in fields)].append(r)
    return out


def _describe(key: tuple, param: str) -> dict:
    d = dict(key)
    other = "wd" if param == "lr" else "lr"
    return {"rule": d["rule"], other: d[other], "model": d["model"], "base_width": d["base_width"],
            "steps": d["steps"], "fixed": {k: v for k, v in d.items() if v is not None}}


def transfer_verdict(records: list[dict], param: str = "lr", metric: str = "final_loss",
                     threshold: float = DEFAULT_THRESHOLD, step: int | None = None,
                     regret_threshold: float | None = None, min_taus: float = MIN_TAUS,
                     n_boot: int = 400) -> list[dict]:
    """Per rule (and per fixed other hyper-parameter): optimum per width, drift with CI, regret, verdict.

    Only groups with >= 2 widths and >= 3 values of ``param`` at every width are judged (others are skipped).
    ``step`` reads the validation loss at that eval step instead of the final loss (see ``horizon_check``).
    Each dict: rule, the fixed other param, model, base_width, steps, param, metric, step, widths,
    optima {width: {x_opt, loss_opt, method, best_loss, n_diverged}}, proxy_width, proxy_x_opt, drift,
    drift_ci (low, high), n_seeds, regret {width: r}, max_regret, threshold, regret_threshold,
    passed (True/False/None), verdict (PASS/FAIL/INCONCLUSIVE), notes (list of strings), min_steps_over_tau (the
    smallest S = sum_t lr_t*wd at any width's optimum: the steady-state gate), min_steps_over_tau_grid (over every
    run of the grid, for information); each optimum also carries its own ``steps_over_tau``.
    """
    from .analysis import drift_ci, drift_octaves, interp_loss, optimum, seed_mean, seed_mean_curves

    if param not in ("lr", "wd"):
        raise ValueError(f"param must be 'lr' or 'wd', got {param!r}")
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ValueError(f"threshold must be a finite number > 0, got {threshold}")
    out = []
    for key, recs in _groups(records, param).items():
        per_seed = seed_mean_curves(recs, param, step, metric)
        curves = {w: seed_mean(c) for w, c in per_seed.items()}
        if len(curves) < 2 or min(len(xs) for xs, _ in curves.values()) < 3:
            continue
        notes = []
        optima = {}
        for w, (xs, ls) in curves.items():
            o = optimum(xs, [l if math.isfinite(l) else None for l in ls])
            best = min(ls)
            optima[w] = {"x_opt": o["x_opt"], "loss_opt": o["loss_opt"], "method": o["method"],
                         "best_loss": best if math.isfinite(best) else None,
                         "n_diverged": sum(1 for l in ls if not math.isfinite(l))}
            if o["method"] == "edge":
                notes.append(f"width {w}: optimal {param} on the edge of the grid ({o['x_opt']:g}); widen the grid")
            if o["method"] == "none":
                notes.append(f"width {w}: every run diverged")
        proxy = min(curves)
        x0 = optima[proxy]["x_opt"]
        drift = drift_octaves({w: o["x_opt"] for w, o in optima.items()})
        ci = drift_ci(per_seed, n_boot=n_boot) if math.isfinite(drift) else (math.nan, math.nan)
        n_seeds = min(min(len(v) for v in c.values()) for c in per_seed.values())
        regret = {}
        for w, (xs, ls) in curves.items():
            best = optima[w]["best_loss"]
            if x0 is None or best is None:
                regret[w] = math.inf
            else:
                at = interp_loss(xs, [l if math.isfinite(l) else None for l in ls], x0)
                regret[w] = at - best if math.isfinite(at) else math.inf
                if not math.isfinite(at):
                    notes.append(f"width {w}: proxy optimum {x0:g} is outside its grid or next to a diverged run")
        max_regret = max(r for w, r in regret.items() if w != proxy) if len(regret) > 1 else 0.0
        for w, o in optima.items():
            o["steps_over_tau"] = taus_at_optimum([r for r in recs if r["width"] == w], param, o["x_opt"])
        taus_opt = {w: o["steps_over_tau"] for w, o in optima.items() if o["steps_over_tau"] is not None}
        min_tau = min(taus_opt.values()) if taus_opt else None
        grid_taus = [t for t in (record_taus(r) for r in recs) if t is not None]
        short = min_tau is not None and min_tau < min_taus
        if short:
            low = ", ".join(f"width {w}: {t:.2g}" for w, t in sorted(taus_opt.items()) if t < min_taus)
            notes.append(f"at the optimum, S = sum_t lr_t*wd < {min_taus:g} tau ({low}): not steady-state evidence")
        lo, hi = ci if all(math.isfinite(c) for c in ci) else (drift, drift)
        regret_ok = regret_threshold is None or max_regret <= regret_threshold
        if not math.isfinite(drift) or short or any(o["method"] in ("edge", "none") for o in optima.values()):
            passed, verdict = None, "INCONCLUSIVE"
        elif -threshold <= lo and hi <= threshold and regret_ok:
            passed, verdict = True, "PASS"
        elif lo > threshold or hi < -threshold or not regret_ok:
            passed, verdict = False, "FAIL"
        else:
            passed, verdict = None, "INCONCLUSIVE"
            notes.append(f"the drift's 95% CI [{lo:+.2f}, {hi:+.2f}] straddles the threshold ±{threshold:g}: "
                         "add seeds or widths")
        out.append({**_describe(key, param), "param": param, "metric": metric, "step": step,
                    "widths": sorted(curves), "optima": optima, "proxy_width": proxy, "proxy_x_opt": x0,
                    "drift": drift, "drift_ci": list(ci), "n_seeds": n_seeds, "regret": regret,
                    "max_regret": max_regret, "threshold": threshold, "regret_threshold": regret_threshold,
                    "passed": passed, "verdict": verdict, "notes": notes, "min_steps_over_tau": min_tau,
                    "min_steps_over_tau_grid": min(grid_taus) if grid_taus else None})
    out.sort(key=lambda v: (v["model"], v["rule"], v.get("wd", v.get("lr")), v["steps"]))
    return out


def _drift_text(v: dict) -> str:
    lo, hi = v["drift_ci"]
    return f"{v['drift']:+.2f}" + (f" (95% CI {lo:+.2f} to {hi:+.2f})" if math.isfinite(lo) else "")


def compare_rules(verdicts: list[dict]) -> list[dict]:
    """Rank the rules of each study (same model, fixed param, steps, base width) by |drift|, then max regret.

    Each dict: model, param, fixed (the other param's value), steps, ranking [rule...], best_rule,
    conclusive (False when an optimum is on a grid edge, a run is < MIN_TAUS tau, or the best rule's drift CI
    overlaps the runner-up's), no_named_transfer (no named rule's drift CI inside the threshold: the sentence says
    so first, then names the least drift), reasons [..], sentence (one line with the numbers)."""
    groups = defaultdict(list)
    for v in verdicts:
        other = "wd" if v["param"] == "lr" else "lr"
        groups[(v["model"], v["param"], v.get(other), v["steps"], v["base_width"])].append(v)
    out = []
    for (model, param, fixed, steps, base), vs in groups.items():
        vs = sorted(vs, key=lambda v: (abs(v["drift"]) if math.isfinite(v["drift"]) else math.inf,
                                       v["max_regret"]))
        best = vs[0]
        reasons = []
        for v in vs:
            if any(o["method"] in ("edge", "none") for o in v["optima"].values()):
                reasons.append(f"{v['rule']}: an optimum sits on the grid edge")
            if v["min_steps_over_tau"] is not None and v["min_steps_over_tau"] < MIN_TAUS:
                reasons.append(f"{v['rule']}: S = sum lr_t*wd < {MIN_TAUS:g} at an optimum")
        if len(vs) > 1:
            a, b = best["drift_ci"], vs[1]["drift_ci"]
            if all(math.isfinite(x) for x in (*a, *b)) and not (a[1] < b[0] or b[1] < a[0]):
                reasons.append(f"the drift CIs of {best['rule']} and {vs[1]['rule']} overlap")
        others = "; ".join(f"{v['rule']} {_drift_text(v)}" for v in vs[1:])
        named = [v for v in vs if v["rule"] in NAMED_RULES]
        none = bool(named) and not any(drift_ci_inside(v) for v in named)
        if none and not drift_ci_inside(best):  # say so before naming the least drift (issue 32)
            head = ("Least drift" if not reasons else "Inconclusive, least drift so far") + f": {best['rule']}"
        else:
            head = f"Best rule: {best['rule']}" if not reasons else f"Inconclusive, best so far: {best['rule']}"
        sentence = ((no_named_transfer_text([v["rule"] for v in named], best["threshold"]) + " " if none else "")
                    + f"{head}: its optimal {param} drifts {_drift_text(best)} octaves per width doubling"
                    + (f", against {others}" if others else "") + f" (threshold ±{best['threshold']:g}).")
        if reasons:
            sentence += " Why inconclusive: " + "; ".join(reasons) + "."
        out.append({"model": model, "param": param, "fixed": fixed, "steps": steps, "base_width": base,
                    "ranking": [v["rule"] for v in vs], "best_rule": best["rule"], "conclusive": not reasons,
                    "no_named_transfer": none, "reasons": reasons, "sentence": sentence})
    return out


# The named rules: "no named rule transfers here" is said when none of these has its drift CI inside the threshold
# (the fitted and custom rules are the study's own measurements, not rules a reader picks by name).
NAMED_RULES = ("sp", "mup", "wd", "indep")
NO_NAMED = "No named rule transfers here"


def drift_ci_inside(v: dict) -> bool:
    """Whether a verdict's whole drift CI lies within +-threshold (a missing CI: no)."""
    lo, hi = v.get("drift_ci") or (math.nan, math.nan)
    t = v.get("threshold", DEFAULT_THRESHOLD)
    return bool(math.isfinite(lo) and math.isfinite(hi) and -t <= lo and hi <= t)


def no_named_transfer_text(rules, threshold: float = DEFAULT_THRESHOLD) -> str:
    """The one sentence every reader (Home, Regimes, the report, the tour) puts before the least-drift rule."""
    return f"{NO_NAMED}: no drift CI of {', '.join(rules)} lies inside ±{threshold:g}."


def best_rule_label(s: dict, md: bool = True) -> str:
    """A study's best rule as a table cell: the rule, "(not settled)" when inconclusive, and "no named rule
    transfers here; least drift:" before it where ``compare_rules`` found none (``no_named_transfer``)."""
    name = f"`{s.get('best_rule')}`" if md else str(s.get("best_rule"))
    head = f"{NO_NAMED.lower()}; least drift: {name}" if s.get("no_named_transfer") else name
    return head + ("" if s.get("conclusive") else " (not settled)")


def horizon_check(records: list[dict], param: str = "lr", fractions=HORIZON_FRACTIONS,
                  metric: str = "final_loss") -> list[dict]:
    """How the optimal ``param`` moves with training length, from the evals already stored (no retraining).

    For each group of ``transfer_verdict`` and each fraction of the run (nearest eval point), the optimum per
    width and its drift.  Dicts: rule, the fixed other param, model, steps, step, fraction, drift,
    opt {width: x_opt}, verdict."""
    out = []
    for key, recs in _groups(records, param).items():
        steps_avail = {}
        for f in fractions:
            s = nearest_eval_step(recs[0], f)
            if s is not None:
                steps_avail[f] = s
        for f, s in steps_avail.items():
            for v in transfer_verdict(recs, param=param, metric=metric, step=s):
                out.append({**{k: v[k] for k in ("rule", "wd" if param == "lr" else "lr", "model", "base_width",
                                                    "steps")},
                            "step": s, "fraction": f, "drift": v["drift"], "verdict": v["verdict"],
                            "opt": {w: o["x_opt"] for w, o in v["optima"].items()}})
    out.sort(key=lambda h: (h["model"], h["rule"], h.get("wd", h.get("lr")), h["steps"], h["fraction"]))
    return out
