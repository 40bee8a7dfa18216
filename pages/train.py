"""Train: define a study, see the resolved rule table before training, train it in the background.  A thin view:
the plans, ETAs, tables and sentences come from wdscale.show.planning (tests/test_planning.py)."""
from pathlib import Path

import streamlit as st

from pages import _ui
from wdscale.core.errors import BadInput
from wdscale.core.rules import RULE_INFO, RULES
from wdscale.models import presets
from wdscale.show import planning as pl

st.title("Train a study")
st.caption("All runs at one width train as one batched ensemble. λ is torch's `weight_decay`: per-step decay η·λ.")

DEFAULTS = dict(widths="32,64,128", base_width=32, rules=["mup", "wd"], eta0=0.01, lam0=3.0, n_lr=5, steps=1000)


@st.cache_data(show_spinner=False)
def _data_slice(name: str, steps: int) -> dict | None:
    return presets.data_slice(presets.get(name), steps)  # reads the corpus once per server


@st.cache_data(show_spinner=False, max_entries=64)
def _class_rows(path: str, sha: str, run_id: str, overrides: str, _cfg) -> list[dict]:
    return pl.class_rows(path, _cfg, overrides)


@st.cache_data(show_spinner=False, max_entries=64)
def _timing(path: str, sha: str, width: int, n: int, device: str, threads: int, init: str, overrides: str,
            _configs) -> dict:
    return pl.member_step_times(path, _configs, device, threads, overrides)


def study_summary(snap: dict | None) -> bool:
    """A finished study job's summary (``study.run_study``'s dict): its sentence, reading and table; False if none."""
    res = pl.study_result(snap)
    if res is None:
        return False
    st.subheader("The study")
    (st.success if res["conclusive"] else st.warning)(res["sentence"])
    if res["reading"]:
        st.markdown(res["reading"])
    st.code(res["table"], language=None)
    return True


def study_job(kind: str, key: str, go_key: str, state: dict, submit) -> None:
    """A study's Train/Resume/Show button, its live job panel, then its summary and the pages that show it
    (for a model file also once every run is stored)."""
    if st.button(pl.study_button_label(state), type="primary", key=go_key):
        submit()
    snap = _ui.job_panel(key)
    if snap and snap["status"] == "cancelled":
        st.info(pl.CANCELLED[kind])
    if study_summary(snap) or (kind == "own" and state["complete"]):
        for page, label, icon in pl.LINKS[kind]:
            st.page_link(page, label=label, icon=icon)


def preset_study(name: str) -> None:
    """A preset study on this page: settings, ETA, Train/Resume as one background job, live curves, summary."""
    store = _ui.store()
    p = pl.preset_plan(name, store)
    spec, steps, state = p["spec"], p["steps"], p["state"]
    st.subheader(f"Preset study `{name}`")
    st.dataframe(pl.preset_settings(spec, steps, _data_slice(spec["name"], steps)), hide_index=True, width="stretch")
    device = st.selectbox("Device", pl.devices(), key="t_p_device")
    eta = None
    if not state["complete"]:
        eta = _ui.eta_notice(None, store, device, phases=state["phases"], note=pl.preset_note(spec, state))
    st.write(pl.store_line(state, phases=True))
    key = f"preset_job_{name}"
    study_job("preset", key, "t_preset_go", state, lambda: _ui.submit_study(key, spec, steps, device, eta))


