"""Shared Streamlit helpers of the pages: the store, the job manager, the study picker, the export widget."""
from __future__ import annotations

import functools
import threading

import plotly.io as pio
import streamlit as st

from wdscale.show import export
from wdscale.core.errors import BadInput, DamagedRun, StoreError
from wdscale.show.jobs import JobManager
from wdscale.show.plots import loss_curves
from wdscale.training.store import RunStore, default_root

PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "svg", "scale": 2}}


def _through_app_py() -> None:
    """Make a deep link on a fresh server (/train before anyone opened /) go through app.py.

    Until the first st.navigation call in the process, Streamlit treats pages/ as auto-discovered pages and runs
    the linked page alone: no app.py, so no set_page_config (wide layout) and a sidebar listing _ui.py.  Every page
    imports this module first, so switching discovery off here and rerunning sends that first request through
    app.py, whose st.navigation then picks the same page (page hashes come from the URL path)."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # another Streamlit layout: nothing to fix
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_through_app_py()


def data_root() -> str:
    return default_root()  # $WDSCALE_DATA or ./runs


@st.cache_resource
def _store(root: str) -> RunStore:
    return RunStore(root)


def store() -> RunStore:
    """The store; a corrupt, unreadable or misplaced one is one st.error (with the repair command) and stops the page."""
    try:
        s = _store(data_root())
        s.ping()  # the index may have been damaged since the store was opened
    except (StoreError, BadInput) as e:
        st.error(str(e))
        st.stop()
    return s


@st.cache_resource
def _manager(root: str) -> JobManager:
    # One per server and data dir, shared by every session; its semaphore keeps 1 training job at a time.
    return JobManager(root, max_concurrent=1)


def manager() -> JobManager:
    return _manager(data_root())


_page = threading.local()  # this script run's damaged-run notice (a run executes in one thread)


# -- data source: the user's store, or a reference study (wdscale.science.gallery), read-only and never mixed --------
MINE = "my runs"


@st.cache_resource
def _reference(root: str, name: str):
    from wdscale.science import gallery

    return gallery.open_reference(name, root)  # checks every file's sha256 once per server


def reference() -> str | None:
    """The reference study this session views (sidebar "Data", set by ``records``), or None for my runs."""
    name = st.session_state.get("data_source")
    return None if name in (None, MINE) else name


def view_store() -> RunStore:
    """What the data pages read: the chosen reference study, else the user's store (training always uses
    ``store()``, never a reference)."""
    name = reference()
    if name is None:
        return store()
    from wdscale.science import gallery

    try:
        return _reference(str(gallery.gallery_dir()), name)
    except (StoreError, BadInput) as e:
        st.session_state["data_source"] = MINE
        st.error(str(e))
        st.stop()


def view_root() -> str:
    return str(view_store().root)


def weights_shipped() -> bool:
    return getattr(view_store(), "weights_shipped", True)


def _pick_source() -> None:
    from wdscale.science import gallery

    refs = gallery.names()
    if not refs:
        st.session_state["data_source"] = MINE
        return
    opts = [MINE] + refs
    cur = st.session_state.get("data_source")
    choice = st.sidebar.selectbox("Data", opts, index=opts.index(cur) if cur in opts else 0, key="data_pick",
                                  format_func=lambda s: s if s == MINE else f"reference study: {s}",
                                  help="reference studies ship with wdscale (read-only); your own runs are "
                                       "never mixed into them")
    st.session_state["data_source"] = choice
    if choice != MINE:
        st.caption(f"reference study **{choice}**: reproduce with `wdscale gallery reproduce {choice}`")


def records(done_only: bool = True) -> list[dict]:
    """Stored records of the chosen data (sidebar "Data": my runs or a reference study); damaged runs (files
    missing or corrupt) are left out and named in one notice here."""
    _pick_source()
    recs = view_store().records()
    _page.notice = st.empty()
    _page.damaged = {r["run_id"]: r.get("damage", "") for r in recs if r.get("status") == "damaged"}
    _show_damaged()
    return [r for r in recs if r.get("status") == "done"] if done_only else recs


def _show_damaged() -> None:
    damaged = getattr(_page, "damaged", {})
    if not damaged:
        return
    ids = sorted(damaged)
    msg = (f"{len(ids)} damaged run(s) not shown (weights or spectra file missing or corrupt): "
           f"{', '.join(ids[:8])}{' …' if len(ids) > 8 else ''}. `wdscale runs --out {data_root()} --check "
           "--repair` drops them; training the same study again retrains them.")
    notice = getattr(_page, "notice", None)
    (notice or st).warning(msg, icon=":material/healing:")


def mark_damaged(err: DamagedRun) -> None:
    """Add a run whose file failed to load to this page's one notice."""
    if not hasattr(_page, "damaged"):
        _page.damaged = {}
    _page.damaged[err.run_id] = err.why
    _show_damaged()


