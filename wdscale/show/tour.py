"""The guided tour: the argument in eight steps, one figure each, for a talk or a class.

Steps 1 and 2 are computed live (torch's own AdamW on one small matrix, well under a second each); steps 3-8
read a reference study (``gallery/<name>``, default ``synthetic-4w``: nothing to train) or the user's store
(the demo).  Each step is a dict: title, formula, text (one or two sentences with this data's numbers),
look (what to look at) and fig (a plotly figure from wdscale.show.plots).  Every sentence about the data is
built from the numbers themselves (``verdict.compare_rules``' sentence, the drifts and their CIs), so the tour
never claims more than the study shows.

``tour_html`` writes the whole tour as one self-contained HTML file: plotly.js inlined once, no network
reference, every figure interactive.  ``wdscale tour --out FILE.html [--store DIR | --study NAME]``.
"""
from __future__ import annotations

import html
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..science import analysis

from . import plots

DEFAULT_STUDY = "synthetic-4w"
TITLES = [
    "AdamW's update is ~η per entry",
    "Decay meets updates: a steady state",
    "The spectrum scales with η and with λ: measured apart",
    "σ_top against width, per rule",
    "The rule that follows: λ ∝ d^(e/b)",
    "Loss against learning rate: where the optimum goes",
    "The regime decides",
    "Which λ transfers: two crossings",
]
N_STEPS = len(TITLES)
TOP_FRACTION = 1 / 8  # the top of the spectrum, where √(η/λ) rescaling is tested (docs/validation.md)


# -- data ----------------------------------------------------------------------------------------------------
def load(study: str | None = None, store=None, gallery_root=None) -> dict:
    """The data of steps 3-8: a reference study (default ``synthetic-4w``) or a run store (the user's demo).

    Returns {"label", "store", "records" (the transfer study: finished runs at its most common λ₀),
    "summary" (gallery.summary), "eta0", "manifest" (None for a store)}."""
    from ..science import gallery

    if store is None:
        ref = gallery.open_reference(study or DEFAULT_STUDY, gallery_root)
        store, label, manifest = ref, f"reference study {ref.reference}", ref.manifest
    else:
        label, manifest = f"run store {store.root}", None
    recs = transfer_records(store.records())
    if not recs:
        raise ValueError(f"{label} holds no transfer study (>= 2 widths and >= 3 lrs at one λ₀): run the demo "
                         "(Home, or `wdscale demo --out DIR`) or pick a reference study")
    eta0 = (manifest or {}).get("eta0") or _demo_eta0(store, recs)
    return {"label": label, "store": store, "records": recs, "summary": gallery.summary(recs, eta0),
            "eta0": eta0, "manifest": manifest}


def transfer_records(recs: list[dict]) -> list[dict]:
    """Finished runs of the store's transfer study: the (model, steps, λ₀) with the most widths, then the most
    runs.  The demo's proxy grid (one width, several λ₀) is left out: it is not a transfer curve."""
    done = [r for r in recs if r.get("status") == "done"]
    widths, count = {}, Counter()
    for r in done:
        k = (r["model"], r["steps"], r["wd"])
        widths.setdefault(k, set()).add(r["width"])
        count[k] += 1
    good = [k for k in widths if len(widths[k]) >= 2]
    if not good:
        return []
    best = max(good, key=lambda k: (len(widths[k]), count[k]))
    out = [r for r in done if (r["model"], r["steps"], r["wd"]) == best]
    return out if len({r["lr"] for r in out}) >= 3 else []


def _demo_eta0(store, recs) -> float | None:
    """The demo's proxy optimum when the store holds its proxy grid (else the transfer grid's middle lr)."""
    from ..science.study import proxy_optimum

    proxy = [r for r in store.records() if r.get("status") == "done" and r["width"] == r["base_width"]
             and len({x["wd"] for x in store.records() if x["width"] == r["width"]}) > 1]
    try:
        return proxy_optimum(proxy)["eta0"] if proxy else None
    except (RuntimeError, ValueError, IndexError):
        return None


