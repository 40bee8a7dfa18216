"""The app runs every page without exception, the demo trains in the background and draws its figures, bad
input is a clear st.error, and the job manager queues, separates and cancels jobs."""
import time

import pytest

from wdscale.show.jobs import JobManager, check_study
from wdscale.training.store import RunStore
from wdscale.training.sweep import expand_grid

PAGES = ["pages/train.py", "pages/spectra.py", "pages/transfer.py", "pages/steady_state.py",
         "pages/diagnostics.py", "pages/runs.py"]
DEMO_STEPS = "6"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    monkeypatch.setenv("WDSCALE_DEMO_STEPS", DEMO_STEPS)
    monkeypatch.setenv("WDSCALE_TORCH_THREADS", "1")  # the training process's threads: tiny models, shared cores
    return tmp_path / "runs"


def app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file("../app.py", default_timeout=60)


def run_page(page: str | None):
    at = app()
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def demo_state(store) -> dict:
    """Where the demo's three phases (proxy grid, transfer, fitted) stand in the store: Home runs run_study."""
    from wdscale.science.study import DEMO, _steps, preset_state

    return preset_state(DEMO, store, _steps(None))


def wait_for_demo(root, timeout=300.0):
    store = RunStore(root)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if demo_state(store)["complete"]:
            return
        time.sleep(0.2)
    raise AssertionError("demo did not finish")


def test_pages_run_on_an_empty_store(data_dir):
    at = run_page(None)
    assert any("weight decay" in t.value for t in at.title)
    for page in PAGES:
        run_page(page)


def test_demo_trains_then_every_page_shows_it(data_dir, one_thread):
    at = run_page(None)
    assert not at.get("plotly_chart")  # nothing trained yet
    at.button(key="demo_button").click().run()
    assert not at.exception
    wait_for_demo(data_dir)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    charts = at.get("plotly_chart")
    assert len(charts) >= 2  # sigma_top vs width and loss vs lr
    assert at.button(key="demo_button").disabled  # results cached in the store: nothing to retrain
    n = len(RunStore(data_dir).records())
    state = demo_state(RunStore(data_dir))
    assert n == state["n_runs"] and any(c.rule == "fitted" for c in state["phases"][2])  # the fitted phase too
    for page in PAGES:
        at = run_page(page)
        if page == "pages/runs.py":  # table + bundle download (charts only for selected rows)
            assert at.dataframe and len(at.dataframe[0].value) == n
            assert any(c.value.startswith("wdscale sweep") for c in at.code)
        elif page != "pages/train.py":
            assert at.get("plotly_chart"), page
    # a fresh session sees the stored demo at once, and no new runs appear
    at = run_page(None)
    assert len(at.get("plotly_chart")) >= 2
    assert len(RunStore(data_dir).records()) == n


@pytest.mark.parametrize("field,value,needle", [
    ("t_widths", "", "width list is empty"),
    ("t_widths", "64,abc", "not an integer"),
    ("t_base", 4096, "not sensible"),
    ("t_lrs", "50", "out of range"),
    ("t_wds", "1000", "out of range"),
    ("t_widths", ",".join(str(64 * k) for k in range(1, 60)), "study too big"),
])
def test_train_page_bad_input_is_an_error(data_dir, field, value, needle):
    at = run_page("pages/train.py")
    widget = at.number_input(key=field) if field == "t_base" else at.text_input(key=field)
    widget.set_value(value).run()
    assert not at.exception
    assert any(needle in e.value for e in at.error), [e.value for e in at.error]


def test_train_page_shows_resolved_table_and_horizon_warning(data_dir):
    at = run_page("pages/train.py")
    at.number_input(key="t_steps").set_value(10).run()
    assert at.dataframe  # resolved per-class table
    df = at.dataframe[0].value
    assert {"lr η", "decay/step η·λ", "τ = 1/(ηλ) steps", "steps/τ"} <= set(df.columns)
    assert any("tau" in w.value for w in at.warning)  # 10 steps << 3 tau


def tiny(widths=(32,), lrs=(1e-2,), steps=40):
    return expand_grid("synthetic", widths, 32, ["mup"], lrs, [0.5], steps, [0], batch_size=16)


def test_job_manager_queues_separates_and_cancels(tmp_path, monkeypatch):
    monkeypatch.setenv("WDSCALE_TORCH_THREADS", "1")
    mgr = JobManager(str(tmp_path / "runs"), max_concurrent=1)
    a = mgr.submit(tiny(steps=3000), label="a")
    t0 = time.time()
    while mgr.snapshot(a)["status"] != "running" and time.time() - t0 < 60:
        time.sleep(0.05)
    b = mgr.submit(tiny(lrs=(2e-2,)), label="b")  # a holds the slot, so b waits
    time.sleep(0.3)
    assert mgr.snapshot(b)["status"] == "queued"  # one training slot
    assert mgr.snapshot(b)["queue_position"] == 1
    mgr.cancel(a)
    assert mgr.wait(a, 300) and mgr.wait(b, 300)
    sa, sb = mgr.snapshot(a), mgr.snapshot(b)
    assert sa["status"] == "cancelled" and sb["status"] == "done"
    assert [r["lr"] for r in sb["records"]] == [2e-2]  # b sees only its own runs
    assert all(r["lr"] == 1e-2 for r in sa["records"])
    assert sb["fraction"] == pytest.approx(1.0) and sb["curves"]