@st.cache_data(max_entries=256, show_spinner=False)
def _spectra(root: str, run_id: str, stamp: tuple) -> dict:
    return view_store().spectra(run_id)


def _stamp(path) -> tuple:
    # Cache key part: a retrained or repaired run (same id) has a new file, so stale arrays are never served.
    try:
        st_ = path.stat()
        return st_.st_size, st_.st_mtime_ns
    except OSError:
        return ()


def spectra(run_id: str) -> dict | None:
    """A run's stored spectra, or None (and the run named in the damaged notice) when its file is unusable."""
    try:
        return _spectra(view_root(), run_id, _stamp(view_store().paths(run_id)[1]))
    except DamagedRun as e:
        mark_damaged(e)
        return None


def stamp(run_id: str, which: str = "weights") -> tuple:
    """(size, mtime) of a run's weights or spectra file: put it in the key of a page's cached reader."""
    return _stamp(view_store().paths(run_id)[0 if which == "weights" else 1])


def pick_study(recs: list[dict], key: str, where=st.sidebar) -> tuple[str | None, list[dict]]:
    """Selectbox over studies (runs that differ only in width/rule/lr/wd/seed), newest first."""
    studies = export.group_studies(recs)
    if not studies:
        return None, []
    labels = list(studies)
    default = st.session_state.get("study")
    idx = labels.index(default) if default in labels else 0
    label = where.selectbox("Study", labels, index=idx, key=key,
                            format_func=lambda s: f"{s} ({len(studies[s])} runs)")
    st.session_state["study"] = label
    return label, studies[label]


# -- export widget: every figure downloads as PNG, SVG, HTML and its data as CSV -------------------------
_bytes_lock = threading.Lock()


@functools.lru_cache(maxsize=64)
def _fig_bytes(fig_json: str, fmt: str) -> bytes:
    # Keyed on the figure's JSON: the same figure is rendered once however often the page reruns.
    return export.figure_bytes(pio.from_json(fig_json), fmt)


def _lazy(fig_json: str, fmt: str):
    def make() -> bytes:
        with _bytes_lock:
            return _fig_bytes(fig_json, fmt)
    return make


def show(fig, name: str, key: str | None = None) -> None:
    """Draw a figure with download buttons under it (bytes made on click, then cached)."""
    st.plotly_chart(fig, width="stretch", config=PLOT_CONFIG, key=f"chart_{key or name}")
    fj = fig.to_json()
    row = st.container(horizontal=True, gap="small")
    for fmt in ("png", "svg", "html", "csv"):
        row.download_button(fmt.upper(), data=_lazy(fj, fmt), file_name=f"{export.slug(name)}.{fmt}",
                            mime=export.FORMATS[fmt], on_click="ignore", key=f"dl_{fmt}_{key or name}",
                            help=f"download this figure as {fmt.upper()}" if fmt != "csv" else "the plotted data")


# -- live job panel ------------------------------------------------------------------------------------
def job_id(job_key: str) -> str | None:
    """This session's job under ``job_key``; where it has none running, one another tab or an earlier page load
    started under the same key (the manager finds it from its folder under the data dir), which this session
    then follows."""
    mgr = manager()
    jid = st.session_state.get(job_key)
    job = mgr.get(jid)
    if job is not None and job.status in ("queued", "running"):
        return jid
    other = mgr.active(job_key)
    if other is not None:
        st.session_state[job_key] = jid = other
    return jid if mgr.get(jid) is not None else None


def job_running(job_key: str) -> bool:
    """Whether a job under ``job_key`` (this session's, or one found from the data dir) is queued or training."""
    snap = manager().snapshot(job_id(job_key), records=False, live_only=True)
    return snap is not None and snap["status"] in ("queued", "running")


