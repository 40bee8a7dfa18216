"""Spectra: singular values per matrix and width, their collapse under σ/√(η/λ), and σ_top vs width."""
import streamlit as st

from pages import _ui
from wdscale.science import analysis
from wdscale.show import plots

st.title("Singular-value spectra")
label, recs = _ui.pick_study(_ui.records(), "sp_study")
if not recs:
    st.info("No runs in the store yet: run the demo on Home or a study on Train.")
    st.stop()

recs = [r for r in recs if not r.get("diverged")]
if not recs:
    st.warning("every run of this study diverged: nothing to show")
    st.stop()
rules = sorted({r["rule"] for r in recs})
lrs = sorted({r["lr"] for r in recs})
wds = sorted({r["wd"] for r in recs})
mats = sorted({n for r in recs for n, c in r["param_class"].items() if c == "matrix"} & set(recs[0]["top_sv"]))
others = sorted(set(recs[0]["top_sv"]) - set(mats))

c1, c2, c3, c4 = st.columns(4)
rule = c1.selectbox("Rule", rules, key="sp_rule", format_func=plots.rule_label)
lr0, wd0 = analysis.default_setting(recs, rule)  # the setting with the most widths: every curve exists
lr = c2.selectbox("η₀", lrs, index=lrs.index(lr0), key="sp_lr", format_func=lambda x: f"{x:g}")
wd = c3.selectbox("λ₀", wds, index=wds.index(wd0), key="sp_wd", format_func=lambda x: f"{x:g}")
param = c4.selectbox("Matrix", mats + others, key="sp_param",
                     help="hidden matrices (class 'matrix') are the ones the paper's argument is about")

sel = sorted([r for r in recs if r["rule"] == rule and r["lr"] == lr and r["wd"] == wd], key=lambda r: r["width"])
if not sel:
    st.info("no finished run for this (rule, η₀, λ₀)")
    st.stop()


specs = {r["run_id"]: _ui.spectra(r["run_id"]) for r in sel}  # None: damaged (named in the page's notice)
sel = [r for r in sel if specs[r["run_id"]] is not None]
if not sel:
    st.info("no readable run for this (rule, η₀, λ₀)")
    st.stop()
raw, resc, norm = analysis.final_spectrum_curves(sel, {r["run_id"]: specs[r["run_id"]] for r in sel}, param)

c1, c2 = st.columns(2)
with c1:
    _ui.show(plots.spectra_plot(raw, title=f"Final spectrum of {param}: {rule}, η₀={lr:g}, λ₀={wd:g}"),
             "spectra_raw")
with c2:
    _ui.show(plots.spectra_plot(norm, title="Shape: σ/σ_top vs rank/d", x_title="rank / d",
                                y_title="σ / σ_top"), "spectra_shape")
    cm = analysis.collapse_metric([(c["x"], c["y"]) for c in norm])
    st.metric("shape collapse across widths (mean std of log σ; 0 = perfect)", f"{cm:.3f}")

c1, c2 = st.columns(2)
with c1:
    if resc:
        _ui.show(plots.spectra_plot(resc, title="Rescaled: σ/√(η/λ) vs rank/d (η, λ of this matrix's class)",
                                    x_title="rank / d", y_title="σ / √(η/λ)"), "spectra_rescaled")
        cmr = analysis.collapse_metric([(c["x"], c["y"]) for c in resc])
        st.metric("rescaled collapse (0 = perfect)", f"{cmr:.3f}",
                  help="in steady state σ ∝ √(η/λ)·d^0.75, so this still spreads by the d^0.75 factor across "
                       "widths; the shape panel removes scale entirely")
    else:
        st.info("λ = 0 for this matrix class: nothing to rescale by √(η/λ)")
with c2:
    at = [r for r in recs if r["lr"] == lr and r["wd"] == wd]
    only = [param] if param in mats else None
    fits = analysis.width_exponents(at, params=only, n_boot=300)
    _ui.show(plots.top_sv_vs_width(at, fits, params=only,
                                   title=f"σ_top vs width ({param if only else 'all hidden matrices'})"),
             "spectra_top_sv_vs_width")

st.subheader("Width exponents of σ_top, every (rule, η₀, λ₀)")
allfits = analysis.width_exponents(recs, n_boot=300)
if allfits:
    st.dataframe([{"rule": f["rule"], "η₀": f["lr"], "λ₀": f["wd"], "exponent": f["exponent"],
                   "95% CI": f"[{f['ci_low']:.3f}, {f['ci_high']:.3f}]", "α = exp + (a+b)/2": f["alpha"],
                   "implied λ exponent 2α−1": f["implied_lambda_exponent"], "widths": str(f["widths"])}
                  for f in allfits], hide_index=True, width="stretch")
    st.caption("Fan et al.: α ≈ 0.75, so λ ∝ d^0.5 under η ∝ 1/d. A different α on your setting implies a "
               "different λ exponent (the paper flags this for other architectures).")
else:
    st.info("fits need at least two widths")

st.subheader("Watch the spectrum settle")
width = st.select_slider("Width", [r["width"] for r in sel], key="sp_width")
run = next(r for r in sel if r["width"] == width)
sp = specs[run["run_id"]]
if param in sp:
    steps = list(sp["steps"])
    k = st.select_slider("Snapshot (step)", options=list(range(len(steps))), value=len(steps) - 1,
                         format_func=lambda i: str(steps[i]), key="sp_step")
    tau = run["groups"][run["param_class"][param]]["tau"]
    _ui.show(plots.spectrum_steps(steps, sp[param], upto=k, name=param,
                                  title=f"{param}, d={width}: spectrum up to step {steps[k]} "
                                        f"(τ = {tau:.0f} steps)" if tau else f"{param}, d={width}"),
             "spectra_steps")
