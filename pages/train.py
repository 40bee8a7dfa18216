"""Train: define a study, see the resolved rule table before training, train it in the background."""
import argparse
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from pages import _ui
from wdscale.science import analysis
from wdscale.science import study as demo
from wdscale.show import plots
from wdscale.models import presets
from wdscale.models.config import parse_numbers
from wdscale.core.errors import BadInput
from wdscale.show.jobs import LR_RANGE, MAX_RUNS, MAX_WIDTH, WD_RANGE, check_study
from wdscale.core.rules import RULE_INFO, RULES, decay_problem, resolve
from wdscale.training.sweep import plan
from wdscale.science.verdict import horizon_warnings, sweep_horizon_warnings

st.title("Train a study")
st.caption("All runs at one width train as one batched ensemble. λ is torch's `weight_decay`: per-step decay η·λ.")

LOG_GRID = [float(f"{m * 10 ** e:.3g}") for e in range(-5, 2) for m in (1, 2, 3, 5)]
# ×√2 first: the default grid (η₀/2 … 2η₀ at 5 points) keeps every default run >= 3 τ (tests/test_tour.py)
SPACING = {"×√2": math.sqrt(2), "×2": 2.0, "×√10": math.sqrt(10), "×10": 10.0}


parse_list = parse_numbers  # the CLI's parser: one implementation
DEFAULTS = dict(widths="32,64,128", base_width=32, rules=["mup", "wd"], eta0=0.01, lam0=3.0, n_lr=5, steps=1000)


def study_button_label(state: dict) -> str:
    """Train, Resume (what is stored) or Show the summary, from a study's ``preset_state``."""
    if state["complete"]:
        return "Show the summary (every run is in the store; nothing trains)"
    if state["stored"] or state["partial"]:
        return f"Resume ({state['stored']} of {state['n_runs']} runs stored)"
    return "Train"


def grid(center: float, n: int, factor: float) -> list[float]:
    k = np.arange(n) - (n - 1) / 2
    return [float(f"{center * factor ** i:.4g}") for i in k]


# -- preset studies (wdscale.models.presets): the Transformer study of each regime, run as wdscale.science.study.run_demo ------
PRESET_CHOICES = {"Your own grid": None, "LM regime (lm)": "lm", "Multi-epoch control (lm-epochs)": "lm-epochs",
                  "Your model file": None}  # the last: wdscale.models.own, the lm design on a file of $WDSCALE_MODELS


@st.cache_data(show_spinner=False)
def _data_slice(name: str, steps: int) -> dict | None:
    return presets.data_slice(presets.get(name), steps)  # reads the corpus once per server


def _nums(xs) -> str:
    return ", ".join(f"{x:g}" for x in xs)


def preset_settings(spec: dict, steps: int) -> list[dict]:
    c, ds = spec["common"], _data_slice(spec["name"], steps)
    rows = [("model", f"{spec['model']}, depth {c.get('depth')}, head dim {c.get('head_dim')}"),
            ("regime", spec["regime"]),
            ("widths", f"{_nums(spec['widths'])} (proxy d₀ = {spec['base_width']})"),
            ("sequence, batch", f"seq {c.get('seq_len')} bytes, batch {c.get('batch_size')}"),
            ("schedule", f"{c.get('schedule')}, warmup {c.get('warmup', 0):.0%} of the steps"),
            ("steps", f"{steps}" + (f" (preset: {spec['steps']}; WDSCALE_DEMO_STEPS)" if steps != spec["steps"] else "")),
            ("seeds", _nums(spec["seeds"])),
            ("proxy grid", f"η₀ ∈ {{{_nums(spec['proxy_lrs'])}}} × λ₀ ∈ {{{_nums(spec['proxy_wds'])}}} at d₀"),
            ("transfer", f"rules {', '.join(spec['rules'])}{' + fitted (λ ∝ d^b, b = e/b̂ from the measured law)' if spec.get('fitted') else ''}"
                         f" at λ₀, lr = η₀·2^k, k ∈ {{{_nums(spec['lr_octaves'])}}} octaves")]
    if ds:
        src = (f"the first {ds['train_bytes']:,} bytes of the training split" if ds["sliced"]
               else f"the whole training split ({ds['train_bytes']:,} bytes)")
        rows.append(("data", f"{ds['bytes_per_step']} bytes per step, {ds['bytes_read']:,} bytes per run from {src}: "
                             f"{ds['epochs']:.2f} epochs"))
    return [{"setting": k, "value": v} for k, v in rows]