def _process_words(snap: dict) -> str:
    p = snap.get("process") or {}
    if not p:
        return "its own process"
    return f"its own process: {p['threads']} threads, nice {p['nice']}, OpenMP wait policy {p['policy']}"


def job_status_line(snap: dict) -> str:
    s = snap["status"]
    if s == "queued":
        return f"queued (position {snap.get('queue_position', '?')}): another study is training; this one starts next"
    if s == "running" and snap.get("cancelling"):
        return "cancelling: the training process checkpoints the running ensemble and stops …"
    if s == "running" and snap.get("starting"):
        return f"training: starting ({_process_words(snap)}); loading and planning …"
    if s == "running":
        eta = snap["eta_s"]
        eta_s = f", ETA {eta:.0f} s" if eta is not None else ""
        return (f"training width {snap['width']} (ensemble {snap['chunk'][0]}/{snap['chunk'][1]}), step "
                f"{snap['step']}/{snap['steps']}; {snap['to_train']} runs to train, {snap['cached']} from the store"
                f"{eta_s}")
    if s == "done":
        return f"done: {snap['n_runs']} runs ({snap['cached']} from the store) in {snap['elapsed_s']:.1f} s"
    if s == "cancelled":
        return "cancelled: finished ensembles are in the store; the interrupted one is stored as partial"
    return f"error: {snap['error']}"


def job_error_text(snap: dict) -> str:
    """The one message a failed job shows: what stopped it, and that nothing stored is lost."""
    return (f"Training stopped: {snap['error']}. Runs finished before it are in the store; training the same study "
            "again trains only what is missing (an interrupted ensemble resumes from its last checkpoint, if it has "
            "one).")


def live_curves_fig(snap: dict):
    curves = []
    for rid, pts in snap["curves"].items():
        if not pts:
            continue
        i = snap["info"][rid]
        curves.append({"name": f"{i['rule']} d={i['width']} η₀={i['lr']:.3g} λ₀={i['wd']:.3g}",
                       "steps": [p[0] for p in pts], "loss": [p[1] for p in pts], "rule": i["rule"],
                       "width": i["width"], "diverged": rid in snap["diverged"]})
    return loss_curves(curves, title="Live training loss per member of the running ensemble (dotted: diverged)")


def job_panel(job_key: str, show_curves: bool = True) -> dict | None:
    """Progress bar, ETA, cancel button and live loss curves of this session's job in ``session_state[job_key]``.

    Polls every 2 s while the job is queued/running (a fragment, so only this part reruns); when the job
    ends it reruns the whole page once so the results below are drawn from the store."""
    jid = job_id(job_key)  # this session's, or one a reload or another tab finds running
    # the records are copied once per page run (the 2 s poll below copies only the live curves)
    snap = manager().snapshot(jid, records=True, live_only=True)
    if snap is None:
        return None
    if snap["status"] in ("queued", "running"):
        _live_panel(job_key, show_curves)
    else:
        _draw_panel(snap, job_key, show_curves, live=False)
    return snap


def _draw_panel(snap: dict, job_key: str, show_curves: bool, live: bool) -> None:
    if snap["status"] == "error":  # one message (a crash in the training process; the server goes on)
        st.error(job_error_text(snap), icon=":material/error:")
    else:
        st.progress(snap["fraction"], text=job_status_line(snap))
    if live and st.button("Cancel", key=f"cancel_{job_key}"):
        manager().cancel(snap["id"])
    if show_curves and snap["curves"]:
        st.plotly_chart(live_curves_fig(snap), width="stretch", config=PLOT_CONFIG, key=f"live_{job_key}")


@st.fragment(run_every=2.0)
def _live_panel(job_key: str, show_curves: bool) -> None:
    snap = manager().snapshot(st.session_state.get(job_key), records=False, live_only=True)
    if snap is None:
        return
    if snap["status"] not in ("queued", "running"):
        st.rerun()  # whole page: the results sections read the finished runs
    _draw_panel(snap, job_key, show_curves, live=True)


def submit(job_key: str, configs, label: str, device: str = "cpu", then=None,
           expected_member_steps: int | None = None) -> bool:
    """Start a job for this session (one at a time per key); False with an st.error on bad input.

    ``then`` (records -> configs) adds a second phase (the demo)."""
    from wdscale.training.train import TrainOptions

    if job_running(job_key):
        st.warning("this study is already training (here or in another tab); cancel it first")
        return False
    try:
        st.session_state[job_key] = manager().submit(configs, label=label, opts=TrainOptions(device=device),
                                                     then=then, expected_member_steps=expected_member_steps,
                                                     key=job_key)
    except (ValueError, FileNotFoundError) as e:
        st.error(str(e))
        return False
    return True


