"""Home: the argument in one screen, and a one-click demo sweep that shows it."""
import re

import numpy as np
import streamlit as st

from pages import _ui
from wdscale.science import analysis
from wdscale.science import study as demo
from wdscale.show import plots
from wdscale.science.study import DEMO
from wdscale.core.rules import symbolic

st.title("Why AdamW's weight decay must scale with width")
st.caption("Fan et al. 2025, *Robust Layerwise Scaling Rules by Proper Weight Decay Tuning* (arXiv 2510.15262); "
           "Kosson et al. 2025 (arXiv 2510.19093) on μP as an implicit warmup.")


@st.cache_data(show_spinner="fitting the law on the reference studies ...")
def _laws() -> dict:
    from wdscale.science import gallery

    return gallery.gallery_laws(n_boot=300)


def _esc(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]<>#|~$])", r"\\\1", str(text))


def law_claim(laws: dict) -> str:
    """Where the reference studies' measured law is √(η/λ) and where not, with the exponents: "≈ √(η/λ)" is said
    only of a study whose pooled a and b are both within 0.1 of ½ (``law.holds``); the others get their own
    σ_top ∝ η^a·λ^−b with 95% CIs."""
    from wdscale.science.law import holds

    ci = lambda c: f"[{c[0]:.2f}, {c[1]:.2f}]" if c and all(np.isfinite(c)) else ""
    yes, no = [], []
    for name, lw in laws.items():
        p = (lw or {}).get("pooled")
        h = holds(p)
        if h is None:
            continue
        nums = f"a {p['a']:.2f} {ci(p['a_ci'])}, b {p['b']:.2f} {ci(p['b_ci'])}, {p['n']} runs"
        if h:
            yes.append(f"{_esc(name)} ({nums})")
        else:
            no.append(f"{_esc(name)}: σ_top ∝ η^{p['a']:.2f}·λ^−{p['b']:.2f} ({nums})")
    if not yes and not no:
        return "no reference study here separates η from λ at S ≥ 3, so the law is untested."
    out = []
    if yes:
        out.append("σ_top ≈ √(η/λ) in " + "; ".join(yes))
    if no:
        out.append(("not in " if yes else "σ_top is not √(η/λ) in ") + "; ".join(no))
    return "; ".join(out) + "."


left, right = st.columns([3, 2])
with left:
    st.markdown(
        "1. **μP fixes the learning rate.** Hidden matrices get $\\eta_2 = \\eta_0/m$ with width multiplier "
        "$m = d/d_0$, so the proxy's best $\\eta_0$ transfers, at least early in training.\n"
        "2. **AdamW reaches a steady state.** After a few $\\tau = 1/(\\eta\\lambda)$ steps decay balances the "
        "updates. If Adam's update is a random walk, each entry's RMS settles at $\\sqrt{\\eta/(2\\lambda)}$ "
        "and the spectrum scales as $\\sqrt{\\eta/\\lambda}$ (Fan et al.: $a = b = 1/2$ in "
        "$\\sigma_{top} \\propto \\eta^{a}\\lambda^{-b}d^{\\gamma}$); where the update is consistent, "
        "$W \\approx u/\\lambda$ (no $\\eta$). **Measured** (all hidden matrices pooled, runs at S ≥ 3, 95% CIs): "
        + law_claim(_laws()) + "\n"
        "3. **With λ fixed, μP's $\\eta \\propto 1/d$ moves $\\sigma_{top}$ with width** "
        "($\\propto d^{\\gamma - a}$; the paper's $a = 1/2$, $\\gamma = 0.75$ give $d^{0.25}$): the sublayer gain "
        "grows with width and the optimal learning rate drifts.\n"
        "4. **Scaling λ with width keeps $\\sigma_{top}$ width-invariant:** $\\lambda \\propto d^{(\\gamma-a)/b}$, "
        "the `fitted` rule (at $a = b = 1/2$ the paper's $\\lambda \\propto d^{2\\alpha-1} = \\sqrt{d}$). "
        "Kosson et al. argue for $\\eta\\lambda$ fixed ($\\lambda \\propto d$) instead: the explorer lets your runs "
        "decide which rule transfers.")
    st.latex(r"\sigma_{top} \propto \eta^{a}\lambda^{-b} d^{\gamma}, \quad \eta_2=\frac{\eta_0}{m} "
             r"\;\Rightarrow\; \sigma_{top}\propto \frac{d^{\gamma-a}}{\lambda_2^{b}} \;\Rightarrow\; "
             r"\lambda_2 \propto d^{(\gamma-a)/b}")
    st.caption("Fan et al.: a = b = ½, γ = 0.75 ⇒ λ₂ ∝ √d. Where the √(η/λ) law holds and where not, per matrix "
               "class: the **Regimes** page; through the lr schedule: docs/law.md.")