def preset_study(name: str) -> None:
    """A preset study on this page: settings, ETA, Train/Resume as one background job, live curves, summary."""
    spec = presets.get(name)
    steps = demo._steps(None, spec)
    store = _ui.store()
    st.subheader(f"Preset study `{name}`")
    st.dataframe(preset_settings(spec, steps), hide_index=True, width="stretch")
    state = demo.preset_state(spec, store, steps)
    devices = ["cpu", "auto"] + (["cuda"] if torch.cuda.is_available() else [])
    device = st.selectbox("Device", devices, key="t_p_device")
    if state["optimum_known"]:
        note = (f" The proxy optimum is measured: η₀ = {state['eta0']:.3g}, λ₀ = {state['lam0']:g}"
                + (f", fitted b = {state['b']:+.2f}." if state["b_known"] and state["b"] is not None else
                   "; the fitted rule's b could not be measured on the two smallest widths (no fitted phase)."
                   if state["b_known"] and spec.get("fitted") else
                   f"; the fitted rule's b is assumed {state['b']:g} until the two smallest widths are trained."
                   if spec.get("fitted") else "."))
    else:
        note = (f" An estimate before the proxy optimum is known: transfer counted at the proxy grid's middle, "
                f"η₀ = {state['eta0']:.3g}, λ₀ = {state['lam0']:g}"
                + (f", fitted b = {state['b']:g}." if spec.get("fitted") else "."))
    eta = None
    if not state["complete"]:
        eta = _ui.eta_notice(None, store, device, phases=state["phases"], note=note)
    st.write(f"{state['stored']} of {state['n_runs']} runs are in the store"
             + (f"; {state['partial']} cancelled mid-ensemble (resumed from a checkpoint)" if state["partial"] else "")
             + ". Phases: the proxy's η₀ × λ₀ grid → its optimum → transfer at the two smallest widths → "
               "the fitted rule's b from them → the rest.")
    key = f"preset_job_{name}"
    label = study_button_label(state)
    if st.button(label, type="primary", key="t_preset_go"):
        _ui.submit_study(key, spec, steps, device, eta)
    snap = _ui.job_panel(key)
    if snap and snap["status"] == "cancelled":
        st.info("Cancelled. Finished ensembles are stored and the interrupted one keeps a checkpoint: "
                "**Resume** continues from there.")
    if study_summary(snap):
        st.page_link("pages/regimes.py", label="Regimes: this regime beside the other", icon=":material/compare_arrows:")
        st.page_link("pages/transfer.py", label="Transfer: loss vs lr per width and rule", icon=":material/target:")


def study_summary(snap: dict | None) -> bool:
    """A finished study job's summary (``demo.run_demo``'s dict): its sentence, reading and table; False if none."""
    res = (snap or {}).get("result")
    if not res or res.get("partial"):
        return False
    st.subheader("The study")
    (st.success if res.get("conclusive") else st.warning)(res["sentence"])
    if res.get("reading"):
        st.markdown(res["reading"])
    st.code(demo.format_summary(res), language=None)
    return True


# -- your model file (wdscale.models.own): the lm preset's design on a file from the server's $WDSCALE_MODELS folder ------
# Only files listed in that folder (named when the server starts) can run: never a path typed into the browser,
# never uploaded code, never anything read from a store or the gallery.  Listing reads names only; a file is
# imported when the user presses Load (to show its classes) or Train.
MODELS_ENV = "WDSCALE_MODELS"
MODEL_FILE = "Your model file"
OWN_DESIGN = "lm"  # the preset whose design (schedule, rules + fitted, lr octaves) a model-file study runs
ETA_MEMBERS = 4  # members timed per width for the ETA


def models_folder() -> str | None:
    """The folder of model files this server may run ($WDSCALE_MODELS), or None: model files are off."""
    return os.environ.get(MODELS_ENV) or None


