"""Runs & export: browse, compare and delete stored runs; download a study as a reproducible zip bundle."""
import functools
import json
import threading

import streamlit as st

from pages import _ui
from wdscale.science import analysis
from wdscale.show import export
from wdscale.show import plots

st.title("Runs & export")
all_recs = _ui.records(done_only=False)
st.caption(f"Data dir: `{_ui.view_root()}` · {len(all_recs)} runs (done and partial). "
           "Each run id is a hash of its config: the same config is never retrained.")
if not all_recs:
    st.info("No runs in the store yet: run the demo on Home or a study on Train.")
    st.stop()

label, recs = _ui.pick_study(all_recs, "rn_study")
rows = export.records_rows(recs)
event = st.dataframe(rows, hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row",
                     key="rn_table")
picked = [recs[i] for i in (event.selection.rows if event and event.selection else [])]

st.subheader("Compare")
if not picked:
    st.caption("Select rows in the table to compare their loss curves (or delete them).")
else:
    curves = [{"name": f"{r['rule']} d={r['width']} η₀={r['lr']:g} λ₀={r['wd']:g}", "width": r["width"],
               "rule": r["rule"], "steps": [p[0] for p in r["train_loss"] if p[1] is not None],
               "loss": [p[1] for p in r["train_loss"] if p[1] is not None], "diverged": r["diverged"]}
              for r in picked]
    _ui.show(plots.loss_curves(curves, title="Training loss of the selected runs"), "runs_compare")
    if _ui.reference():
        st.caption("A reference study is read-only: nothing in it can be deleted.")
    else:
        with st.expander(f"Delete {len(picked)} selected run(s)"):
            sure = st.checkbox("yes, delete their weights, spectra and index rows", key="rn_sure")
            if st.button("Delete", disabled=not sure, key="rn_delete"):
                for r in picked:
                    _ui.store().delete(r["run_id"])
                st.success(f"deleted {len(picked)} run(s)")
                st.rerun()

st.subheader("Export this study")
st.markdown("The zip holds every figure of the study (PNG, SVG, self-contained HTML), the data of every figure "
            "and of the runs (CSV), each run's config (`config.json`) and the `wdscale sweep` command that "
            "reproduces it (`reproduce.sh`).")
for cmd in export.sweep_commands(recs):
    st.code(cmd, language="bash")

done = [r for r in recs if r.get("status") == "done"]


def study_figures(recs: list[dict]) -> dict:
    figs = {"loss_vs_lr": plots.loss_vs_param(recs, "lr", analysis.lr_optima(recs, param="lr")),
            "top_sv_vs_width": plots.top_sv_vs_width(recs, analysis.width_exponents(recs, n_boot=200))}
    if len({r["wd"] for r in recs}) > 1:
        figs["loss_vs_wd"] = plots.loss_vs_param([r for r in recs if r["wd"] > 0], "wd",
                                                 analysis.lr_optima(recs, param="wd"))
    return figs


_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _bundle(label: str, ids: tuple) -> bytes:
    recs = [r for r in (_ui.view_store().get(i) for i in ids) if r]
    fits = analysis.width_exponents(recs, n_boot=200)
    return export.study_bundle(label, study_figures(recs), recs,
                               tables={"width_exponents": [{k: (json.dumps(v) if isinstance(v, list) else v)
                                                            for k, v in f.items()} for f in fits]})


def make_bundle() -> bytes:
    with _lock:  # one kaleido browser at a time
        return _bundle(label, tuple(r["run_id"] for r in done))


if done:
    st.download_button("Download study bundle (.zip)", data=make_bundle, file_name=f"{export.slug(label)}.zip",
                       mime="application/zip", on_click="ignore", type="primary", key="rn_bundle")
    st.download_button("Runs as CSV", data=export.rows_csv(rows), file_name=f"{export.slug(label)}_runs.csv",
                       mime="text/csv", on_click="ignore", key="rn_csv")
    st.download_button("Runs as JSON lines (sweep --json format)",
                       data="\n".join(json.dumps(r) for r in recs).encode(),
                       file_name=f"{export.slug(label)}.jsonl", mime="application/json", on_click="ignore",
                       key="rn_jsonl")
