"""Inspect: the paper's top-σ diagnostic on the user's own checkpoints, and the logs of wdscale.training.monitor."""
import os

import streamlit as st

from pages import _ui
from wdscale.science import inspect as ck
from wdscale.show import inspect_plots
from wdscale.show import export
from wdscale.training import monitor
from wdscale.show import plots
from wdscale.core.rules import CLASSES, RULE_INFO

st.title("Inspect your own model")
tab_ck, tab_mon = st.tabs(["Checkpoints", "Monitor log"])


@st.cache_data(max_entries=16, show_spinner="measuring σ_top of every matrix…")
def _summary(key: tuple, _src, name: str, overrides: tuple) -> dict:
    # key identifies the bytes (upload id or path + mtime + size); _src itself is not hashed (it may be GBs)
    src = _src.getvalue() if hasattr(_src, "getvalue") else _src
    return ck.summarize(ck.load_state_dict(src, name), name, None, dict(overrides))


def _parse_overrides(text: str) -> tuple:
    out = []
    for tok in filter(None, (t.strip() for t in text.split(","))):
        pat, sep, cls = tok.rpartition("=")
        if not sep or cls not in CLASSES:
            raise ValueError(f"override {tok!r}: write REGEX=CLASS with CLASS one of {', '.join(CLASSES)}")
        out.append((pat, cls))
    return tuple(out)


# -- checkpoints ----------------------------------------------------------------------------------------
with tab_ck:
    st.markdown(
        "Fan et al.'s last check: each matrix's **top singular value** should be the same at the proxy and the "
        "target width, so that every sublayer's gain is width-invariant. Give two or more checkpoints of "
        "different widths (same architecture, same parameter names). Files are read as safetensors or as a torch "
        "state dict with `weights_only=True`: a file that would need code to unpickle is refused and nothing in "
        "it runs. The same report on the command line: `wdscale inspect CKPT CKPT ... [--json]`.")
    limit = st.get_option("server.maxUploadSize")
    ups = st.file_uploader(f"Upload checkpoints (.safetensors, .pt, .pth, .bin, .ckpt; at most {limit} MB each, "
                           "the server's `maxUploadSize`)", accept_multiple_files=True, key="in_upload",
                           type=["safetensors", "pt", "pth", "bin", "ckpt"])
    paths_text = st.text_area("…or paths on the machine running the app, one per line (any size; a folder "
                              "reads its *.safetensors shards)", key="in_paths", height=80)
    c1, c2, c3 = st.columns(3)
    rules = [r for r in RULE_INFO if r not in ("custom", "fitted")]
    rule = c1.selectbox("The widths were trained with", rules, index=rules.index("mup"), key="in_rule",
                        format_func=lambda r: f"{r}: {RULE_INFO[r]}",
                        help="only changes the λ exponent: σ_top ∝ √(η/λ)·d^α₀, so the measured α depends on how "
                             "η and λ were scaled")
    tol = c2.number_input("matched if every ratio is within ± %", 1.0, 100.0, 10.0, step=1.0, key="in_tol")
    over_text = c3.text_input("class overrides (REGEX=CLASS, comma-separated)", key="in_over",
                              placeholder=r"e.g. c_proj=matrix, ^head\.=readout")

    sources = []  # (cache key, source, display name)
    for f in ups or []:
        sources.append((("upload", f.file_id, f.name, f.size), f, f.name))
    for line in filter(None, (ln.strip() for ln in (paths_text or "").splitlines())):
        try:
            stt = os.stat(line)
            key = ("path", line, stt.st_mtime_ns, stt.st_size)
        except OSError:
            key = ("path", line, None, None)
        sources.append((key, line, line))

    if not sources:
        st.info("Upload or name two or more checkpoints (e.g. your proxy and your target run).")
    else:
        try:
            overrides = _parse_overrides(over_text or "")
            sums = [_summary(k, s, n, overrides) for k, s, n in sources]
        except ValueError as e:
            st.error(str(e))
            sums = None
        if sums:
            names = [s["path"] for s in sums]
            base_name = st.selectbox("Proxy (base)", ["the narrowest"] + names, key="in_base")
            base = None if base_name == "the narrowest" else names.index(base_name)
            rep = {"checkpoints": sums}
            if len(sums) >= 2:
                rep.update(ck.compare(sums, base=base, rule=rule, tol=tol / 100, overrides=dict(overrides)))
            else:
                rep.update(ratios={}, classes={}, matched={}, widths=[sums[0]["width"]], tol=tol / 100,
                           verdict="one checkpoint: add a second width to compare σ_top")
            v = rep["verdict"]
            (st.success if v.startswith("sublayer gains matched") else st.info if len(sums) < 2
             else st.warning)(f"**Verdict:** {v}")
            st.caption(" · ".join(f"`{s['path']}`: d={s['width']}, {len(s['matrices'])} matrices, "
                                  f"{len(s['vectors'])} vectors, {s['seconds']:.1f} s" for s in sums))
            if rep["classes"]:
                st.dataframe([{"class": c, **row} for c, row in rep["classes"].items()],
                             hide_index=True, width="stretch")
                st.caption("Per class: median over matrices; α fitted over all widths (two widths: the two-point "
                           "exponent); λ exponent = what would hold σ_top flat (hidden matrices: under η ∝ 1/d).")
                _ui.show(inspect_plots.ratio_figure(rep), "inspect_sigma_ratio")
                if len(set(rep["widths"])) >= 2:
                    _ui.show(inspect_plots.width_figure(rep), "inspect_sigma_vs_width")
                rows = ck.matrix_rows(rep)
                st.dataframe(rows, hide_index=True, width="stretch")
            dl = st.container(horizontal=True, gap="small")
            dl.download_button("Report (JSON)", ck.to_json(rep), file_name="wdscale_inspect.json",
                               mime="application/json", on_click="ignore", key="in_dl_json")
            if rep["classes"]:
                dl.download_button("Matched matrices (CSV)", export.rows_csv(ck.matrix_rows(rep)),
                                   file_name="wdscale_inspect_matched.csv", mime="text/csv", on_click="ignore",
                                   key="in_dl_csv")
            for s in sums:
                with st.expander(f"{s['path']}: every tensor (d={s['width']})"):
                    st.dataframe(ck.checkpoint_rows(s), hide_index=True, width="stretch")
                    if s["skipped"]:
                        st.caption("Skipped (buffers, masks, integer tensors): " + ", ".join(s["skipped"][:20])
                                   + (" …" if len(s["skipped"]) > 20 else ""))