with right:
    st.info("**torch's AdamW multiplies `weight_decay` by the lr.** Here λ is always torch's `weight_decay`: "
            "each step does $W \\leftarrow W(1-\\eta\\lambda)$, so the per-step decay is **η·λ** and the "
            "steady-state timescale is **τ = 1/(ηλ)** steps.")
    st.markdown("| rule | matrix η | matrix λ |\n|---|---|---|\n" + "\n".join(
        f"| `{r}` | {' | '.join(symbolic(r))} |" for r in ("sp", "mup", "wd", "indep")))
    st.caption("generated from the rule table, wdscale/core/rules.py; `wd` is Fan et al.'s rule")



@st.cache_data(show_spinner=False)
def _regimes():
    from wdscale.science import gallery

    return gallery.reference_regimes()


# rule -> column header of the at-a-glance table
RULE_COLUMNS = {"mup": "λ fixed (`mup`)", "wd": "λ ∝ √d (`wd`)", "indep": "λ ∝ d (`indep`)", "fitted": "fitted"}


@st.cache_data(show_spinner="reading the reference studies' λ scans …")
def _scans() -> dict:
    from wdscale.science import scan_run

    return scan_run.reference_scans()


def regime_table(studies: list[dict], scans: dict | None = None) -> str:
    """The regime finding as a Markdown table: per reference study its regime, best rule, the λ exponent that
    transfers (``scan_run.crossing_text``; "—" without a stored scan) and every rule's drift of the optimal η₀
    (octaves per width doubling) with its 95% CI, all from ``regimes.study_regime``."""
    from wdscale.science.scan_run import crossing_text
    from wdscale.science.verdict import best_rule_label

    rules = [r for r in RULE_COLUMNS if any(r in s["rules"] for s in studies)]
    lines = ["| regime (study, seeds) | best rule | λ exponent that transfers [CI] | "
             + " | ".join(RULE_COLUMNS[r] for r in rules) + " |", "|---|---|---|" + "---|" * len(rules)]
    for s in studies:
        cells = []
        for r in rules:
            v = s["rules"].get(r)
            cells.append("-" if v is None else f"{v['drift']:+.2f} [{v['drift_ci'][0]:+.2f}, {v['drift_ci'][1]:+.2f}]")
        q = crossing_text(scans[s["name"]]) if s["name"] in (scans or {}) else "—"
        regime = s["regime"].replace("|", "/").replace("~", "≈")
        lines.append(f"| {regime} ({s['name']}, {len(s.get('seeds') or [])}) | {best_rule_label(s)} | {q} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


studies, _missing = _regimes()
if studies:
    st.markdown("**The regime decides the rule.** Drift of the proxy's optimal η₀ in octaves per width doubling "
                "(0 = it transfers; 95% CI over seeds), from the reference studies, no training:")
    st.markdown(regime_table(studies, _scans()))
    st.caption("Not settled: CIs overlap, or the one-pass optima sit below the steady state (S = Σηλ < 3). "
               "Details, α per matrix and S at each optimum: the **Regimes** page. λ exponent that transfers: "
               "where the drift crosses zero under λ ∝ d^q (the named rules are q = 0, ½, 1; no q in the grid: "
               "\"none\"): the **Which λ transfers** page.")

st.divider()
st.subheader("Demo: see it in one click")
d = DEMO
steps = demo._steps(None)
st.write(f"Synthetic core (a normalized residual MLP on a finite, noisy power-law task: docs/synthetic.md), "
         f"{steps} steps. **1.** The proxy's own optimum: η₀ × λ₀ grid at d₀ = {d['base_width']} "
         f"({len(d['proxy_lrs'])} × {len(d['proxy_wds'])}, {len(d['seeds'])} seeds). **2.** Transfer to widths "
         f"{', '.join(map(str, d['widths']))} under {', '.join(f'`{r}`' for r in d['rules'])} at that λ₀, "
         f"{len(d['lr_octaves'])} learning rates around η₀. **3.** The `fitted` rule, λ ∝ d^(e/b̂) from this "
         "study's own cheapest runs. Every run ≥ 3 τ = 1/(η·λ). The same phases, through the same code, as "
         "`wdscale demo`.")

store = _ui.store()
state = demo.preset_state(DEMO, store, steps)  # what the store holds, read without training
n_todo = 0 if state["complete"] else state["n_runs"] - state["stored"]


threads = _ui.manager().threads
cal = _ui._calibration("synthetic", "cpu", threads) if n_todo else None  # cached, else timed in the background
eta = {}
if cal is not None:
    from wdscale.show.jobs import demo_eta

    eta = demo_eta(store, steps, threads=threads, cals={"synthetic": cal})
secs = eta.get("seconds") or 0
when = ("ETA being measured" if cal is None else f"≈ {secs:.0f} s" if secs < 90 else f"≈ {secs / 60:.0f} min") + \
    " on this machine"
training = bool(n_todo) and _ui.job_running("demo_job")  # here, or started in another tab or before a reload
label = ("The demo is training (below)" if training else f"Run the demo ({when}, {n_todo} runs)" if n_todo else
         "Demo results are in the store (rerun is instant)")
if st.button(label, type="primary", disabled=n_todo == 0 or training, key="demo_button",
             help="the cost model's ETA (wdscale.training.cost), calibrated on this machine; the demo trains in "
                  "a process of its own, on every core, at a lower priority than this page"):
    _ui.submit_study("demo_job", DEMO, steps, "cpu", eta=eta)
_ui.job_panel("demo_job")
if n_todo == 0:
    phases = state["phases"]
    phase1 = [store.get(c.run_id) for c in phases[0]]
    phase2 = [r for r in (store.get(c.run_id) for c in dict.fromkeys(c for ph in phases[1:] for c in ph)) if r]
    s = demo.summarize(phase1, phase2)
    (st.success if s["conclusive"] else st.warning)(s["sentence"])
    st.markdown(f"**What it shows.** {demo.plain_reading(s)} Every run reached ≥ {s['min_steps_over_tau']:.1f} τ; "
                f"the proxy's own optimum is η₀ = {s['proxy']['eta0']:.3g}, λ₀ = {s['proxy']['lam0']:g}.")
    c1, c2 = st.columns(2)
    with c1:
        _ui.show(plots.drift_plot(s["rules"], s["threshold"]), "demo_drift")
    with c2:
        _ui.show(plots.proxy_grid_plot(s["proxy"]), "demo_proxy_grid")
    opt = analysis.lr_optima(phase2, param="lr")
    _ui.show(plots.loss_vs_param(phase2, "lr", opt, title="Loss vs learning rate, per rule (seed mean; ★ optimum)"),
             "demo_loss_vs_lr")
    sel = [r for r in phase2 if abs(r["lr"] - s["proxy"]["eta0"]) <= 1e-9 * r["lr"]]
    fits = [v["top_sv_fit"] for v in s["rules"].values() if v.get("top_sv_fit")]  # fitted once, in summarize
    _ui.show(plots.top_sv_vs_width(sel, fits, title=f"σ_top vs width at the proxy's η₀ = {s['proxy']['eta0']:.3g}"),
             "demo_top_sv_vs_width")
    st.dataframe([{"rule": r, "what": v["info"], "drift (oct/doubling)": v["drift"],
                   "95% CI": f"[{v['drift_ci'][0]:+.2f}, {v['drift_ci'][1]:+.2f}]", "verdict": v["verdict"],
                   "σ_top ∝ d^": v["top_sv_exponent"], "max regret": v["max_regret"]}
                  for r, v in s["rules"].items()], hide_index=True, width="stretch")
    st.caption("More: Spectra (collapse of the rescaled spectra), Transfer (curves per width, horizon check), "
               "Steady state (norms vs √(ηN/2λ)). Reproduce headless: `wdscale demo --json`.")
elif state["stored"]:
    st.caption(f"{state['stored']} of the demo's {state['n_runs']} runs are already in the store.")

st.caption("**Reference studies** ship with wdscale (a larger synthetic study: 4 widths, 3 rules, 3 seeds): open one "
           "read-only under **Data** in the sidebar of Spectra, Transfer, Steady state, Diagnostics or Runs; "
           "`wdscale gallery list` lists them and `wdscale gallery reproduce NAME` retrains one and compares its "
           "numbers.")