# -- the live steps --------------------------------------------------------------------------------------------
def live_update_rms(lr: float = 1e-3, d: int = 64, steps: int = 20, seed: int = 0) -> list[dict]:
    """Step 1, live: per-entry RMS of one optimizer step on a d x d matrix after ``steps`` steps, for gradients of
    RMS ``scale`` (1e-4 .. 1e2): AdamW (weight_decay 0, so the update is the optimizer's own) with a steady
    gradient (one fixed direction) and with pure noise (fresh every step), and SGD with the noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    fixed = torch.randn(d, d, generator=g)
    rows = []
    for scale in np.logspace(-4, 2, 7):
        for name in ("AdamW, steady gradient", "AdamW, noise gradient", "SGD, noise gradient"):
            w = torch.nn.Parameter(torch.randn(d, d, generator=g) / math.sqrt(d))
            opt = (torch.optim.SGD([w], lr=lr) if name.startswith("SGD")
                   else torch.optim.AdamW([w], lr=lr, weight_decay=0.0))
            for _ in range(steps):
                before = w.detach().clone()
                w.grad = float(scale) * (fixed if "steady" in name else torch.randn(d, d, generator=g))
                opt.step()
            rows.append({"optimizer": name, "grad_rms": float(scale),
                         "update_rms": float((w.detach() - before).pow(2).mean().sqrt())})
    return rows


PAIRS = ((1e-2, 0.5), (1e-2, 0.2), (4e-3, 1.0))  # (η, λ): τ = 200, 500, 250 steps


def live_norm_settling(pairs=PAIRS, d: int = 64, n_tau: float = 5.0, seed: int = 0) -> list[dict]:
    """Step 2, live: torch's AdamW on a d x d matrix fed pure-noise gradients, one (η, λ) per matrix, for
    ``n_tau`` of the longest τ; ‖W‖_F every few steps next to √(ηN/(2λ))."""
    import torch

    from ..core.theory import equilibrium_fro, tau

    g = torch.Generator().manual_seed(seed)
    ws = [torch.nn.Parameter(torch.randn(d, d, generator=g) / math.sqrt(d)) for _ in pairs]
    opt = torch.optim.AdamW([{"params": [w], "lr": lr, "weight_decay": wd} for w, (lr, wd) in zip(ws, pairs)])
    total = int(n_tau * max(float(tau(lr, wd)) for lr, wd in pairs))
    every = max(1, total // 200)
    hist = {i: [] for i in range(len(pairs))}
    steps = []
    for t in range(total + 1):
        if t % every == 0:
            steps.append(t)
            for i, w in enumerate(ws):
                hist[i].append(float(w.detach().norm()))
        for w in ws:
            w.grad = torch.randn(d, d, generator=g)
        opt.step()
    return [{"name": f"η={lr:g}, λ={wd:g}", "lr": lr, "wd": wd, "steps": steps, "fro": hist[i],
             "fro_pred": float(equilibrium_fro(lr, wd, d * d)), "tau": float(tau(lr, wd))}
            for i, (lr, wd) in enumerate(pairs)]


# -- the steps ---------------------------------------------------------------------------------------------------
def _step(n, formula, text, look, fig, **extra) -> dict:
    return {"n": n, "title": TITLES[n - 1], "formula": formula, "text": text, "look": look, "fig": fig, **extra}


def step1(live: dict | None = None) -> dict:
    lr = 1e-3
    t0 = time.perf_counter()
    rows = (live or {}).get("update_rms") or live_update_rms(lr)
    secs = time.perf_counter() - t0
    def span(name):
        v = [r["update_rms"] for r in rows if r["optimizer"] == name]
        return min(v), max(v)

    steady, noise, sgd = span("AdamW, steady gradient"), span("AdamW, noise gradient"), span("SGD, noise gradient")
    return _step(1, "ΔW = −η · m̂/(√v̂ + ε)  ⇒  RMS(ΔW) ~ η, whatever the gradient's scale",
                 f"Adam divides the gradient by its own running RMS. Over gradients spanning 10⁶ in scale, AdamW's "
                 f"update RMS stays at {steady[0] / lr:.2f}–{steady[1] / lr:.2f} η for a steady gradient and "
                 f"{noise[0] / lr:.2f}–{noise[1] / lr:.2f} η for pure noise (momentum averages noise out), while "
                 f"SGD's grows from {sgd[0]:.1e} to {sgd[1]:.1e}.",
                 "The flat AdamW lines: the update size is set by the learning rate, not by the gradient.",
                 plots.update_rms_plot(rows, lr), live_seconds=secs)


def step2(live: dict | None = None) -> dict:
    t0 = time.perf_counter()
    series = (live or {}).get("settling") or live_norm_settling()
    secs = time.perf_counter() - t0
    ratios = [s["fro"][-1] / s["fro_pred"] for s in series]
    return _step(2, "‖W‖_F → √(η·N/(2λ)),  τ = 1/(η·λ) steps",
                 f"Each step shrinks W by (1 − ηλ) and adds an update of size ~η; the two balance after a few τ. "
                 f"After 5 τ of the slowest pair the measured norms are {', '.join(f'{r:.2f}' for r in ratios)}× "
                 f"the prediction (torch's AdamW, one 64×64 matrix, noise gradients).",
                 "Each solid line reaching its dashed level within a few τ (dotted): the norm forgets its start.",
                 plots.norm_settling_plot(series), live_seconds=secs)


def spectra_curves(data: dict, width: int | None = None, rule: str = "mup", param: str | None = None):
    """Final spectra of one hidden matrix at one width, one curve per lr (seed 0): (raw, rescaled, width, param)."""
    recs = [r for r in data["records"] if r["rule"] == rule and not r.get("diverged")] or \
        [r for r in data["records"] if not r.get("diverged")]
    widths = sorted({r["width"] for r in recs})
    width = width or widths[min(1, len(widths) - 1)]
    seed = min(r["seed"] for r in recs)
    sel = sorted([r for r in recs if r["width"] == width and r["seed"] == seed], key=lambda r: r["lr"])
    mats = sorted(n for n, c in sel[0]["param_class"].items() if c == "matrix")
    param = param or mats[0]  # the first block's input matrix (W1 in the synthetic core: exactly scale-invariant)
    spectra = {}
    for r in sel:
        try:
            spectra[r["run_id"]] = data["store"].spectra(r["run_id"])
        except Exception:  # noqa: BLE001  (a damaged run is left out of the figure, not the tour)
            pass
    raw, resc, _ = analysis.final_spectrum_curves(sel, spectra, param)
    raw = [{**c, "x": np.asarray(c["x"]) / len(c["x"]), "name": f"η₀={r['lr']:.3g}"}
           for c, r in zip(raw, [r for r in sel if r["run_id"] in spectra])]
    resc = [{**c, "name": c2["name"]} for c, c2 in zip(resc, raw)]
    return raw, resc, width, param


def _spread(curves, top: float | None = None) -> float:
    pts = []
    for c in curves:
        x, y = np.asarray(c["x"]), np.asarray(c["y"])
        keep = x <= top if top else np.ones_like(x, bool)
        pts.append((x[keep], y[keep]))
    return analysis.collapse_metric(pts)


def study_law(data: dict) -> dict:
    """The measured law of the tour's store (``law.measure_law`` on every stored run, sigma_top from the records):
    sigma_top ~ eta^a lam^-b per matrix class and pooled, runs at S >= 3.  Cached in ``data``."""
    from ..science.law import measure_law

    if "law" not in data:
        data["law"] = measure_law(data["store"].records(), n_boot=300)
    return data["law"]


def lam_curves(data: dict, width: int, param: str):
    """Final spectra of ``param`` along lam at one matrix eta (seed 0): the stored runs of one width and one matrix
    lr with the most distinct lam (the rules move lam apart at a width above d0; a demo's proxy grid at d0 has
    several).  (curves, width, eta) or ([], None, None)."""
    from ..science.law import unique_runs

    groups = {}
    for r in unique_runs(data["store"].records()):
        if param in r["param_class"]:
            groups.setdefault((r["width"], f"{r['matrix_lr']:.9g}", r["seed"]), []).append(r)
    if not groups:
        return [], None, None
    seed0 = min(k[2] for k in groups)
    key = max((k for k in groups if k[2] == seed0), key=lambda k: (len({r["matrix_wd"] for r in groups[k]}),
                                                                    k[0] == width, -abs(k[0] - width)))
    sel = sorted({r["matrix_wd"]: r for r in groups[key]}.values(), key=lambda r: r["matrix_wd"])
    if len(sel) < 2:
        return [], None, None
    curves = []
    for r in sel:
        try:
            sv = np.asarray(data["store"].spectra(r["run_id"])[param])[-1]
        except Exception:  # noqa: BLE001
            continue
        curves.append({"name": f"λ={r['matrix_wd']:.3g} ({r['rule']})", "x": np.arange(1, len(sv) + 1) / len(sv),
                       "y": sv, "lam": r["matrix_wd"], "eta": r["matrix_lr"]})
    return curves, key[0], sel[0]["matrix_lr"]


def _two_way_plot(eta_raw, eta_resc, lam_raw, lam_resc, a, b, spreads, title):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    (e0, e1), (l0, l1) = spreads
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.08, vertical_spacing=0.14, subplot_titles=[
        f"along η (λ fixed): σ_i (spread {e0:.2f})", f"σ_i / η^{a:.2f} (spread {e1:.2f})",
        f"along λ (η fixed): σ_i (spread {l0:.2f})", f"σ_i · λ^{b:.2f} (spread {l1:.2f})"])
    for row, pair in ((1, (eta_raw, eta_resc)), (2, (lam_raw, lam_resc))):
        for col, curves in ((1, pair[0]), (2, pair[1])):
            for c in curves:
                fig.add_trace(go.Scatter(x=np.asarray(c["x"]), y=np.asarray(c["y"]), mode="lines", name=c["name"],
                                         legendgroup=c["name"], showlegend=col == 1), row=row, col=col)
            fig.update_xaxes(type="log", title_text="rank / d (log)", row=row, col=col)
            fig.update_yaxes(type="log", row=row, col=col)
    fig.update_layout(title=title, height=720)
    return fig


def step3(data: dict) -> dict:
    from ..science.regimes import matrix_class

    raw, _resc, width, param = spectra_curves(data)
    law = study_law(data)
    model = data["records"][0].get("model", "transformer")
    cls = matrix_class(param, model)
    f = law["classes"].get(cls) or law["pooled"] or {}
    a, b = f.get("a", math.nan), f.get("b", math.nan)
    ok = analysis._finite(a) and analysis._finite(b)
    recs = {r["run_id"]: r for r in data["records"]}
    sel = [r for r in data["records"] if r["rule"] == "mup" and r["width"] == width] or list(recs.values())
    etas = {f"η₀={r['lr']:.3g}": r["matrix_lr"] for r in sel}
    a_use, b_use = (a, b) if ok else (0.5, 0.5)
    eta_resc = [{**c, "y": np.asarray(c["y"]) / etas.get(c["name"], 1.0) ** a_use} for c in raw]
    lam_raw, lam_width, lam_eta = lam_curves(data, width, param)
    lam_resc = [{**c, "y": np.asarray(c["y"]) * c["lam"] ** b_use} for c in lam_raw]
    e0, e1 = _spread(raw, TOP_FRACTION), _spread(eta_resc, TOP_FRACTION)
    l0, l1 = (_spread(lam_raw, TOP_FRACTION), _spread(lam_resc, TOP_FRACTION)) if len(lam_raw) >= 2 else (
        math.nan, math.nan)
    scope = "the proxy grid at d₀" if law["scope"] == "proxy" else "every width (one intercept each)"
    if ok:
        fit_s = (f"Fitted apart ({law['pooled']['n']} runs at S ≥ {law['min_S']:g}, {scope}), {param}'s class "
                 f"{cls or 'all hidden matrices'} has σ_top ∝ η^{a:.2f} [{f['a_ci'][0]:.2f}, {f['a_ci'][1]:.2f}] at "
                 f"fixed λ and ∝ λ^−{b:.2f} [{f['b_ci'][0]:.2f}, {f['b_ci'][1]:.2f}] at fixed η")
        if abs(a - b) > 0.1:
            verdict = (f"; b ≠ a (by {abs(a - b):.2f}), so η and λ do not enter as the one ratio η/λ "
                       f"({'λ' if b > a else 'η'} moves σ_top more), and the paper's √(η/λ) is not the law here.")
        elif holds_sqrt(f):
            verdict = ": both near ½, the paper's √(η/λ)."
        else:
            verdict = f": a ≈ b, one ratio η/λ, but with the power {(a + b) / 2:.2f}, not ½."
    else:
        fit_s, verdict = "The stored runs do not separate η from λ (one λ, or none at S ≥ 3), so a and b cannot be told apart", "."
    lam_s = (f" Along λ ({len(lam_raw)} runs at d = {lam_width}, η = {lam_eta:.3g}) the spread falls from {l0:.2f} "
             f"to {l1:.2f}." if len(lam_raw) >= 2 else " No stored runs vary λ at one η: the λ direction is not drawn.")
    text = (fit_s + verdict + f" Along η ({len(raw)} learning rates at d = {width}, {param}) dividing by η^{a_use:.2f} "
            f"takes the spread of the top eighth of the spectrum (std of log σ) from {e0:.2f} to {e1:.2f}." + lam_s)
    fig = _two_way_plot(raw, eta_resc, lam_raw, lam_resc, a_use, b_use, ((e0, e1), (l0, l1)),
                        f"Spectra of {param}: along η at fixed λ, and along λ at fixed η, each rescaled by its "
                        "measured exponent (spread: top eighth)")
    return _step(3, "σ_i(W) ≈ η^a · λ^−b · f(i/d)   (the paper: a = b = ½, i.e. √(η/λ))", text,
                 "Each right panel's curves bunching together at the top ranks: the measured exponent is the scale "
                 "in that direction. Compare the two exponents: equal means one ratio η/λ.",
                 fig, law={"a": a, "b": b, "a_ci": f.get("a_ci"), "b_ci": f.get("b_ci"), "class": cls,
                           "n": law["pooled"]["n"] if law.get("pooled") else 0, "scope": law["scope"]},
                 collapse={"top_before": e0, "top_after": e1, "lam_before": l0, "lam_after": l1})


def holds_sqrt(f: dict) -> bool:
    from ..science.law import holds

    return bool(holds(f))


def _at_eta0(data: dict) -> list[dict]:
    lrs = sorted({r["lr"] for r in data["records"]})
    eta0 = data["summary"]["eta0"]
    lr = min(lrs, key=lambda x: abs(math.log(x / eta0)))
    return [r for r in data["records"] if r["lr"] == lr]


def step4(data: dict) -> dict:
    sel = _at_eta0(data)
    fits = analysis.width_exponents(sel, n_boot=300)
    parts = [f"{f['rule']} d^{f['exponent']:+.2f} [{f['ci_low']:+.2f}, {f['ci_high']:+.2f}]" for f in fits
             if analysis._finite(f.get("ci_low"))]
    return _step(4, "σ_top ∝ η^a·λ^−b·d^γ (the paper: a = b = ½);  μP (η ∝ 1/d, λ fixed) ⇒ σ_top ∝ d^(γ−a)",
                 f"Each rule moves η and λ with width, so σ_top (the sublayer gain) grows, stays or shrinks. Measured "
                 f"at η₀ = {sel[0]['lr']:.3g} (95% CI): {'; '.join(parts) or 'fewer than two widths'}.",
                 "The slopes on log-log axes: a flat line is a width-invariant sublayer gain.",
                 plots.top_sv_vs_width(sel, fits, title=f"σ_top vs width at η₀ = {sel[0]['lr']:.3g}, per rule"),
                 fits=fits)


def step5(data: dict, fits: list[dict] | None = None) -> dict:
    fits = fits if fits is not None else analysis.width_exponents(_at_eta0(data), n_boot=300)
    mup = next((f for f in fits if f["rule"] == "mup"), None)
    law = study_law(data)
    p = law.get("pooled") or {}
    a, b = p.get("a", math.nan), p.get("b", math.nan)
    e = mup["exponent"] if mup is not None else None
    beta = sqrt_b = None
    if e is None or not analysis._finite(e):
        text = "No width exponent under mup could be fitted here (fewer than two widths, or no mup runs)."
    else:
        sqrt_b = 2 * e  # 2 alpha - 1 with alpha = e + 1/2: the sqrt(eta/lam) law
        near = lambda x: min((("mup", 0.0), ("wd", 0.5), ("indep", 1.0)), key=lambda t: abs(t[1] - x))
        if analysis._finite(b) and b > 0.05:
            beta = e / b
            text = (f"With σ_top ∝ η^a·λ^−b·d^γ and η ∝ 1/d, σ_top stays flat when λ ∝ d^(e/b), e being σ_top's width "
                    f"exponent under mup (λ fixed). Measured here: e = {e:+.2f} [{mup['ci_low']:+.2f}, "
                    f"{mup['ci_high']:+.2f}] at η₀ and b = {b:.2f} [{p['b_ci'][0]:.2f}, {p['b_ci'][1]:.2f}] (a = "
                    f"{a:.2f}; step 3), so λ ∝ d^{beta:.2f}: of the named rules `{near(beta)[0]}` (λ ∝ "
                    f"d^{near(beta)[1]:g}) is nearest. The √(η/λ) law (a = b = ½) would say 2α − 1 = 2e = "
                    f"{sqrt_b:.2f}" + (f"; the two differ by {abs(beta - sqrt_b):.2f} because b = {b:.2f}, not ½."
                                      if abs(beta - sqrt_b) > 0.05 else ", the same here.") +
                    " Fan et al. report α ≈ 0.75 (λ ∝ √d).")
        else:
            text = (f"λ barely moves σ_top here (b = {b:.2f}), so no λ exponent follows from the measured law; the "
                    f"√(η/λ) law's 2α − 1 = 2e = {sqrt_b:.2f} (e = {e:+.2f} under mup) assumes b = ½.")
    return _step(5, "σ_top ∝ η^a·λ^−b·d^γ,  η ∝ 1/d  ⇒  λ ∝ d^(e/b),  e = γ − a (mup's width exponent)", text,
                 "Where the measured rule's star sits among the named rules, and how far the √(η/λ) law's would put it.",
                 rule_exponent_plot(beta, sqrt_b), alpha=(e + 0.5) if e is not None else None, beta=beta,
                 sqrt_b=sqrt_b, b=b, a=a)


def rule_exponent_plot(beta: float | None, sqrt_b: float | None,
                       title: str = "The rule that follows: λ ∝ d^β under η ∝ 1/d"):
    """The named rules' λ exponents (0, ½, 1) on one axis, the measured law's β = e/b and the √(η/λ) law's 2e."""
    import plotly.graph_objects as go

    from .plots import RULE_COLORS

    fig = go.Figure()
    for rule, x in (("mup", 0.0), ("wd", 0.5), ("indep", 1.0)):
        fig.add_trace(go.Scatter(x=[x], y=[0], mode="markers+text", name=rule, text=[rule], textposition="top center",
                                 marker=dict(size=14, color=RULE_COLORS.get(rule))))
    if beta is not None and analysis._finite(beta):
        fig.add_trace(go.Scatter(x=[beta], y=[0], mode="markers+text", name=f"measured law: β = e/b = {beta:.2f}",
                                 text=["fitted"], textposition="bottom center",
                                 marker=dict(symbol="star", size=20, color="black")))
    if sqrt_b is not None and analysis._finite(sqrt_b):
        fig.add_trace(go.Scatter(x=[sqrt_b], y=[0], mode="markers+text", name=f"√(η/λ) law: 2α − 1 = {sqrt_b:.2f}",
                                 text=["fitted-sqrt"], textposition="bottom center",
                                 marker=dict(symbol="star-open", size=20, color="gray")))
    fig.update_layout(title=title, xaxis_title="λ exponent β (λ ∝ d^β)", yaxis=dict(visible=False, range=[-1, 1]),
                      height=320)
    return fig