def test_check_study_rejects_nonsense():
    with pytest.raises(ValueError, match="empty"):
        check_study("synthetic", [], 64, ["mup"], [1e-2], [0.1], 10)
    with pytest.raises(ValueError, match="not sensible"):
        check_study("synthetic", [64, 128], 512, ["mup"], [1e-2], [0.1], 10)
    with pytest.raises(ValueError, match="too big"):
        check_study("synthetic", [4096], 64, ["mup", "wd"], [1e-2] * 1, [0.1], 10 ** 6)
    assert len(check_study("synthetic", [64, 128], 64, ["mup"], [1e-2, 2e-2], [0.1], 10)) == 4


def test_jobs_use_ray_when_the_address_is_set(tmp_path, monkeypatch):
    import threading

    import wdscale.training.sweep as sweep
    from wdscale.show import child
    from wdscale.training.train import TrainOptions

    monkeypatch.setenv("WDSCALE_RAY_ADDRESS", "10.0.0.1:6379")
    kw = JobManager(str(tmp_path / "runs"), threads=0).sweep_kwargs()
    assert kw == {"executor": "ray", "address": "10.0.0.1:6379"}
    seen = {}

    def fake_run_sweep(configs, store, opts, on_event=None, cancel=None, on_record=None, **kw):
        seen.update(kw)
        return []

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)  # the training process's task, run here
    task = {"kind": "sweep", "configs": tiny(), "store_root": str(tmp_path / "runs"), "opts": TrainOptions(),
            "sweep_kw": kw}
    child.run_task(task, threading.Event(), lambda e: None)
    assert seen == {"executor": "ray", "address": "10.0.0.1:6379"}
    monkeypatch.undo()
    monkeypatch.delenv("WDSCALE_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("WDSCALE_TORCH_THREADS", "1")
    local = JobManager(str(tmp_path / "runs"), threads=0)
    assert local.sweep_kwargs() == {}  # local executor: run_sweep's defaults
    jid = local.submit(tiny())
    assert local.wait(jid, 300) and local.snapshot(jid)["status"] == "done"


def test_train_page_says_what_the_cuda_check_found_and_refuses_exp_warmup_with_mup(data_dir):
    at = run_page("pages/train.py")
    assert any("CUDA path: checked once" in c.value and "gpu_check" in c.value for c in at.caption)
    at.selectbox(key="t_sched").set_value("exp_warmup").run()  # default rules mup, wd: width factor twice
    assert not at.exception
    assert any("exp_warmup" in e.value and "applies twice" in e.value for e in at.error), [e.value for e in at.error]


def test_a_reload_sees_the_running_demo_and_cancels_it(data_dir):
    """A fresh session (a browser reload, a second tab) of a server whose manager did not start the job: Home finds
    the job under its key from the job's folder, shows it training, offers no second start, and its Cancel stops it."""
    mgr = JobManager(str(data_dir))
    jid = mgr.submit(tiny(steps=200_000), label="demo", key="demo_job")
    t0 = time.time()
    while mgr.snapshot(jid, records=False)["step"] == 0 and time.time() - t0 < 300:
        time.sleep(0.2)
    at = run_page(None)
    button = at.button(key="demo_button")
    assert button.disabled and button.label.startswith("The demo is training")
    assert any((p.proto.text or "").startswith("training width 32") for p in at.get("progress")), \
        [p.proto.text for p in at.get("progress")]
    at.button(key="cancel_demo_job").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert mgr.wait(jid, 300) and mgr.snapshot(jid)["status"] == "cancelled"
    at = run_page(None)
    assert not at.button(key="demo_button").disabled


def test_a_crashed_training_process_is_one_message_and_the_app_goes_on(data_dir, tmp_path):
    from _models import model_file

    path = model_file(tmp_path, "exits")  # its loss calls os._exit(3) at width 64
    cs = expand_grid("exits", [32, 64], 32, ["mup"], [1e-2], [0.1], 4, [0], model_file=path)
    from wdscale.training.train import TrainOptions

    mgr = JobManager(str(data_dir))
    jid = mgr.submit(cs, label="demo", key="demo_job", opts=TrainOptions(members="loop"))
    assert mgr.wait(jid, 300)
    at = app()
    at.session_state["demo_job"] = jid  # the session that started it
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    [err] = at.error
    assert err.value.startswith("Training stopped: the training process exited with code 3 before it finished")
    assert "in the store" in err.value
    assert not at.get("progress")  # one message, not a bar beside it
    assert [r["width"] for r in RunStore(data_dir).records()] == [32]  # stored before the crash
    for page in ("pages/runs.py", "pages/train.py"):
        run_page(page)  # the app goes on serving