def model_file_study() -> None:
    """A study of the user's model file: pick a file of $WDSCALE_MODELS, its classes table and ETA before Train,
    Train/Resume as one background job (the lm preset's design, ``study.run_study``), live curves, summary."""
    from wdscale.models.own import INITS, PATHS, file_digest, model_file_paths

    st.subheader("Your model file")
    folder = pl.models_folder()
    if not folder:
        st.info(pl.models_off_text(), icon=":material/lock:")
        return
    paths = model_file_paths(folder)
    if not paths:
        st.info(pl.no_models_text(folder), icon=":material/folder_off:")
        return
    st.caption(pl.model_files_caption(folder))
    names, d = [p.name for p in paths], pl.own_defaults()
    c1, c2, c3 = st.columns(3)
    with c1:
        name = st.selectbox("Model file", names, key="t_mf")
        widths_txt = st.text_input("Widths d (comma list; the smallest is the proxy d₀)", d["widths"], key="t_mf_widths")
        steps = st.number_input("Steps", value=d["steps"], step=100, key="t_mf_steps")
    with c2:
        lrs_txt = st.text_input("Proxy grid: lrs η₀ (comma list)", d["lrs"], key="t_mf_lrs")
        wds_txt = st.text_input("Proxy grid: weight decays λ₀ (torch weight_decay, comma list)", d["wds"],
                                key="t_mf_wds")
        init = st.selectbox("Init", list(INITS), key="t_mf_init", format_func=pl.INIT_LABELS.get)
    with c3:
        overrides = st.text_input("Overrides (NAME=CLASS; …)", "", key="t_mf_ov", help=pl.OVERRIDES_HELP)
        members = st.selectbox("Member path", list(PATHS), key="t_mf_members", help=pl.MEMBERS_HELP)
        device = st.selectbox("Device", pl.devices(), key="t_mf_device")
    path = paths[names.index(name)]  # only ever a file of the listing
    try:
        sha = file_digest(path)  # reads the bytes, imports nothing
    except BadInput as e:
        st.error(str(e))
        return
    if st.session_state.get("t_mf_asked") != (str(path), sha):
        st.write(pl.load_prompt(name))
        if st.button(f"Load {name}", type="primary", key="t_mf_load"):
            st.session_state["t_mf_asked"] = (str(path), sha)
            st.rerun()  # draw the page without this button and its line
        return
    ov = pl.override_text(overrides)
    try:
        spec = pl.own_study_spec(path, widths_txt, steps, lrs_txt, wds_txt, init, overrides)  # imports the file
        store = _ui.store()
        n_steps, state = spec["steps"], pl.own_study_state(spec, store)
        st.dataframe(pl.own_settings(path, sha, spec, init, overrides), hide_index=True, width="stretch")
        # -- the classes table: which parameter got which class, lr and wd, before training -----------------------
        st.markdown("**Classes**: which of your parameters gets which class, lr and weight decay")
        k1, k2 = st.columns(2)
        cw = k1.selectbox("At width", list(spec["widths"]), index=len(spec["widths"]) - 1, key="t_mf_cw")
        rule = k2.selectbox("Rule", list(spec["rules"]), key="t_mf_rule", format_func=lambda r: f"{r}: {RULE_INFO[r]}")
        cfg = pl.class_config(spec, cw, rule, state["eta0"], state["lam0"])
        rows = _class_rows(str(path), sha, cfg.run_id, ov, cfg)
    except ValueError as e:  # BadInput: a syntax error, no build(), an ambiguous class, ... (one line)
        st.error(str(e))
        return
    st.dataframe(pl.class_table(rows, n_steps), hide_index=True, width="stretch", height=min(38 + 35 * len(rows), 740),
                 column_config={k: st.column_config.NumberColumn(format="%.4g") for k in pl.CLASS_NUMBERS})
    st.caption(pl.classes_caption(state))
    eta = None
    if not state["complete"]:
        ens, threads = pl.own_plan(state["phases"], store), _ui.manager().threads
        try:
            with st.spinner("ETA: timing a few steps of each width here…"):
                eta = pl.own_eta(ens, members, lambda ch: _timing(str(path), sha, ch[0].width, len(ch), device,
                                                                  threads, init, ov, ch))
        except ValueError as e:
            st.error(str(e))
            return
        st.info(pl.own_eta_text(eta, state["optimum_known"]), icon=":material/timer:")
    st.write(pl.store_line(state))
    key = f"own_job_{spec['model']}"
    study_job("own", key, "t_mf_go", state, lambda: _ui.submit_study(key, spec, n_steps, device, eta, members=members))


choice = st.radio("Preset study", list(pl.PRESET_CHOICES), horizontal=True, key="t_preset", help=pl.PRESET_HELP)
if choice == pl.MODEL_FILE:
    model_file_study()
    st.stop()
if pl.PRESET_CHOICES[choice]:
    preset_study(pl.PRESET_CHOICES[choice])
    st.stop()

c1, c2, c3 = st.columns(3)
with c1:
    model = st.radio("Model", ["synthetic", "transformer"], horizontal=True, key="t_model")
    # Defaults: a steady-state study (the horizon check is clean), near the demo's proxy optimum (0.008, 3)
    widths_txt = st.text_input("Widths d (comma list)", DEFAULTS["widths"], key="t_widths")
    base_width = st.number_input("Base (proxy) width d₀", min_value=1, value=DEFAULTS["base_width"], step=1,
                                 key="t_base")
    rules = st.multiselect("Rules", list(RULES), default=DEFAULTS["rules"], key="t_rules",
                           format_func=lambda r: f"{r}: {RULE_INFO[r]}")
    a = b = None
    if "custom" in rules:
        ca, cb = st.columns(2)
        a = ca.number_input("a (matrix η ∝ m^-a)", value=1.0, step=0.25, key="t_a")
        b = cb.number_input("b (matrix λ ∝ m^b)", value=0.5, step=0.25, key="t_b")