def _drifts(rules: dict) -> str:
    return "; ".join(f"{r} {v['drift']:+.2f} [{v['drift_ci'][0]:+.2f}, {v['drift_ci'][1]:+.2f}] ({v['verdict']})"
                     for r, v in sorted(rules.items(), key=lambda kv: abs(kv[1]["drift"]))
                     if analysis._finite(v.get("drift")) and v.get("drift_ci") and analysis._finite(v["drift_ci"][0]))


def step6(data: dict) -> dict:
    recs = data["records"]
    s = data["summary"]
    opt = analysis.lr_optima(recs, param="lr")
    sentence = s.get("sentence") or "No rule can be named: fewer than two rules with a verdict."
    return _step(6, "drift = Δ log₂ η*(d) per width doubling;  transfers ⇔ 95% CI within ±0.25",
                 f"Drift of the optimal η₀ in octaves per width doubling (95% CI, verdict): {_drifts(s['rules']) or 'none'}. "
                 f"{sentence}",
                 "The stars (each width's optimum): a rule transfers when they line up vertically.",
                 plots.loss_vs_param(recs, "lr", opt, title="Loss vs learning rate per width, one panel per rule "
                                                            "(seed mean; ★ optimum)"))


def regime_of(manifest: dict | None, recs: list[dict] | None = None) -> str:
    """A study's regime in words, from its grid: many epochs over a finite set, or about one pass of fresh text."""
    grid = (manifest or {}).get("grid") or (recs[0] if recs else {})
    if manifest and manifest.get("regime"):
        return str(manifest["regime"])
    model = grid.get("model")
    if model == "synthetic":
        from ..models.synthetic import SyntheticConfig

        n = SyntheticConfig().n_train
        return f"many epochs over a finite set ({n} samples)" if n else "fresh data every step"
    if grid.get("train_bytes"):
        return f"many epochs over {grid['train_bytes']:,} bytes of text"
    return "language modelling, about one pass over fresh text"


