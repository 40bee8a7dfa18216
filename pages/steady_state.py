"""Steady state: AdamW's equilibrium norm √(η/2λ) per entry and timescale τ = 1/(ηλ), theory vs your runs."""
import numpy as np
import streamlit as st

from pages import _ui
from wdscale.science import analysis
from wdscale.show import plots
from wdscale.core import theory
from wdscale.core.errors import DamagedRun
from wdscale.core.rules import resolve

st.title("AdamW's steady state")
st.markdown("With torch's AdamW each step does $W \\leftarrow W(1-\\eta\\lambda) - \\eta\\,u$ with Adam's "
            "normalised update $u$. Growth from the updates balances the decay when each entry's RMS is "
            "$\\rho_\\infty = \\sqrt{\\eta/(2\\lambda)}$, so $\\|W\\|_F \\approx \\sqrt{\\eta N/(2\\lambda)}$; "
            "deviations shrink like $(1-\\eta\\lambda)^{2t}$, i.e. over $\\tau = 1/(\\eta\\lambda)$ steps.")

st.subheader("Playground")
LOG = [float(f"{m * 10 ** e:.3g}") for e in range(-5, 2) for m in (1, 2, 5)]
c1, c2, c3, c4 = st.columns(4)
eta = c1.select_slider("η (lr of the matrix)", LOG, value=0.001, key="ss_eta", format_func=lambda x: f"{x:g}")
lam = c2.select_slider("λ (torch weight_decay)", LOG, value=1.0, key="ss_lam", format_func=lambda x: f"{x:g}")
d = c3.select_slider("width d (matrix d×d)", [32, 64, 128, 256, 512, 1024, 2048, 4096], value=256, key="ss_d")
rho0 = c4.number_input("initial entry RMS ρ₀ (1/√d at init)", value=float(1 / np.sqrt(d)), format="%.4g",
                       key=f"ss_rho0_{d}")
m1, m2, m3, m4 = st.columns(4)
tau = float(theory.tau(eta, lam))
m1.metric("per-step decay η·λ", f"{eta * lam:.3g}")
m2.metric("τ = 1/(ηλ)", f"{tau:,.0f} steps")
m3.metric("ρ∞ = √(η/2λ)", f"{float(theory.equilibrium_rms(eta, lam)):.4g}")
m4.metric("‖W‖_F ≈ √(ηN/2λ)", f"{float(theory.equilibrium_fro(eta, lam, d * d)):.4g}",
          help=f"N = d² = {d * d:,} entries; angular update per step √(2ηλ(1−β₁)/(1+β₁)) = "
               f"{float(theory.angular_update(eta, lam)):.3g} rad")
t = np.linspace(0, 5 * tau if np.isfinite(tau) else 1000, 300)
curves = []
scenarios = [(eta, lam, f"η={eta:g}, λ={lam:g} (proxy)")]
for rule in ("mup", "wd"):  # the same matrix at m = 4, as the rule table resolves it
    g = resolve(rule, 4, 1, eta, lam).groups["matrix"]
    scenarios.append((g["lr"], g["wd"], f"{rule} at m=4: η={g['lr']:.3g}, λ={g['wd']:.3g}"))
for k, (e, l, name) in enumerate(scenarios):
    curves.append({"name": name, "rho": theory.norm_trajectory(t, e, l, rho0),
                   "rho_inf": float(theory.equilibrium_rms(e, l)), "tau": float(theory.tau(e, l))})
_ui.show(plots.norm_theory(t, curves, title="Predicted entry RMS over training (dashed: ρ∞, dotted: τ)"),
         "steady_theory")

st.subheader("Your runs: measured vs predicted")
label, recs = _ui.pick_study(_ui.records(), "ss_study")
recs = [r for r in recs if not r.get("diverged")]
if not recs:
    st.info("No finished runs yet: run the demo on Home or a study on Train.")
    st.stop()


@st.cache_data(max_entries=512)
def _weight_norms(root: str, run_id: str, stamp: tuple) -> dict:
    """{param: (fro, n_entries)} from the stored final weights."""
    w = _ui.view_store().weights(run_id)
    return {k: (float(v.float().norm()), int(v.numel())) for k, v in w.items() if v.ndim == 2}


def weight_norms(run_id: str) -> dict | None:
    try:
        return _weight_norms(_ui.view_root(), run_id, _ui.stamp(run_id))
    except DamagedRun as e:  # named in the page's one notice; the other runs are drawn
        _ui.mark_damaged(e)
        return None


if _ui.weights_shipped():
    norms = {r["run_id"]: weight_norms(r["run_id"]) for r in recs}
    recs = [r for r in recs if norms[r["run_id"]] is not None]
else:  # a reference study without weights: σ_top over training below still comes from its spectra
    st.info("Weights not shipped in reference studies: the measured ‖W‖_F needs them. "
            f"`wdscale gallery reproduce {_ui.reference()} --out DIR` retrains the study with its weights.")
    norms = {r["run_id"]: {} for r in recs}
rows = analysis.norm_rows(recs, norms)
_ui.show(plots.norm_pred_vs_measured(rows), "steady_pred_vs_measured")
st.caption("Faded markers: runs shorter than 3τ (not yet at equilibrium). Marker size grows with width.")
ratio = analysis.median_norm_ratio(rows)
if ratio is not None:
    st.metric("median measured/predicted ‖W‖_F over runs ≥ 3τ", f"{ratio:.3f}")

