"""Home: the argument in one screen, and a one-click demo sweep that shows it."""
import streamlit as st

from pages import _ui
from wdscale import analysis, plots
from wdscale.jobs import DEMO, demo_configs
from wdscale.sweep import plan

st.title("Why AdamW's weight decay must scale with width")
st.caption("Fan et al. 2025, *Robust Layerwise Scaling Rules by Proper Weight Decay Tuning* (arXiv 2510.15262); "
           "Kosson et al. 2025 (arXiv 2510.19093) on μP as an implicit warmup.")

left, right = st.columns([3, 2])
with left:
    st.markdown(
        "1. **μP fixes the learning rate.** Hidden matrices get $\\eta_2 = \\eta_0/m$ with width multiplier "
        "$m = d/d_0$, so the proxy's best $\\eta_0$ transfers, at least early in training.\n"
        "2. **AdamW reaches a steady state.** After a few $\\tau = 1/(\\eta\\lambda)$ steps each entry's RMS "
        "settles at $\\sqrt{\\eta/(2\\lambda)}$, so $\\|W\\|_F \\approx \\sqrt{\\eta N/(2\\lambda)}$, and the "
        "singular values scale as $\\sqrt{\\eta/\\lambda}$ with a width-invariant shape: "
        "$\\sigma_{top} \\approx \\sqrt{\\eta/\\lambda}\\, d^{0.75}$.\n"
        "3. **With λ fixed, μP's $\\eta \\propto 1/d$ gives $\\sigma_{top} \\propto d^{0.25}$**: the sublayer gain "
        "grows with width and the optimal learning rate drifts.\n"
        "4. **Scaling $\\lambda_2 \\propto \\sqrt{d}$ keeps $\\sigma_{top}$ width-invariant** "
        "(generally: $\\sigma_{top} \\propto d^{\\alpha}$ needs $\\lambda \\propto d^{2\\alpha-1}$). "
        "Kosson et al. argue for $\\eta\\lambda$ fixed ($\\lambda \\propto d$) instead: the explorer lets your runs "
        "decide which rule transfers.")
    st.latex(r"\sigma_{top} \approx \sqrt{\eta/\lambda}\; d^{0.75}, \quad \eta_2=\frac{\eta_0}{m} "
             r"\;\Rightarrow\; \sigma_{top}\propto \frac{d^{0.25}}{\sqrt{\lambda_2}} \;\Rightarrow\; "
             r"\lambda_2 \propto \sqrt{d}")
with right:
    st.info("**torch's AdamW multiplies `weight_decay` by the lr.** Here λ is always torch's `weight_decay`: "
            "each step does $W \\leftarrow W(1-\\eta\\lambda)$, so the per-step decay is **η·λ** and the "
            "steady-state timescale is **τ = 1/(ηλ)** steps.")
    st.markdown("| rule | matrix η | matrix λ |\n|---|---|---|\n| `sp` | η₀ | λ₀ |\n| `mup` | η₀/m | λ₀ |\n"
                "| `wd` (Fan et al.) | η₀/m | λ₀·√m |\n| `indep` | η₀/m | λ₀·m |")

st.divider()
st.subheader("Demo: see it in one click")
configs = demo_configs()
c0 = configs[0]
st.write(f"Synthetic FFN, widths {', '.join(map(str, DEMO['widths']))} (d₀ = {DEMO['base_width']}), rules "
         f"{' & '.join(DEMO['rules'])}, η₀ ∈ {{{', '.join(f'{x:g}' for x in DEMO['lrs'])}}}, "
         f"λ₀ = {DEMO['wds'][0]:g}, {c0.steps} steps: {len(configs)} runs as 3 batched ensembles.")

cached, todo = plan(configs, _ui.store())
n_todo = sum(len(c) for c in todo)
if st.button("Run the demo" if n_todo else "Demo results are in the store (rerun is instant)",
             type="primary", disabled=n_todo == 0, key="demo_button"):
    _ui.submit("demo_job", configs, label="demo")
_ui.job_panel("demo_job")

if n_todo == 0:
    recs = cached
    lrs = sorted({r["lr"] for r in recs})
    opt = analysis.lr_optima(recs, param="lr")
    c1, c2 = st.columns(2)
    with c1:
        # Default: the largest lr with no diverged run; it has the most steps/tau, so the steady state shows.
        safe = [x for x in lrs if not any(r["diverged"] for r in recs if r["lr"] == x)]
        default_lr = max(safe) if safe else lrs[len(lrs) // 2]
        lr = st.select_slider("η₀ for the σ_top plot", options=lrs, value=default_lr, key="demo_lr",
                              format_func=lambda x: f"{x:g}")
        sel = [r for r in recs if r["lr"] == lr]
        fits = analysis.width_exponents(sel, n_boot=200)
        _ui.show(plots.top_sv_vs_width(sel, fits, title=f"σ_top vs width at η₀ = {lr:g} (dashed: fit)"),
                 "demo_top_sv_vs_width")
        for f in fits:
            st.write(f"**{plots.rule_label(f['rule'])}**: σ_top ∝ d^{f['exponent']:.2f} "
                     f"(95% CI [{f['ci_low']:.2f}, {f['ci_high']:.2f}]); implied λ exponent "
                     f"{f['implied_lambda_exponent']:.2f} (paper: 0.5)")
    with c2:
        _ui.show(plots.loss_vs_param(recs, "lr", opt), "demo_loss_vs_lr")
        for (rule, wd), by_w in opt.items():
            drift = analysis.drift_octaves({w: o["x_opt"] for w, o in by_w.items()})
            st.metric(f"{rule}: optimum drift", f"{drift:+.2f} octaves / width doubling" if drift == drift else "n/a")
    st.caption("More: Spectra (collapse of the rescaled spectra), Transfer (drift and verdict), Steady state "
               "(norms vs √(ηN/2λ)). Short runs are a sketch: check steps/τ on the Train page.")
elif cached:
    st.caption(f"{len(cached)} of {len(configs)} demo runs are already in the store.")