def own_study_spec(path, widths: str, steps, proxy_lrs: str, proxy_wds: str, init: str = "mup",
                   overrides: str = "") -> dict:
    """The `lm` preset's design on a model file, as `wdscale study --model FILE --widths W --steps N --proxy-lrs L
    --proxy-wds D` builds it (``demo.own_spec``, which imports the file).  ValueError (BadInput too), one line."""
    ws = parse_list(widths, int)
    if len(set(ws)) < 2:
        raise ValueError("give at least two widths, e.g. 32,64,128: the smallest is the proxy d₀, and the fitted "
                         "rule is measured on the two smallest")
    if min(ws) <= 0 or max(ws) > MAX_WIDTH:
        raise ValueError(f"widths must be positive integers up to {MAX_WIDTH}, got {ws}")
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    lrs, wds = parse_list(proxy_lrs, float), parse_list(proxy_wds, float)
    if not lrs or not wds:
        raise ValueError("the proxy grid needs at least one lr η₀ and one weight decay λ₀")
    for v in lrs:
        if not (LR_RANGE[0] <= v <= LR_RANGE[1]):
            raise ValueError(f"learning rate η₀={v:g} is out of range [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}]")
    for v in wds:
        if not (0 < v <= WD_RANGE[1]):
            raise ValueError(f"weight decay λ₀={v:g} is out of range (0, {WD_RANGE[1]:g}] (torch weight_decay)")
    args = argparse.Namespace(model=str(path), override=[overrides] if overrides.strip() else [], init=init,
                              widths=widths, steps=int(steps), proxy_lrs=proxy_lrs, proxy_wds=proxy_wds)
    return demo.own_spec(presets.get(OWN_DESIGN), args)


@st.cache_data(show_spinner=False, max_entries=64)
def _class_rows(path: str, sha: str, run_id: str, overrides: str, _cfg) -> list[dict]:
    from wdscale.models import own

    return own.class_rows(own.load(path), _cfg, own.parse_overrides(overrides))


@st.cache_data(show_spinner=False, max_entries=64)
def _timing(path: str, sha: str, width: int, n: int, device: str, threads: int, init: str, overrides: str,
            _configs) -> dict:
    """Seconds per member-step of each member path at one width, measured here on ``n`` members
    (``own.measure_paths``: one untimed step, then a few timed ones; the models are thrown away)."""
    from wdscale.models import own
    from wdscale.models.config import pick_device

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # as the job trains
    try:
        t = own.measure_paths(own.load(path), list(_configs), own.parse_overrides(overrides), pick_device(device))
    finally:
        torch.set_num_threads(before)
    return {"loop": t["loop"] / n, "batched": None if t["batched"] is None else t["batched"] / n,
            "batched_error": t["batched_error"]}


def own_plan(phases, store) -> list[list]:
    """The ensembles ``run_demo`` trains for these phases, as the sweep plans them; a run an earlier phase trains
    counts as stored for the later ones (``cost.phases_eta``'s rule)."""
    from wdscale.training.sweep import plan

    seen: set = set()

    class _View:
        def get(self, run_id):
            return {"run_id": run_id} if run_id in seen else store.get(run_id)

    out = []
    for phase in phases:
        out += plan(phase, _View())[1]
        seen.update(c.run_id for c in phase)
    return out


def own_eta(path: str, sha: str, ensembles: list[list], device: str, how: str, init: str, overrides: str) -> dict:
    """ETA of a model-file study: the members' step time measured here at each width (``own.measure_paths`` on up
    to ETA_MEMBERS members of its first ensemble, the path ``own.choose_path`` would take), times member-steps.
    The dict ``_ui.submit_study`` reads: seconds, per_width, member_steps; and to_train, ensembles, rate, paths."""
    from wdscale.training import cost
    from wdscale.models import own

    threads = _ui.manager().threads
    out = {"seconds": 0.0, "per_width": {}, "member_steps": {}, "rate": {}, "paths": {},
           "to_train": sum(len(ch) for ch in ensembles), "ensembles": len(ensembles)}
    for ch in ensembles:
        w = ch[0].width
        if w not in out["rate"]:
            k = min(ETA_MEMBERS, len(ch))
            t = _timing(path, sha, w, k, device, threads, init, overrides, tuple(ch[:k]))
            if how == "loop" or t["batched"] is None:
                out["rate"][w], out["paths"][w] = t["loop"], "loop"
            elif how == "batched" or t["loop"] / t["batched"] >= own.BATCHED_MIN_SPEEDUP:
                out["rate"][w], out["paths"][w] = t["batched"], "batched"
            else:
                out["rate"][w], out["paths"][w] = t["loop"], "loop"
        n = cost.members(ch) * ch[0].steps
        out["member_steps"][w] = out["member_steps"].get(w, 0) + n
        out["per_width"][w] = out["per_width"].get(w, 0.0) + n * out["rate"][w]
    out["seconds"] = sum(out["per_width"].values())
    return out