def studies_overview(gallery_root=None, current: dict | None = None) -> list[dict]:
    """Every reference study present (gallery.names): name, title, regime, best-rule sentence, drifts, min steps
    over tau and notes; a study that cannot be read or has no verdict says so instead."""
    from ..science import gallery

    out = []
    for name in gallery.names(gallery_root):
        row = {"name": name, "title": "", "regime": "", "rules": {}, "sentence": "", "notes": "", "error": None,
               "min_steps_over_tau": None}
        try:
            if current and (current.get("manifest") or {}).get("name") == name:
                s, m = current["summary"], current["manifest"]
            else:
                ref = gallery.open_reference(name, gallery_root)
                m = ref.manifest
                recs = transfer_records(ref.records())
                s = gallery.summary(recs, m.get("eta0")) if recs else {"rules": {}, "sentence": ""}
            row.update(title=m.get("title", ""), regime=regime_of(m), rules=s.get("rules") or {},
                       sentence=s.get("sentence", ""), notes=m.get("notes", ""),
                       min_steps_over_tau=s.get("min_steps_over_tau"))
        except Exception as e:  # noqa: BLE001  (one unreadable study is one line, not a broken tour)
            row["error"] = " ".join(str(e).split())
        out.append(row)
    return out


def step7(data: dict, gallery_root=None) -> dict:
    rows = studies_overview(gallery_root, data)
    lines = []
    for r in rows:
        if r["error"]:
            lines.append(f"**{r['name']}**: not readable ({r['error']}).")
            continue
        head = f"**{r['name']}** ({r['regime']})"
        if not r["rules"]:
            lines.append(f"{head}: no transfer verdict (needs ≥ 2 widths and ≥ 3 lrs). {r['notes']}".strip())
            continue
        tau = r["min_steps_over_tau"]
        tau_s = (f" S = Σηₜλ ≥ {tau:.1f} at every optimum." if tau is not None and tau >= 3 else
                 f" Smallest S = Σηₜλ at an optimum {tau:.1f}: below 3 τ, not steady-state evidence."
                 if tau is not None else "")
        lines.append(f"{head}: {_drifts(r['rules'])}. {r['sentence'] or 'No rule can be named.'}{tau_s}")
    if not any(r["rules"] for r in rows) and not rows:
        lines.append("No reference study is installed (gallery/ is empty).")
    regimes = {r["regime"] for r in rows if r["rules"]}
    tail = ("" if len(regimes) > 1 else
            " Only one regime has a reference study so far; its ranking is not evidence for the other regime.")
    fig = plots.regime_drifts_plot({f"{r['name']} ({r['regime']})": r["rules"] for r in rows if r["rules"]})
    return _step(7, "predicted: many epochs, τ_epoch fixed ⇒ λ ∝ d (indep);  one pass (LLM), α ≈ 0.75 ⇒ λ ∝ √d (wd)",
                 "Weight decay does a different job in each regime (it regularizes over many epochs; it sets the "
                 "effective learning rate in one pass), so the rule that transfers can differ. What each reference "
                 "study measured is listed below." + tail,
                 "Each study's best rule is the one whose drift sits nearest 0 with a CI clear of the others; "
                 "where no named rule's CI lies inside ±0.25, the study says that no named rule transfers.",
                 fig, studies=rows, lines=lines)


