"""Transfer: loss vs η₀ (and λ₀) per width, one panel per rule; where the optimum goes as width grows."""
import math

import streamlit as st

from pages import _ui
from wdscale.science import analysis
from wdscale.show import plots
from wdscale.science import verdict

st.title("Learning-rate transfer")
label, recs = _ui.pick_study(_ui.records(), "tr_study")
if not recs:
    st.info("No runs in the store yet: run the demo on Home or a study on Train.")
    st.stop()

steps = sorted({int(s) for r in recs for s in (r.get("evals") or {})})
metric_opts = ["final"] + [s for s in steps if s != recs[0]["steps"]]
at = st.sidebar.selectbox("Loss measured at", metric_opts, key="tr_at",
                          format_func=lambda s: "end of training (final validation loss)" if s == "final"
                          else f"step {s} (validation)")
step = None if at == "final" else int(at)
raw = recs  # the verdict reads the eval at `step` itself (analysis.run_loss: one definition of a run's loss)
if step is not None:  # the plot functions read the 'final_loss' field: substitute the eval at that step
    recs = [{**r, "final_loss": analysis.record_loss(r, step),
             "diverged": analysis.record_loss(r, step) is None and r.get("diverged")} for r in recs]


def show_verdict(recs: list[dict], param: str, step: int | None = None) -> None:
    """verdict.transfer_verdict as one line per rule plus its table (drift within ±threshold octaves/doubling)."""
    if not hasattr(verdict, "transfer_verdict"):
        return
    rows = verdict.transfer_verdict(recs, param=param, metric="final_loss", step=step)
    if not rows:
        st.caption("verdict needs ≥ 2 widths and ≥ 3 grid values per width")
        return
    st.markdown(f"**Transfer verdict ({'η' if param == 'lr' else 'λ'})**")
    for c in verdict.compare_rules(rows):
        if len(c["ranking"]) > 1:
            (st.success if c["conclusive"] else st.warning)(c["sentence"])
    colors = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "orange"}
    table = []
    for v in rows:
        other = "wd" if param == "lr" else "lr"
        drift = v["drift"]
        lo, hi = v["drift_ci"]
        drift_s = f"{drift:+.2f}" if math.isfinite(drift) else "n/a"
        if math.isfinite(lo):
            drift_s += f" (95% CI {lo:+.2f} to {hi:+.2f}, {v['n_seeds']} seed{'s' if v['n_seeds'] > 1 else ''})"
        reg = v["max_regret"]
        st.write(f":{colors.get(v['verdict'], 'gray')}[**{v['verdict']}**] **{v['rule']}** ({other}₀ = {v[other]:g}): optimum "
                 f"drifts {drift_s} octaves per width doubling (threshold ±{v['threshold']:g}); max regret at "
                 f"the proxy's optimum {reg:.3g}" + (f". {'; '.join(v['notes'])}" if v["notes"] else ""))
        row = {"rule": v["rule"], f"{other}₀": v[other], "verdict": v["verdict"], "drift": drift,
               "CI low": lo, "CI high": hi,
               "max regret": reg, "proxy optimum": v["proxy_x_opt"], "min steps/τ": v["min_steps_over_tau"]}
        for w, o in v["optima"].items():
            row[f"opt d={w}"] = o["x_opt"]
        table.append(row)
    st.dataframe(table, hide_index=True, width="stretch")


# The proxy's own η × λ grid (the demo's phase 1: several λ₀ at one width) is its own figure, not curves in the
# mup panel: a λ₀ that only one width has is the proxy's grid, not a transfer curve.
wd_widths = {}
for r in recs:
    wd_widths.setdefault(r["wd"], set()).add(r["width"])
proxy_wds = ({wd for wd, ws in wd_widths.items() if len(ws) == 1}
             if any(len(ws) > 1 for ws in wd_widths.values()) else set())
proxy_recs = []
if proxy_wds:
    d0 = min(next(iter(wd_widths[wd])) for wd in proxy_wds)
    proxy_recs = [r for r in recs if r["width"] == d0 and not r.get("diverged")]
    recs = [r for r in recs if r["wd"] not in proxy_wds]
    raw = [r for r in raw if r["wd"] not in proxy_wds]

st.subheader("Loss vs learning rate")
if len({r["lr"] for r in recs}) < 2:
    st.info("this study has one η₀: train an LR grid to see transfer")
else:
    opt = analysis.lr_optima(recs, param="lr")
    _ui.show(plots.loss_vs_param(recs, "lr", opt), "transfer_loss_vs_lr")
    st.caption("★ interpolated optimum (parabola in log η through the grid minimum); ✕ diverged runs, drawn at the "
               "top. Perfect transfer: the stars line up vertically (drift 0).")
    show_verdict(raw, "lr", step)

if len({r["wd"] for r in proxy_recs}) > 1 and len({r["lr"] for r in proxy_recs}) > 1:
    from wdscale.science.study import proxy_optimum

    st.subheader(f"The proxy's own optimum: η₀ × λ₀ at d₀ = {proxy_recs[0]['width']}")
    _ui.show(plots.proxy_grid_plot(proxy_optimum(proxy_recs),
                                   title=f"The proxy's η₀ × λ₀ grid at d₀ = {proxy_recs[0]['width']} (seed-mean loss; "
                                         "★ its minimum, the λ₀ the transfer curves use)"), "transfer_proxy_grid")

st.subheader("Loss vs weight decay")
recs_w = [r for r in analysis.swept(recs, "wd") if r["wd"] > 0]  # curves of >= 3 λ values; log axis
if not recs_w:
    st.info("no λ grid in this study (≥ 3 values of λ₀ at one width and η₀): train one (Train page) to see how "
            "the optimal weight decay moves")
else:
    optw = analysis.lr_optima(recs_w, param="wd")
    _ui.show(plots.loss_vs_param(recs_w, "wd", optw), "transfer_loss_vs_wd")
    show_verdict(raw, "wd", step)
