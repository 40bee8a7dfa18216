"""Diagnostics: sublayer gains per width, the μP coordinate check, and μP as an implicit warmup (Kosson et al.)."""
import numpy as np
import streamlit as st

from pages import _ui
from wdscale.science import analysis
from wdscale.show import plots
from wdscale.core import theory
from wdscale.core.errors import DamagedRun

try:
    from wdscale.science import coord as diagnostics
except ImportError:  # written by another helper; the page degrades to the theory parts
    diagnostics = None

st.title("Diagnostics")
tab_gain, tab_coord, tab_warm = st.tabs(["Sublayer gain", "Coordinate check", "μP as implicit warmup"])

# -- sublayer gain ----------------------------------------------------------------------------------------
with tab_gain:
    st.markdown("Fan et al.'s diagnostic: the gain RMS(W x)/RMS(x) of each hidden matrix on real activations. "
                "If σ_top grows with width, so does the gain; λ ∝ √d is meant to keep it flat.")
    label, recs = _ui.pick_study(_ui.records(), "dg_study")
    recs = [r for r in recs if not r.get("diverged")]
    if diagnostics is None or not hasattr(diagnostics, "sublayer_gains"):
        st.info("wdscale.science.coord is not available in this checkout")
    elif not recs:
        st.info("No finished runs yet: run the demo on Home or a study on Train.")
    elif not _ui.weights_shipped():
        st.info("Weights not shipped in reference studies: the gains are measured on the final weights. "
                f"`wdscale gallery reproduce {_ui.reference()} --out DIR` retrains the study with its weights.")
    else:
        lrs = sorted({r["lr"] for r in recs})
        lr = st.selectbox("η₀", lrs, index=len(lrs) // 2, key="dg_lr", format_func=lambda x: f"{x:g}")
        sel = [r for r in recs if r["lr"] == lr]

        @st.cache_data(max_entries=32, show_spinner="measuring gains on a validation batch…")
        def gains(root: str, run_ids: tuple) -> list[dict]:
            s = _ui.view_store()
            return diagnostics.sublayer_gains(s, [s.get(i) for i in run_ids])

        rows = []
        while sel:  # a damaged run is named in the page's notice and left out; the others are measured
            try:
                rows = gains(_ui.view_root(), tuple(r["run_id"] for r in sel))
                break
            except DamagedRun as e:
                _ui.mark_damaged(e)
                sel = [r for r in sel if r["run_id"] != e.run_id]
        hidden = [r for r in rows if r["param_class"] == "matrix"]
        if rows:
            _ui.show(plots.sublayer_gain_plot(hidden or rows), "diag_sublayer_gain")
            st.caption("Hidden matrices only; lines: rule and matrix. Flat = width-invariant gain.")
        else:
            st.info("no readable run at this η₀")

# -- coordinate check -------------------------------------------------------------------------------------
with tab_coord:
    st.markdown("microsoft/mup's coordinate check: output RMS of each module after a few Adam steps. Under SP it "
                "grows with width after the first update; under μP it stays flat.")
    if diagnostics is None or not hasattr(diagnostics, "coord_check"):
        st.info("wdscale.science.coord is not available in this checkout")
    else:
        c1, c2, c3, c4 = st.columns(4)
        import os as _os

        from wdscale.models.own import model_file_paths

        # model files only from the folder named when the server started (WDSCALE_MODELS): never a typed path
        own_files = [str(f) for f in model_file_paths(_os.environ.get("WDSCALE_MODELS"))]
        cc_model = c1.radio("Model", ["synthetic", "transformer"] + own_files, key="cc_model",
                            format_func=lambda m: m if m in ("synthetic", "transformer") else f"file: {_os.path.basename(m)}",
                            help="model files are listed from the folder in $WDSCALE_MODELS (docs/own-model.md)")
        cc_rules = c2.multiselect("Rules", ["sp", "mup", "wd", "indep"], default=["sp", "mup"], key="cc_rules")
        cc_steps = c3.slider("Adam steps", 1, 10, 4, key="cc_steps")
        cc_lr = c4.select_slider("η₀", [1e-3, 3e-3, 1e-2, 3e-2, 1e-1], value=1e-2, key="cc_lr")
        cc_widths = st.multiselect("Widths", [32, 64, 128, 256, 512], default=[64, 128, 256], key="cc_widths")

        @st.cache_data(max_entries=16, show_spinner="running the coordinate check…")
        def coord(model, widths, rules, steps, lr):
            return diagnostics.coord_check(model=model, widths=widths, rules=rules, steps=steps, lr=lr, wd=0.0,
                                           base_width=min(widths), seed=0)

        if not cc_rules or not cc_widths:
            st.error("choose at least one rule and one width")
        elif st.button("Run coordinate check", key="cc_go") or st.session_state.get("cc_done"):
            st.session_state["cc_done"] = True
            rows = coord(cc_model, tuple(sorted(cc_widths)), tuple(cc_rules), cc_steps, cc_lr)
            modules = sorted({r["module"] for r in rows})
            module = st.selectbox("Module", modules, index=len(modules) - 1, key="cc_module")
            _ui.show(plots.coord_check_plot(rows, module), "diag_coord_check")

# -- Kosson et al.: implicit warmup ------------------------------------------------------------------------
with tab_warm:
    st.markdown("Kosson et al. 2025 (secondary for the formulas): seen over time, μP's lr scaling multiplies the "
                "update size by $s_t = 1/\\sqrt{1+(m^2-1)a^{2t}}$ (with $\\rho_0=\\rho_\\infty$, $a = 1-\\eta\\lambda$): "
                "from 1/m back to 1 over ~τ steps, an implicit warmup. Their replacement: no μP lr scaling and an "
                "exponential warmup $\\hat s_t = m^{\\min(0, t/T_W - 1)}$.")
    c1, c2, c3, c4, c5 = st.columns(5)
    m = c1.select_slider("width multiplier m", [2, 4, 8, 16, 32], value=4, key="kw_m")
    eta = c2.select_slider("η (matrix)", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], value=1e-3, key="kw_eta")
    lam = c3.select_slider("λ", [0.01, 0.1, 0.3, 1.0, 3.0], value=1.0, key="kw_lam")
    r0 = c4.select_slider("ρ₀/ρ∞", [0.25, 0.5, 1.0, 2.0, 4.0], value=1.0, key="kw_r0")
    horizon = c5.number_input("steps", 100, 200000, 4000, key="kw_T")
    t = np.linspace(0, horizon, 400)
    tw = 0.5 * horizon
    _ui.show(plots.warmup_factors(t, [
        {"name": "μP implicit s_t", "s": theory.implicit_warmup_factor(t, m, eta, lam, r0)},
        {"name": "exp. warmup ŝ_t (T_W = 50%)", "s": theory.exp_warmup_factor(t, m, tw), "dash": "dash"},
    ]), "diag_warmup_factors")
    st.caption(f"τ = 1/(ηλ) = {float(theory.tau(eta, lam)):,.0f} steps.")

    st.markdown("**Run it**: μP (λ fixed) vs SP + exponential warmup over 50% of the steps, loss vs η₀ per width.")
    try:
        from wdscale.science.kosson import warmup_configs
    except ImportError:
        warmup_configs = None
    if warmup_configs is None:
        st.info("wdscale.science.kosson is not available in this checkout")
    else:
        c1, c2, c3 = st.columns(3)
        kw_steps = c1.number_input("steps", 50, 20000, 400, step=50, key="kw_steps")
        kw_wd = c2.select_slider("λ₀", [0.1, 0.3, 1.0, 3.0], value=1.0, key="kw_wd")
        kw_widths = c3.multiselect("widths", [64, 128, 256, 512], default=[64, 128, 256], key="kw_widths")
        lrs = [0.002, 0.004, 0.008, 0.016, 0.032]
        try:
            configs = warmup_configs(sorted(kw_widths), lrs, float(kw_wd), int(kw_steps), min(kw_widths or [64]),
                                     warmup=0.5, rules=("mup",)) if kw_widths else []
        except ValueError as e:
            configs = []
            st.error(str(e))
        if not kw_widths:
            st.error("choose at least one width")
        elif st.button("Train the comparison", key="kw_go"):
            _ui.submit("warm_job", configs, label="kosson warmup")
        _ui.job_panel("warm_job", show_curves=False)
        ids = [c.run_id for c in configs]
        got = [r for r in (_ui.store().get(i) for i in ids) if r]
        if got:
            # one panel per variant: relabel SP + exp warmup so it gets its own panel
            shown = [{**r, "rule": "sp + exp warmup" if r["schedule"] == "exp_warmup" else r["rule"]} for r in got]
            opt = analysis.lr_optima(shown, param="lr")
            _ui.show(plots.loss_vs_param(shown, "lr", opt, title="μP vs SP + exponential warmup"),
                     "diag_warmup_comparison")
            for (rule, _), by_w in opt.items():
                d = analysis.drift_octaves({w: o["x_opt"] for w, o in by_w.items()})
                st.write(f"**{rule}**: optimum drifts {d:+.2f} octaves per width doubling" if d == d
                         else f"**{rule}**: drift n/a")
            st.caption(f"{len(got)} of {len(configs)} runs in the store.")