def class_table(rows: list[dict], steps: int) -> list[dict]:
    """own.class_rows for st.dataframe: one row per parameter (its own name), and the readout's output row."""
    out = []
    for r in rows:
        mult = r.get("mult")
        out.append({"parameter": r["name"], "shape": "×".join(map(str, r["shape"])) if r["shape"] else "",
                    "class": r["class"], "lr η": r["lr"], "wd λ (torch)": r["wd"],
                    "decay/step η·λ": r["decay_per_step"], "τ = 1/(ηλ) steps": r["tau"],
                    "steps/τ": steps / r["tau"] if r["tau"] else None, "init std": r["init_std"],
                    "forward ×": mult, "tied to": ", ".join(r["tied_to"]) or None})
    return out


def model_file_study() -> None:
    """A study of the user's model file: pick a file of $WDSCALE_MODELS, its classes table and ETA before Train,
    Train/Resume as one background job (the lm preset's design, ``demo.run_demo``), live curves, summary."""
    from wdscale.models import own
    from wdscale.models.modelfile import file_digest
    from wdscale.training.sweep import expand_grid

    st.subheader("Your model file")
    folder = models_folder()
    if not folder:
        st.info(f"Model files are off: start the server with a folder of them, `{MODELS_ENV}=examples streamlit "
                "run app.py`.", icon=":material/lock:")
        return
    paths = own.model_file_paths(folder)
    if not paths:
        st.info(f"No model files (`*.py`) in `{folder}` (`{MODELS_ENV}`).", icon=":material/folder_off:")
        return
    spec0 = presets.get(OWN_DESIGN)
    st.caption(f"Files of `{folder}` (`{MODELS_ENV}`, named when the server started), listed by name only: a file is "
               "imported when you press **Load** or **Train**. A model file defines `build(width)`, `batches(seed)`, "
               "`val_batches()` and optionally `loss(model, batch)` (docs/own-model.md). The study runs the "
               f"`{OWN_DESIGN}` preset's design on it, as `wdscale study --model FILE.py` does: the proxy's η₀ × λ₀ "
               "grid at the smallest width, then rules mup, wd, indep and the fitted rule at lr = η₀·2^k.")
    names = [p.name for p in paths]
    devices = ["cpu", "auto"] + (["cuda"] if torch.cuda.is_available() else [])
    c1, c2, c3 = st.columns(3)
    with c1:
        name = st.selectbox("Model file", names, key="t_mf")
        widths_txt = st.text_input("Widths d (comma list; the smallest is the proxy d₀)",
                                   ",".join(map(str, spec0["widths"])), key="t_mf_widths")
        steps = st.number_input("Steps", value=spec0["steps"], step=100, key="t_mf_steps")
    with c2:
        lrs_txt = st.text_input("Proxy grid: lrs η₀ (comma list)", ",".join(f"{x:g}" for x in spec0["proxy_lrs"]),
                                key="t_mf_lrs")
        wds_txt = st.text_input("Proxy grid: weight decays λ₀ (torch weight_decay, comma list)",
                                ",".join(f"{x:g}" for x in spec0["proxy_wds"]), key="t_mf_wds")
        init = st.selectbox("Init", list(own.INITS), key="t_mf_init",
                            format_func=lambda i: {"mup": "mup: each class re-drawn as μP says",
                                                   "keep": "keep: build()'s own init"}[i])
    with c3:
        overrides = st.text_input("Overrides (NAME=CLASS; …)", "", key="t_mf_ov",
                                  help="give a parameter (name or regex) its class: matrix, vector, embedding or "
                                       "readout, e.g. `lm_head.weight=readout; .*norm.*=vector`")
        members = st.selectbox("Member path", list(own.PATHS), key="t_mf_members",
                               help="auto: whichever of loop (each member its own module) and batched (torch.func "
                                    "vmap) is measured faster here")
        device = st.selectbox("Device", devices, key="t_mf_device")
    path = paths[names.index(name)]  # only ever a file of the listing
    try:
        sha = file_digest(path)  # reads the bytes, imports nothing
    except BadInput as e:
        st.error(str(e))
        return
    if st.session_state.get("t_mf_asked") != (str(path), sha):
        st.write(f"`{name}` is not imported yet. **Load** imports it (its code runs in this server) and shows which "
                 "parameter gets which class, lr and weight decay.")
        if st.button(f"Load {name}", type="primary", key="t_mf_load"):
            st.session_state["t_mf_asked"] = (str(path), sha)
            st.rerun()  # draw the page without this button and its line
        return
    try:
        spec = own_study_spec(path, widths_txt, steps, lrs_txt, wds_txt, init, overrides)  # imports the file
        store = _ui.store()
        n_steps = spec["steps"]
        state = demo.preset_state(spec, store, n_steps)
        if state["n_runs"] > MAX_RUNS:
            raise ValueError(f"study too big: {state['n_runs']} runs (limit {MAX_RUNS}); use fewer widths or a "
                             "smaller proxy grid")
        st.dataframe([{"setting": k, "value": v} for k, v in [
            ("model file", f"{path} (sha256 {sha[:12]}…; the runs are named {spec['model']})"),
            ("widths", f"{_nums(spec['widths'])} (proxy d₀ = {spec['base_width']})"),
            ("steps", f"{n_steps}"), ("schedule", f"{spec['common'].get('schedule')}, warmup "
                                                    f"{spec['common'].get('warmup', 0):.0%} of the steps"),
            ("proxy grid", f"η₀ ∈ {{{_nums(spec['proxy_lrs'])}}} × λ₀ ∈ {{{_nums(spec['proxy_wds'])}}} at d₀"),
            ("transfer", f"rules {', '.join(spec['rules'])} + fitted (λ ∝ d^b, b = e/b̂ from the measured law) at λ₀, lr = η₀·2^k, "
                         f"k ∈ {{{_nums(spec['lr_octaves'])}}} octaves"),
            ("init, overrides", f"{init}; {overrides.strip() or 'none'}")]], hide_index=True, width="stretch")

        # -- the classes table: which parameter got which class, lr and wd, before training -----------------------
        st.markdown("**Classes**: which of your parameters gets which class, lr and weight decay")
        k1, k2 = st.columns(2)
        cw = k1.selectbox("At width", list(spec["widths"]), index=len(spec["widths"]) - 1, key="t_mf_cw")
        rule = k2.selectbox("Rule", list(spec["rules"]), key="t_mf_rule",
                            format_func=lambda r: f"{r}: {RULE_INFO[r]}")
        eta0, lam0 = state["eta0"], state["lam0"]
        cfg = expand_grid(spec["model"], [cw], spec["base_width"], [rule], [eta0], [lam0], n_steps, [0], data_seed=0,
                          **spec["common"])[0]
        rows = _class_rows(str(path), sha, cfg.run_id, ";".join([overrides] if overrides.strip() else []), cfg)
    except ValueError as e:  # BadInput: a syntax error, no build(), an ambiguous class, ... (one line)
        st.error(str(e))
        return
    st.dataframe(class_table(rows, n_steps), hide_index=True, width="stretch", height=min(38 + 35 * len(rows), 740),
                 column_config={k: st.column_config.NumberColumn(format="%.4g")
                                for k in ("lr η", "wd λ (torch)", "decay/step η·λ", "τ = 1/(ηλ) steps", "steps/τ",
                                          "init std", "forward ×")})
    st.caption(f"At η₀ = {eta0:.3g}, λ₀ = {lam0:g} ({'the proxy optimum' if state['optimum_known'] else 'the proxy grid’s middle until its optimum is measured'}). "
               "torch's AdamW multiplies weight_decay by the lr: each step p ← p·(1 − η·λ), so τ = 1/(η·λ) steps. "
               "The readout's output row is μP's 1/m logit multiplier, a forward hook on the module that makes the "
               "logits.")

    eta = None
    if not state["complete"]:
        ens = own_plan(state["phases"], store)
        try:
            with st.spinner("ETA: timing a few steps of each width here…"):
                eta = own_eta(str(path), sha, ens, device, members, init,
                              ";".join([overrides] if overrides.strip() else []))
        except ValueError as e:
            st.error(str(e))
            return
        from wdscale.training import cost

        per = ", ".join(f"d={w}: {cost.format_seconds(s)} ({eta['rate'][w] * 1e3:.1f} ms per member-step, "
                        f"{eta['paths'][w]})" for w, s in sorted(eta["per_width"].items()))
        st.info(f"**ETA ≈ {cost.format_seconds(eta['seconds'])}** for {eta['to_train']} runs in {eta['ensembles']} "
                f"ensembles, measured here: a few steps of up to {ETA_MEMBERS} members timed at each width "
                f"(own.measure_paths; {per}), times the study's member-steps. Evals and spectra snapshots come on "
                "top; the transfer phases are counted at "
                + ("the measured proxy optimum." if state["optimum_known"] else "the proxy grid's middle until its "
                                                                                 "optimum is known."),
                icon=":material/timer:")
    st.write(f"{state['stored']} of {state['n_runs']} runs are in the store"
             + (f"; {state['partial']} cancelled mid-ensemble" if state["partial"] else "") + ".")
    key = f"own_job_{spec['model']}"
    label = study_button_label(state)
    if st.button(label, type="primary", key="t_mf_go"):
        _ui.submit_study(key, spec, n_steps, device, eta, members=members)
    snap = _ui.job_panel(key)
    if snap and snap["status"] == "cancelled":
        st.info("Cancelled. Finished ensembles are stored: **Resume** continues with the rest.")
    if study_summary(snap) or state["complete"]:
        st.page_link("pages/spectra.py", label="Spectra: this study's matrices, under your parameter names",
                     icon=":material/show_chart:")
        st.page_link("pages/transfer.py", label="Transfer: loss vs lr per width and rule", icon=":material/target:")