with c2:
    eta0 = st.select_slider("Proxy lr η₀ (log scale)", options=pl.LOG_GRID, value=DEFAULTS["eta0"], key="t_eta0",
                            format_func=lambda x: f"{x:g}")
    n_lr = st.slider("LR grid points around η₀", 1, 9, DEFAULTS["n_lr"], key="t_nlr")
    sp_lr = st.selectbox("LR grid spacing", list(pl.SPACING), key="t_splr")
    lrs_txt = st.text_input("…or an explicit LR list (overrides the grid)", "", key="t_lrs")
    lam0 = st.select_slider("Proxy weight decay λ₀ (torch weight_decay, log scale)", options=[0.0] + pl.LOG_GRID,
                            value=DEFAULTS["lam0"], key="t_lam0", format_func=lambda x: f"{x:g}")
    n_wd = st.slider("λ grid points around λ₀", 1, 7, 1, key="t_nwd")
    wds_txt = st.text_input("…or an explicit λ list (overrides the grid)", "", key="t_wds")
with c3:
    # No min_value: Streamlit would keep the last valid value (and train it) under a red outline; check below.
    steps = st.number_input("Steps", value=DEFAULTS["steps"], step=100, key="t_steps")
    seeds_txt = st.text_input("Seeds (comma list)", "0", key="t_seeds")
    schedule = st.selectbox("LR schedule", ["constant", "warmup", "cosine", "exp_warmup"], key="t_sched")
    warmup = st.slider("Warmup (fraction of steps)", 0.0, 1.0, 0.0 if schedule == "constant" else 0.1, 0.05,
                       key="t_warm")
    device = st.selectbox("Device", pl.devices(), key="t_device")
    st.caption(pl.CUDA_NOTE)
    corpus = "stdlib"
    if model == "transformer":
        src = st.radio("Corpus", ["stdlib (Python's own docs, no download)", "upload a UTF-8 text file"], key="t_corp")
        if src.startswith("upload"):
            up = st.file_uploader("Text file", type=None, key="t_upload")
            corpus = None
            if up is not None:
                try:
                    corpus = pl.save_corpus(up.getvalue(), Path(_ui.data_root()) / "corpora")
                except ValueError as e:
                    st.error(str(e))

# -- expand and check: bad input -> st.error, never a traceback --------------------------------------------
try:
    study = pl.custom_study(model, widths_txt, base_width, rules, steps, eta0, n_lr, sp_lr, lrs_txt, lam0, n_wd,
                            wds_txt, seeds_txt, a, b, schedule, warmup, corpus)
except ValueError as e:
    st.error(str(e))
    st.stop()
configs = study["configs"]
st.write(pl.study_line(study))
if warning := pl.decay_warning(configs):  # >= 1 was refused by check_study
    st.warning(warning)

# -- resolved rule table, per width, before training --------------------------------------------------------
with st.expander("Resolved per-class settings (at η₀, λ₀) and horizon checks", expanded=True):
    for tab, rule in zip(st.tabs(rules), rules):
        with tab:
            rows, warnings = pl.resolved_rows(rule, study["widths"], base_width, eta0, lam0, a, b, steps)
            for msg in warnings:
                st.warning(msg)
            st.dataframe(rows, hide_index=True, width="stretch",
                         column_config={k: st.column_config.NumberColumn(format="%.4g") for k in pl.RESOLVED_NUMBERS})

kind, text, icon = pl.horizon_check(configs)  # every run of the grid, not only (η₀, λ₀)
(st.warning if kind == "warning" else st.success)(text, icon=icon)

todo = pl.store_plan(configs, _ui.store())
st.write(todo["line"])
if todo["n_todo"]:
    _ui.eta_notice(configs, _ui.store(), device)
if st.button(todo["label"], type="primary", key="t_go"):
    if todo["n_todo"]:
        _ui.submit("train_job", configs, label=f"{model} {study['widths']}", device=device)
    else:
        st.session_state["train_cached"] = [c.run_id for c in configs]

snap = _ui.job_panel("train_job")
recs = pl.session_records(snap, st.session_state.get("train_cached"), _ui.store())  # this session's results only
if recs:
    st.subheader("This study")
    for col, (fig, name) in zip(st.columns(2), pl.study_figures(recs)):
        with col:
            _ui.show(fig, name)
    st.caption("Spectra, Transfer and Steady state show this study in depth (pick it in the sidebar there).")