def study_scan(data: dict) -> dict | None:
    """The lam scan the tour's data holds (``scan_run.stored_scan``; a reference study's is cached per process),
    None where there is none.  Cached in ``data``."""
    from ..science import scan_run

    if "scan" not in data:
        m = data.get("manifest")
        if m and m.get("name") and hasattr(data["store"], "root"):
            data["scan"] = scan_run.reference_scan(m["name"], Path(data["store"].root).parent)
        else:
            data["scan"] = scan_run.stored_scan(data["store"].records(), eta0=data.get("eta0"))
    return data["scan"]


def step8(data: dict) -> dict:
    from ..science import scan_run

    s = study_scan(data)
    formula = "q_drift*: drift(q) = 0 (η₀ transfers);  q_σ*: e(q) = 0 (σ_top width-invariant);  the argument ⇔ " \
              "q_drift* = q_σ*,  with λ = λ₀·(d/d₀)^q under η ∝ 1/d"
    if s is None:
        return _step(8, formula, f"No λ scan is stored in {data['label']}: it needs at least two values of q (the "
                                 "named rules are q = 0, ½ and 1) with two widths each. `wdscale scan --out DIR` "
                                 "trains one (docs/scan.md).",
                     "The Which λ transfers page draws a scan once a store holds one.", plots.scan_figure(None),
                     scan=None)
    return _step(8, formula, f"The named rules are three points of one line, λ ∝ d^q (here q = "
                             f"{', '.join(f'{q:g}' for q in s['qs'])}). " + " ".join(scan_run.headline(s)),
                 "Where each line crosses zero (the diamonds, with their CIs): the argument holds where the two "
                 "coincide; a line that stays clear of zero says no q in the grid does it.",
                 plots.scan_figure(s), scan=s)