choice = st.radio("Preset study", list(PRESET_CHOICES), horizontal=True, key="t_preset",
                  help="the Transformer study of each regime (wdscale/models/presets.py; `wdscale study --preset NAME`), or "
                       "the lm design on your own model file (`wdscale study --model FILE.py`)")
if choice == MODEL_FILE:
    model_file_study()
    st.stop()
if PRESET_CHOICES[choice]:
    preset_study(PRESET_CHOICES[choice])
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
    eta0 = st.select_slider("Proxy lr η₀ (log scale)", options=LOG_GRID, value=DEFAULTS["eta0"], key="t_eta0",
                            format_func=lambda x: f"{x:g}")
    n_lr = st.slider("LR grid points around η₀", 1, 9, DEFAULTS["n_lr"], key="t_nlr")
    sp_lr = st.selectbox("LR grid spacing", list(SPACING), key="t_splr")
    lrs_txt = st.text_input("…or an explicit LR list (overrides the grid)", "", key="t_lrs")
    lam0 = st.select_slider("Proxy weight decay λ₀ (torch weight_decay, log scale)", options=[0.0] + LOG_GRID,
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
    devices = ["cpu", "auto"] + (["cuda"] if torch.cuda.is_available() else [])
    device = st.selectbox("Device", devices, key="t_device")
    st.caption("CUDA path: checked once on an H200 (docs/gpu/gpu_check.md): bf16 trains; synthetic ensemble vs "
               "alone agrees to 2e-3, not 1e-5, on CUDA. Rerun scripts/gpu_check.py on your GPU.")
    corpus = "stdlib"
    if model == "transformer":
        src = st.radio("Corpus", ["stdlib (Python's own docs, no download)", "upload a UTF-8 text file"], key="t_corp")
        if src.startswith("upload"):
            up = st.file_uploader("Text file", type=None, key="t_upload")
            corpus = None
            if up is not None:
                raw = up.getvalue()
                try:
                    text = raw.decode("utf-8")
                    if "\x00" in text or len(text) < 1000:
                        raise UnicodeDecodeError("utf-8", raw, 0, 1, "binary or too short")
                except UnicodeDecodeError:
                    st.error("corpus is not usable text: upload a UTF-8 text file of at least 1000 characters")
                else:
                    folder = Path(_ui.data_root()) / "corpora"
                    folder.mkdir(parents=True, exist_ok=True)
                    path = folder / f"{hashlib.sha1(raw).hexdigest()[:12]}.txt"
                    if not path.exists():
                        path.write_bytes(raw)
                    corpus = str(path)

# -- expand and check: bad input -> st.error, never a traceback --------------------------------------------
configs, err = [], None
try:
    widths = parse_list(widths_txt, int)
    lrs = parse_list(lrs_txt, float) if lrs_txt.strip() else grid(eta0, n_lr, SPACING[sp_lr])
    if wds_txt.strip():
        wds = parse_list(wds_txt, float)
    else:
        wds = grid(lam0, n_wd, SPACING[sp_lr]) if lam0 > 0 else [0.0]
    seeds = parse_list(seeds_txt, int) or [0]
    if model == "transformer" and corpus is None:
        raise ValueError("upload a corpus file, or choose the stdlib corpus")
    common = dict(a=a, b=b, schedule=schedule, warmup=float(warmup))
    if model == "transformer":
        common["corpus"] = corpus
    configs = check_study(model, widths, int(base_width), rules, lrs, wds, int(steps), seeds, **common)
except ValueError as e:
    err = str(e)

if err:
    st.error(err)
    st.stop()

st.write(f"**{len(configs)} runs**: widths {widths}, η₀ ∈ {{{', '.join(f'{x:g}' for x in lrs)}}}, "
         f"λ₀ ∈ {{{', '.join(f'{x:g}' for x in wds)}}}, seeds {seeds}.")
decay_warnings = list(dict.fromkeys(p[1] for p in (decay_problem(c.resolved()) for c in configs)
                                    if p and p[0] == "warning"))  # >= 1 was refused by check_study
if decay_warnings:
    st.warning("Large per-step decay η·λ: " + "; ".join(decay_warnings[:3])
               + (f"; and {len(decay_warnings) - 3} more" if len(decay_warnings) > 3 else ""))

# -- resolved rule table, per width, before training --------------------------------------------------------
with st.expander("Resolved per-class settings (at η₀, λ₀) and horizon checks", expanded=True):
    rule_tabs = st.tabs(rules)
    warned = set()
    for tab, rule in zip(rule_tabs, rules):
        with tab:
            rows = []
            for w in widths:
                res = resolve(rule, w, int(base_width), eta0, lam0, a, b)
                for row in _ui.fmt_table(res, int(steps)):
                    rows.append({"width": w, "m": res.m, "readout ×": res.readout_mult, **row})
                for msg in horizon_warnings(res, int(steps)):
                    if (rule, w) not in warned:
                        warned.add((rule, w))
                        st.warning(f"{rule}, d={w}: {msg}")
            st.dataframe(rows, hide_index=True, width="stretch",
                         column_config={k: st.column_config.NumberColumn(format="%.4g")
                                        for k in ("lr η", "wd λ (torch)", "decay/step η·λ", "τ = 1/(ηλ) steps",
                                                  "steps/τ", "m", "readout ×")})

grid_warnings = sweep_horizon_warnings(configs)  # every run of the grid, not only (η₀, λ₀)
if grid_warnings:
    st.warning("Horizon check: " + " ".join(grid_warnings), icon=":material/hourglass_empty:")
else:
    short = min(c.resolved().table(c.steps)["matrix"]["steps_over_tau"] for c in configs)
    st.success(f"Horizon check: every run reaches ≥ 3 τ of its matrix class (shortest {short:.1f} τ): "
               "steady-state evidence.", icon=":material/check_circle:")

cached, todo = plan(configs, _ui.store())
n_todo = sum(len(c) for c in todo)
st.write(f"{len(cached)} of {len(configs)} runs are already in the store; {n_todo} to train "
         f"in {len(todo)} ensemble(s).")
if n_todo:
    _ui.eta_notice(configs, _ui.store(), device)
if st.button("Train" if n_todo else "Show (all runs are in the store)", type="primary", key="t_go"):
    if n_todo:
        _ui.submit("train_job", configs, label=f"{model} {widths}", device=device)
    else:
        st.session_state["train_cached"] = [c.run_id for c in configs]

snap = _ui.job_panel("train_job")
# This session's results only: the job's own record list (or the cached runs it asked for).
recs = snap["records"] if snap else []
if not recs and st.session_state.get("train_cached"):
    ids = st.session_state["train_cached"]
    recs = [r for r in (_ui.store().get(i) for i in ids) if r]
if recs:
    st.subheader("This study")
    recs_ok = [r for r in recs if r.get("status") == "done"]
    c1, c2 = st.columns(2)
    with c1:
        _ui.show(plots.loss_vs_param(recs_ok, "lr", analysis.lr_optima(recs_ok, param="lr")), "train_loss_vs_lr")
    with c2:
        fits = analysis.width_exponents(recs_ok, n_boot=200)
        _ui.show(plots.top_sv_vs_width(recs_ok, fits), "train_top_sv_vs_width")
    st.caption("Spectra, Transfer and Steady state show this study in depth (pick it in the sidebar there).")