def submit_study(job_key: str, spec: dict, steps: int, device: str = "cpu", eta: dict | None = None,
                 members: str = "auto") -> bool:
    """Start a preset study (wdscale.science.study.run_study) for this session as one background job; False with an
    st.error on bad input.  ``eta`` (cost.phases_eta's dict) drives its progress bar and live ETA; ``members`` is
    a model file's member path (TrainOptions.members)."""
    from wdscale.training.train import TrainOptions

    if job_running(job_key):
        st.warning("this study is already training (here or in another tab); cancel it first")
        return False
    wc = None
    if eta and eta.get("member_steps"):
        wc = {w: eta["per_width"][w] / n for w, n in eta["member_steps"].items() if n}
    try:
        st.session_state[job_key] = manager().submit_study(
            spec, steps, label=spec.get("name", "study"), opts=TrainOptions(device=device, members=members),
            expected_seconds=(eta or {}).get("seconds") or None, width_cost=wc, key=job_key)
    except (ValueError, FileNotFoundError) as e:
        st.error(str(e))
        return False
    return True


# -- ETA before Train: wdscale.training.cost, calibrated on this machine once (in the background, never blocking) ----------
@st.cache_resource
def _calibrations() -> dict:
    from concurrent.futures import ThreadPoolExecutor

    # one worker: two sessions asking at once share one measurement, and it never runs two at a time
    return {"pool": ThreadPoolExecutor(1, thread_name_prefix="wdscale-cost"), "futures": {}, "lock": threading.Lock()}


def _calibration(model: str, device: str, threads: int):
    """The cost constants of ``model`` here, or None while they are being measured (started on first ask)."""
    from wdscale.training import cost

    cal = cost.cached_calibration(model, device, threads)
    if cal is not None:
        return cal
    c = _calibrations()
    with c["lock"]:
        fut = c["futures"].get((model, device, threads))
        if fut is None or (fut.done() and fut.exception() is not None):
            fut = c["futures"][(model, device, threads)] = c["pool"].submit(cost.calibrate, model, device, threads)
    return fut.result() if fut.done() else None


@st.fragment(run_every=1.0)
def _await_calibration(models: tuple, device: str, threads: int) -> None:
    if all(_calibration(m, device, threads) is not None for m in models):
        st.rerun()  # whole page: the ETA line is drawn from the constants


def eta_notice(configs, store_, device: str = "cpu", phases=None, note: str = "") -> dict | None:
    """One line before Train: the study's ETA on this machine (wdscale.training.cost.study_eta; ``cost.phases_eta`` for a
    study that trains phase after phase), or that it is being measured; returns the ETA's dict.  ``note`` ends
    the line."""
    from wdscale.training import cost

    threads = manager().threads
    if phases is not None:
        configs = [c for ph in phases for c in ph]
    models = tuple(sorted({c.model for c in configs}))
    cals = {m: _calibration(m, device, threads) for m in models}
    if any(v is None for v in cals.values()):
        st.info(f"ETA: timing a few {'/'.join(models)} steps on this machine (once, a few seconds)…",
                icon=":material/timer:")
        _await_calibration(models, device, threads)
        return None
    eta = (cost.study_eta(configs, store_, device, threads, cals=cals) if phases is None
           else cost.phases_eta(phases, store_, device, threads, cals=cals))
    if eta["to_train"] == 0:
        st.info("ETA: nothing to train, every run is in the store.", icon=":material/timer:")
        return eta
    per = ", ".join(f"d={w}: {cost.format_seconds(s)}" for w, s in sorted(eta["per_width"].items()))
    st.info(f"**ETA ≈ {cost.format_seconds(eta['seconds'])}** for {eta['to_train']} runs on this machine "
            f"({threads} torch threads; {per}; {eta['flops']:.2g} FLOPs). From wdscale.training.cost, calibrated on this "
            "machine's measured step times: a plan, good to about 2×; a busy machine takes longer." + note,
            icon=":material/timer:")
    return eta