# -- monitor logs ---------------------------------------------------------------------------------------
with tab_mon:
    st.markdown(
        "`wdscale.training.monitor.SpectralMonitor(model, optimizer, every=100, log_dir=...)` writes `monitor.csv`: per "
        "param group and matrix, σ_top, ‖W‖_F next to the steady-state √(η·N/(2λ)) with the group's own lr and "
        "weight_decay, ‖ΔW‖/‖W‖ and steps/τ. Load one here.")
    up = st.file_uploader("monitor.csv", type=["csv"], key="mon_upload")
    path = st.text_input("…or its path (a log_dir or the csv)", key="mon_path")
    rows = None
    try:
        if up is not None:
            rows = monitor.load_csv(up.getvalue())
        elif path:
            p = os.path.join(path, "monitor.csv") if os.path.isdir(path) else path
            rows = monitor.load_csv(p)
    except (ValueError, OSError) as e:
        st.error(f"cannot read the monitor log: {e}")
    if rows is not None and not rows:
        st.info("the log has no records yet (the first one is written at step `every`)")
    elif rows:
        ser = monitor.series(rows)
        names = [s["name"] for s in ser]
        pick = st.multiselect("Matrices", names, default=names[:6], key="mon_pick")
        shown = [s for s in ser if s["name"] in pick]
        _ui.show(plots.top_sv_over_training(shown, title="σ_top and ‖W‖_F over training (dashed: √(ηN/2λ))"),
                 "monitor_top_sv")
        _ui.show(plots.norm_pred_vs_measured(monitor.norm_rows(rows), title="‖W‖_F vs √(ηN/(2λ)) at the last "
                                             "record (faint: fewer than 3 τ)"), "monitor_norm_pred")
        last = max(r["step"] for r in rows)
        st.dataframe([r for r in rows if r["step"] == last], hide_index=True, width="stretch")
        st.caption(f"Last record: step {last}. steps/τ = Σ η_t λ_t; below ~3 the norm is still on its way to the "
                   "steady state.")
        st.download_button("monitor.csv", export.rows_csv(rows), file_name="monitor.csv",
                           mime="text/csv", on_click="ignore", key="mon_dl")
