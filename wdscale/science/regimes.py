"""The regime decides the rule: per-study numbers for the LM and the multi-epoch regimes, side by side.

Fan et al. (arXiv 2510.15262) derive lam ~ sqrt(d) from sigma_top ~ sqrt(eta/lam) d^0.75 in LLaMA-style LM
pretraining (about one pass, lr decay).  Wang & Aitchison (arXiv 2405.13698) find that over many epochs of a finite
set the best AdamW timescale tau = 1/(eta lam), counted in epochs, stays fixed: lam ~ d under mu-P's eta ~ 1/d.
This module measures, per study:

* alpha per matrix class (attention q/k/v/o, MLP gate/up/down; the synthetic core's W1/W2) with a bootstrap CI:
  sigma_top / sqrt(eta/lam) against width, every rule's runs at eta0 pooled (the model sigma_top ~ sqrt(eta/lam)
  d^alpha holds the rule's own lr and wd scaling out), and the lam exponent 2 alpha - 1 that holds sigma_top flat;
* the drift per rule with its CI and the best rule (``verdict.transfer_verdict`` / ``compare_rules``);
* S = sum_t eta_t lam and tau in epochs (tau = 1/(eta_peak lam) steps, in passes over the training bytes) at each
  rule's optimum;
* the measured law sigma_top ~ eta^a lam^-b per class, a and b apart (``law_exponents``, ``wdscale.science.law``);
* the ``fitted`` rule: lam ~ d^(e_mup / b_hat), e_mup = sigma_top's width exponent under mup at eta0 over the two
  smallest widths and b_hat the measured lam exponent on the proxy grid (``fitted_b``); ``fitted-sqrt`` keeps the
  paper's b = 2 alpha_hat - 1 (``fitted_b_sqrt``, the case a = b = 1/2); and how each did.

Inputs are store records (``RunStore.records()``); nothing here trains.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

from ..models import presets
from .analysis import fit_power_law, matrix_top_sv, width_exponents

from .law import CLASS_OF, matrix_class  # noqa: F401,E402 (re-exported: one table of matrix classes)


FITTED = ("fitted", "fitted-sqrt")  # the rules measured from the study itself


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


def mup_width_exponent(records: list[dict], eta0: float, n_boot: int = 300) -> dict | None:
    """e_mup: sigma_top's width exponent under mup (lam fixed) at eta0 over the study's two smallest widths
    (``analysis.width_exponents``, sigma_top the geometric mean over the hidden matrices, seeds pooled), with its CI.
    None without both widths."""
    mup = [r for r in records if r["rule"] == "mup" and _close(r["lr"], eta0) and not r.get("diverged")]
    widths = sorted({r["width"] for r in mup})[:2]
    if len(widths) < 2:
        return None
    fits = width_exponents([r for r in mup if r["width"] in widths], n_boot=n_boot)
    if not fits or not math.isfinite(fits[0]["exponent"]):
        return None
    f = fits[0]
    return {"e_mup": f["exponent"], "e_mup_ci": [f["ci_low"], f["ci_high"]], "widths": widths}


def fitted_b_sqrt(records: list[dict], eta0: float, n_boot: int = 300) -> dict | None:
    """The ``fitted-sqrt`` rule's wd exponent b = 2 alpha_hat - 1, alpha_hat from the two smallest widths under mup
    at eta0 (the sqrt(eta/lam) law assumed: a = b = 1/2).

    Under mup (eta ~ 1/m, lam fixed) sigma_top ~ sqrt(eta/lam) d^alpha ~ d^(alpha - 1/2), so alpha_hat is the
    measured width exponent + 1/2.  b is rounded to 0.01 so the phase's run ids are stable.  None without both
    widths."""
    e = mup_width_exponent(records, eta0, n_boot)
    if e is None:
        return None
    alpha = e["e_mup"] + 0.5
    return {"rule": "fitted-sqrt", "alpha_hat": alpha, "alpha_ci": [e["e_mup_ci"][0] + 0.5, e["e_mup_ci"][1] + 0.5],
            "e_mup": e["e_mup"], "e_mup_ci": e["e_mup_ci"], "widths": e["widths"], "b": round(2 * alpha - 1, 2),
            "eta0": eta0}


MIN_B_HAT = 0.05  # a measured lam exponent of sigma_top below this: lam barely moves sigma_top, no rule follows


def fitted_b(records: list[dict], eta0: float, n_boot: int = 300, proxy: list[dict] | None = None) -> dict | None:
    """The ``fitted`` rule's wd exponent from the measured law: lam ~ d^(e_mup / b_hat).

    e_mup is sigma_top's width exponent under mup at eta0 over the two smallest widths (``mup_width_exponent``);
    b_hat is sigma_top's lam exponent (sigma ~ eta^a lam^-b_hat, ``law.measure_law``, all hidden matrices pooled,
    runs at S >= 3, or every run where none is: ``min_S`` says which) on the proxy grid at d0: ``proxy`` (the
    proxy's records) where given, else the base-width runs among ``records``; where those hold a single lam, every
    width of ``records`` (``b_hat_scope`` says which).
    b is rounded to 0.01 so the phase's run ids are stable.  None without both widths or without a b_hat >=
    ``MIN_B_HAT`` (then ``fitted_b_sqrt`` is the fallback a caller may use)."""
    from .law import fitted_exponent, measure_law

    e = mup_width_exponent(records, eta0, n_boot)
    if e is None:
        return None
    pool = list(proxy or []) + list(records)
    law = measure_law(pool, n_boot=n_boot)
    if not (law["pooled"] or {}).get("identifiable"):  # no run past S >= 3 separates eta from lam (a short
        law = measure_law(pool, min_S=0.0, n_boot=n_boot)  # smoke run): every run, and min_S = 0 says so
    f = law["pooled"]
    if not f or not f.get("identifiable") or not math.isfinite(f["b"]) or f["b"] < MIN_B_HAT:
        return None
    beta = fitted_exponent(e["e_mup"], f["b"])
    return {"rule": "fitted", "b": round(beta, 2), "e_mup": e["e_mup"], "e_mup_ci": e["e_mup_ci"],
            "widths": e["widths"], "b_hat": f["b"], "b_hat_ci": f["b_ci"], "a_hat": f["a"], "a_hat_ci": f["a_ci"],
            "n_law": f["n"], "b_hat_scope": law["scope"], "min_S": law["min_S"], "eta0": eta0,
            "b_sqrt": round(2 * e["e_mup"], 2)}


def law_exponents(records: list[dict], spectra=None, n_boot: int = 300) -> dict:
    """The measured law of a study (``law.measure_law``): sigma_top ~ eta^a lam^-b per matrix class and pooled, a
    and b apart with CIs, S >= 3 runs; ||W||_F and the bulk too where ``spectra`` is given."""
    from .law import measure_law

    return measure_law(records, spectra, n_boot=n_boot)


def alpha_per_class(records: list[dict], eta0: float, model: str = "transformer", n_boot: int = 400) -> dict:
    """class -> {alpha, ci, implied_lambda_exponent, n}: sigma_top / sqrt(eta_mat / lam_mat) against width, over
    every (non-fitted) rule's runs at eta0 and every matrix of the class (layers pooled, geometric mean)."""
    sel = [r for r in records if _close(r["lr"], eta0) and not r.get("diverged") and r.get("matrix_wd")]
    names = defaultdict(list)
    for r in sel[:1]:
        for n, c in r["param_class"].items():
            k = matrix_class(n, model) if c == "matrix" else None
            if k:
                names[k].append(n)
    out = {}
    for k, ns in names.items():
        xs, ys = [], []
        for r in sel:
            sv = matrix_top_sv(r, ns)
            if sv:
                xs.append(r["width"])
                ys.append(sv / math.sqrt(r["matrix_lr"] / r["matrix_wd"]))
        f = fit_power_law(xs, ys, n_boot=n_boot)
        out[k] = {"alpha": f["exponent"], "ci": [f["ci_low"], f["ci_high"]], "n": f["n"],
                  "implied_lambda_exponent": 2 * f["exponent"] - 1 if math.isfinite(f["exponent"]) else None}
    return out


def tau_epochs(rec: dict, lr: float, bytes_per_step: int, train_bytes: int | None) -> float | None:
    """tau = 1/(eta lam) of the matrix class at peak lr ``lr`` (the rule's knob), in passes over the training bytes."""
    if not bytes_per_step or not train_bytes or not rec.get("matrix_wd"):
        return None
    scale = rec["matrix_lr"] / rec["lr"]  # the rule's lr multiplier at this width
    return (1.0 / (lr * scale * rec["matrix_wd"])) * bytes_per_step / train_bytes


def study_regime(records: list[dict], eta0: float | None = None, name: str = "", regime: str = "",
                 train_bytes: int | None = None) -> dict:
    """One study's regime numbers (see the module docstring).  ``eta0`` defaults to the proxy's optimum."""
    from .verdict import compare_rules, transfer_verdict

    recs = [r for r in records if r.get("status", "done") == "done"]
    if not recs:
        return {"name": name, "regime": regime, "empty": True}
    model = recs[0]["model"]
    base = min(r["base_width"] for r in recs)
    lam0s = defaultdict(int)
    for r in recs:
        if r["rule"] != "mup" or r["width"] != base:
            lam0s[r["wd"]] += 1
    lam0 = max(lam0s, key=lam0s.get) if lam0s else None
    study = [r for r in recs if lam0 is None or _close(r["wd"], lam0)]
    verdicts = [v for v in transfer_verdict(study, "lr") if len(v["widths"]) >= 2]
    cmp = compare_rules(verdicts)
    if eta0 is None:  # the grid lr nearest the proxy's interpolated optimum (alpha is read at a run's lr)
        px = [v for v in verdicts if v["rule"] == "mup"]
        x = px[0]["proxy_x_opt"] if px else None
        lrs = sorted({r["lr"] for r in study})
        eta0 = min(lrs, key=lambda v: abs(math.log(v / x))) if x and lrs else None
    bps = presets.step_bytes(recs[0].get("model"), recs[0])
    tb = train_bytes or recs[0].get("train_bytes") or _corpus_train_bytes(recs[0])
    rules = {}
    for v in verdicts:
        at_opt = {}
        for w, o in v["optima"].items():
            rs = [r for r in study if r["rule"] == v["rule"] and r["width"] == w]
            te = None
            if o["x_opt"] and rs:
                te = tau_epochs(rs[0], o["x_opt"], bps, tb)
            at_opt[w] = {"lr": o["x_opt"], "S": o.get("steps_over_tau"), "tau_epochs": te}
        rules[v["rule"]] = {"drift": v["drift"], "drift_ci": v["drift_ci"], "verdict": v["verdict"],
                            "at_optimum": at_opt, "on_edge": [w for w, o in v["optima"].items()
                                                              if o["method"] in ("edge", "none")],
                            "b": next((r.get("b") for r in study if r["rule"] == v["rule"]), None)}
    c = cmp[0] if cmp else {}
    named = {k: r for k, r in rules.items() if k not in FITTED}
    best_named = min(named, key=lambda k: abs(named[k]["drift"]) if math.isfinite(named[k]["drift"]) else math.inf,
                     default=None)
    alphas = alpha_per_class([r for r in study if r["rule"] not in FITTED], eta0, model) if eta0 else {}
    sv = [r for r in recs if r.get("param_class") and r.get("top_sv")]  # records with their sigma_top
    sv_study = [r for r in study if r.get("param_class") and r.get("top_sv")]
    law = law_exponents(sv, n_boot=200) if sv else None
    fit_law = fitted_b(sv_study, eta0, n_boot=200, proxy=sv) if eta0 and sv_study else None
    fit_sqrt = fitted_b_sqrt(sv_study, eta0, n_boot=200) if eta0 and sv_study else None
    return {"name": name, "regime": regime, "model": model, "base_width": base, "lam0": lam0, "eta0": eta0,
            "widths": sorted({r["width"] for r in study}), "seeds": sorted({r["seed"] for r in study}),
            "n_runs": len(recs), "steps": recs[0]["steps"], "epochs": (bps * recs[0]["steps"] / tb) if bps and tb
            else None, "alpha": alphas, "rules": rules, "best_rule": c.get("best_rule"),
            "best_named_rule": best_named, "conclusive": c.get("conclusive", False),
            "no_named_transfer": c.get("no_named_transfer", False),
            "sentence": c.get("sentence", ""), "fitted": _fitted_result(rules, best_named),
            "fitted_sqrt": _fitted_result(rules, best_named, "fitted-sqrt"),
            "law": law, "fitted_b": fit_law, "fitted_b_sqrt": fit_sqrt,
            "stored_fitted_kind": _stored_fitted_kind(rules, fit_law, fit_sqrt),
            "min_S_at_optima": min((a["S"] for r in rules.values() for a in r["at_optimum"].values()
                                    if a["S"] is not None), default=None),
            "all_interior": all(not r["on_edge"] for r in rules.values()) if rules else False}


def _stored_fitted_kind(rules: dict, fit_law: dict | None, fit_sqrt: dict | None) -> str | None:
    """Which recipe the study's stored ``fitted`` runs follow: ``law`` (lam ~ d^(e_mup/b_hat)) or ``sqrt``
    (2 alpha_hat - 1: studies built before the law was measured), read off their b; None without fitted runs."""
    b = (rules.get("fitted") or {}).get("b")
    if b is None:
        return None
    # nearest of the two within 0.05: a study measures its b on the proxy seeds, this on every seed it holds
    near = sorted((abs(b - f["b"]), k) for k, f in (("law", fit_law), ("sqrt", fit_sqrt)) if f)
    return near[0][1] if near and near[0][0] <= 0.05 else "unknown"


def _fitted_result(rules: dict, best_named: str | None, rule: str = "fitted") -> dict | None:
    f = rules.get(rule)
    if f is None or best_named is None:
        return None
    bn = rules[best_named]
    d_f, d_b = abs(f["drift"]), abs(bn["drift"])
    lo_f, hi_f = f["drift_ci"]
    lo_b, hi_b = bn["drift_ci"]
    overlap = all(math.isfinite(x) for x in (lo_f, hi_f, lo_b, hi_b)) and not (hi_f < lo_b or hi_b < lo_f)
    return {"b": f.get("b"), "drift": f["drift"], "drift_ci": f["drift_ci"], "best_named": best_named,
            "at_least_as_good": bool(d_f <= d_b or overlap), "ci_overlap": bool(overlap)}


def _corpus_train_bytes(rec: dict) -> int | None:
    if rec.get("model") != "transformer":
        return None
    try:
        return presets.train_bytes(rec)
    except (OSError, ValueError):
        return None


def short_finding(s: dict) -> str:
    """'tf-lm (LM pretraining ...): smallest drift wd +0.02 [-0.19, +0.17], then indep +0.12 ...' with the verdict."""
    ranked = sorted((r for r in s["rules"] if r not in FITTED),
                    key=lambda r: abs(s["rules"][r]["drift"]) if math.isfinite(s["rules"][r]["drift"]) else math.inf)
    parts = [f"{r} {s['rules'][r]['drift']:+.2f} [{s['rules'][r]['drift_ci'][0]:+.2f}, "
             f"{s['rules'][r]['drift_ci'][1]:+.2f}]" for r in ranked]
    seeds = len(s.get("seeds") or [])
    return (f"{s['name']} ({s['regime']}, {seeds} seed{'s' if seeds != 1 else ''}): drift of the optimal η₀ in "
            f"octaves per width doubling, smallest first: " + ", ".join(parts) +
            ("" if s.get("conclusive") else " (inconclusive: CIs overlap or S < 3 at an optimum)"))


def regime_sentence(a: dict, b: dict) -> str:
    """One plain sentence with the numbers: which rule transfers best in each regime."""
    def part(s):
        r = s["rules"].get(s["best_named_rule"] or "", {})
        alpha = np.nanmean([v["alpha"] for v in s["alpha"].values()]) if s["alpha"] else float("nan")
        best = "no named rule transfers here; least drift" if s.get("no_named_transfer") else "best named rule"
        return (f"{s['regime'] or s['name']}: {best} {s['best_named_rule']} (drift {r.get('drift', math.nan):+.2f}"
                f" oct/doubling), mean alpha {alpha:.2f} (lam ~ d^{2 * alpha - 1:.2f} holds sigma_top flat)")
    return part(a) + "; " + part(b) + "."


def regime_rows(regimes: list[dict]) -> list[dict]:
    """One table row per (study, rule): drift with CI, verdict, and S / tau in epochs at the optimum of each width."""
    rows = []
    for s in regimes:
        for rule, r in s["rules"].items():
            lo, hi = r["drift_ci"]
            at = r["at_optimum"]
            rows.append({
                "study": s["name"], "rule": rule + (f" (b={r['b']:+.2f})" if r.get("b") is not None else ""),
                "drift (oct/doubling)": r["drift"], "95% CI": f"[{lo:+.2f}, {hi:+.2f}]", "verdict": r["verdict"],
                "S at optima": ", ".join(f"{w}: {a['S']:.2g}" for w, a in at.items() if a["S"] is not None),
                "τ in epochs at optima": ", ".join(f"{w}: {a['tau_epochs']:.2g}" for w, a in at.items()
                                                   if a["tau_epochs"] is not None) or "-",
                "best": "★" if rule == s.get("best_rule") else ""})
    return rows