st.subheader("σ_top and ‖W‖_F over training")
rules = sorted({r["rule"] for r in recs})
lrs = sorted({r["lr"] for r in recs})
wds = sorted({r["wd"] for r in recs})
mats = sorted({p for r in recs for p, c in r["param_class"].items() if c == "matrix"} & set(recs[0]["top_sv"]))
c1, c2, c3, c4 = st.columns(4)
rule = c1.selectbox("Rule", rules, key="ss_rule")
lr0, wd0 = analysis.default_setting(recs, rule)  # the setting with the most widths
lr = c2.selectbox("η₀", lrs, index=lrs.index(lr0), key="ss_lr", format_func=lambda x: f"{x:g}")
wd = c3.selectbox("λ₀", wds, index=wds.index(wd0), key="ss_wd", format_func=lambda x: f"{x:g}")
param = c4.selectbox("Matrix", mats or sorted(recs[0]["top_sv"]), key="ss_param")
series = []
for r in sorted([r for r in recs if r["rule"] == rule and r["lr"] == lr and r["wd"] == wd], key=lambda r: r["width"]):
    sp = _ui.spectra(r["run_id"])
    if sp is None or param not in sp:
        continue
    sv = sp[param]
    g = r["groups"][r["param_class"][param]]
    n = norms[r["run_id"]].get(param, (None, None))[1]
    series.append({"name": f"d={r['width']}", "width": r["width"], "steps": sp["steps"].tolist(),
                   "top_sv": sv[:, 0], "fro": np.sqrt((sv ** 2).sum(1)),  # ‖W‖_F² = Σσ²
                   "fro_pred": float(theory.equilibrium_fro(g["lr"], g["wd"], n)) if g["wd"] and n else None,
                   "tau": g["tau"] if g.get("tau") else None})
_ui.show(plots.top_sv_over_training(series), "steady_top_sv_over_training")

st.subheader("The law measured: σ ∝ η^a·λ^−b, η and λ apart")
st.markdown("The equilibrium above is a *random walk* balance (Adam's update u of RMS ~1 in random directions), "
            "which gives σ ∝ √(η/λ): a = b = ½. Where u is consistent the fixed point is W ≈ u/λ (no η, λ^−1), and an "
            "lr decay pushes the end-of-run weights that way. One least-squares fit of log σ on log η and log λ "
            "(the matrix class's own, one intercept per width; runs at S = Σₜηₜλ ≥ 3, each computation once; "
            "bootstrap 95% CIs) measures both exponents per matrix class.")


@st.cache_data(show_spinner="fitting the law on the reference studies ...")
def _gallery_laws() -> dict:
    from wdscale.science.gallery import gallery_laws

    return gallery_laws(n_boot=300)


@st.cache_data(show_spinner="fitting the law on this study ...", max_entries=16)
def _study_law(root: str, ids: tuple) -> dict:
    from wdscale.science import law as _law

    store = _ui.view_store()
    return _law.measure_law([r for r in recs if r["run_id"] in set(ids)], store.spectra, n_boot=300)


from wdscale.science import law as law_mod  # noqa: E402

mine = _study_law(_ui.view_root(), tuple(sorted(r["run_id"] for r in recs)))
laws = {f"{label} (this study)": mine, **_gallery_laws()}
st.markdown(f"**{law_mod.where_law_holds(laws)}**")
for lw in laws.values():
    if lw:
        st.caption(lw["sentence"])
st.dataframe(law_mod.law_rows(laws), hide_index=True, width="stretch")
over = {n: lw["over_time"] for n, lw in laws.items() if lw and lw.get("over_time")}
for n, rows_t in over.items():
    st.caption(f"a(t), b(t) of σ_top in {n} (all hidden matrices pooled; runs past S(t) ≥ 3 at each snapshot)")
    st.dataframe([{"step": o["step"], "a": round(o["a"], 3), "b": round(o["b"], 3), "runs": o["n"],
                   "median S(t)": o["median_S"]} for o in rows_t], hide_index=True)
flat = [n for n, lw in laws.items() if lw and not lw.get("over_time") and "this study" not in n]
if flat:
    st.caption(f"{', '.join(flat)}: final spectrum only stored, so no a(t), b(t) through the schedule.")

st.subheader("Kosson's balance: the stationary norm from update RMS, cos(W, u) and ηλ")
st.markdown("The exact step identity ‖W′‖² = (1−ηλ)²‖W‖² − 2η(1−ηλ)⟨W,u⟩ + η²‖u‖² at ‖W′‖ = ‖W‖ gives ‖W‖ from "
            "the update RMS, cos(W, u) and ηλ (``wdscale.science.law.predict_norm``): cos = 0 is the random walk "
            "(√(ηN/2λ) at RMS 1), cos = −1 the signal case ‖u‖/λ. The check below trains a small synthetic-core grid "
            "(mup, widths 32 and 64, 1000 steps, nothing stored; ~20 s on one core) recording u and cos(W, u) every "
            "5 steps, and compares the last third's mean ‖W‖ with the prediction.")
if st.button("Run the balance check", key="ss_balance"):
    with st.spinner("training 8 small runs with the balance monitor ..."):
        brows = law_mod.balance_grid()
    st.dataframe([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in brows],
                 hide_index=True)
    err = np.median([abs(r["error"]) for r in brows])
    noise = np.median([abs(r["predicted_noise"] / r["measured"] - 1) for r in brows])
    st.metric("median |predicted/measured − 1|", f"{err:.3f}",
              help=f"with cos(W, u) set to 0 (pure random walk): {noise:.2f}")