def steps(data: dict, live: dict | None = None, gallery_root=None) -> list[dict]:
    """All eight steps (each with its figure)."""
    s4 = step4(data)
    return [step1(live), step2(live), step3(data), s4, step5(data, s4["fits"]), step6(data),
            step7(data, gallery_root), step8(data)]


def build_step(n: int, data: dict, live: dict | None = None, gallery_root=None) -> dict:
    """One step (the page builds only the step on screen)."""
    if n == 1:
        return step1(live)
    if n == 2:
        return step2(live)
    if n == 7:
        return step7(data, gallery_root)
    return {3: step3, 4: step4, 5: step5, 6: step6, 8: step8}[n](data)


def presenter(fig, height: int = 720, font: int = 20):
    """The figure sized for a projector: taller, large type (a copy; the original is unchanged)."""
    import plotly.graph_objects as go

    f = go.Figure(fig)
    f.update_layout(height=height, font=dict(size=font), title_font=dict(size=font + 4),
                    legend=dict(font=dict(size=font - 2)))
    f.update_annotations(font_size=font - 2)
    return f


# -- one self-contained HTML file ------------------------------------------------------------------------------
def _md(text: str) -> str:
    """Escape, then the two bits of markdown the steps use: **bold** and `code`."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def tour_html(all_steps: list[dict], source: str) -> str:
    """The whole tour as one HTML document: plotly.js inlined once (with the first figure), every figure
    interactive, nothing fetched from the network."""
    parts = []
    for i, s in enumerate(all_steps):
        div = s["fig"].to_html(full_html=False, include_plotlyjs=(i == 0), include_mathjax=False,
                               div_id=f"step{s['n']}-figure", config={"displaylogo": False, "responsive": True})
        extra = "".join(f"<li>{_md(line)}</li>" for line in s.get("lines", []))
        parts.append(
            f'<section id="step{s["n"]}"><h2>{s["n"]}. {_md(s["title"])}</h2>'
            f'<p class="formula">{_md(s["formula"])}</p><p>{_md(s["text"])}</p>'
            + (f"<ul>{extra}</ul>" if extra else "")
            + f'<p class="look"><b>Look at:</b> {_md(s["look"])}</p>{div}</section>')
    nav = " · ".join(f'<a href="#step{s["n"]}">{s["n"]}. {_md(s["title"])}</a>' for s in all_steps)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>wdscale tour: why AdamW's weight decay must scale with width</title><style>"
            "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em;color:#1a1a1a}"
            ".formula{font-family:serif;font-size:1.25em;background:#f2f5f9;padding:.4em .8em;border-radius:4px}"
            ".look{color:#1f4e79}section{border-top:1px solid #ddd;padding-top:.5em;margin-top:1.5em}"
            "nav{font-size:.9em}</style></head><body>"
            "<h1>Why AdamW's weight decay must scale with width: a guided tour</h1>"
            f"<p>Data: {_md(source)}. Steps 1 and 2 were computed live with torch's AdamW when this file was written "
            f"({time.strftime('%Y-%m-%d %H:%M')}). λ is torch's <code>weight_decay</code>: the per-step decay is "
            "η·λ and τ = 1/(ηλ) steps. Made by <code>wdscale tour</code>; Fan et al. 2025, arXiv 2510.15262.</p>"
            f"<nav>{nav}</nav>" + "".join(parts) + "</body></html>")


def network_references(doc: str) -> list[str]:
    """Tags in an HTML document that would fetch something: a script or link with an http(s)/protocol-relative
    source, an iframe, img or @import pointing at the network."""
    import re

    pat = re.compile(r"<(?:script|link|img|iframe|source|video|audio)\b[^>]*\b(?:src|href)\s*=\s*[\"']?"
                     r"(?:https?:)?//[^\"'\s>]*", re.I)
    return pat.findall(doc) + re.findall(r"@import\s+(?:url\()?[\"']?(?:https?:)?//", doc, re.I)


def write_html(path, study: str | None = None, store=None, gallery_root=None) -> dict:
    """Write the tour to ``path``; {"path", "bytes", "figures", "network_references"}."""
    data = load(study, store, gallery_root)
    all_steps = steps(data, gallery_root=gallery_root)
    doc = tour_html(all_steps, data["label"])
    path = Path(path)
    path.write_text(doc, encoding="utf-8")
    return {"path": str(path), "bytes": path.stat().st_size, "figures": doc.count('class="plotly-graph-div"'),
            "network_references": len(network_references(doc)), "source": data["label"]}


