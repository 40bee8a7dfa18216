"""The app's training process (wdscale.show.child, started by wdscale.show.jobs.JobManager), with real processes and
small steps: it reports through its event file and the store, a second manager finds a running job from its folder,
Cancel (SIGTERM) checkpoints and Resume continues, and each crash (a model file that raises, one that calls
os._exit, a killed process, out of memory) ends the job with one clear message while every run stored before it
stays in the store.  No timings are asserted: the machine may be shared."""
import json
import os
import signal
import time

import pytest

from wdscale.show import child
from wdscale.show.jobs import JobManager
from wdscale.training.store import RunStore
from wdscale.training.sweep import expand_grid
from wdscale.training.train import RunConfig, TrainOptions

from _models import model_file  # noqa: E402  (tests/_models.py: the crashing model files)

LOOP = TrainOptions(members="loop")  # no timing of the member paths: the loss runs only in training


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("WDSCALE_TORCH_THREADS", "1")  # tiny models; the cores are shared
    monkeypatch.setenv("WDSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WDSCALE_RAY_ADDRESS", raising=False)
    return tmp_path


def own_configs(path: str, widths=(32, 64), steps: int = 6, lrs=(1e-2,)) -> list[RunConfig]:
    name = os.path.basename(path)[:-3]
    return expand_grid(name, widths, 32, ["mup"], lrs, [0.1], steps, [0], model_file=path)


def wait_for(cond, what: str, timeout: float = 300.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def events(mgr: JobManager, jid: str) -> list[dict]:
    return [json.loads(x) for x in (mgr.job_dir(jid) / child.EVENTS).read_text().splitlines() if x.strip()]


def stored(root, status="done") -> dict:
    return {r["run_id"]: r for r in RunStore(root).records() if r["status"] == status}


def end_of(mgr: JobManager, jid: str) -> dict:
    assert mgr.wait(jid, 300), "the job did not end"
    return mgr.snapshot(jid)


def test_a_sweep_trains_in_its_own_process_at_a_lower_priority(env, monkeypatch):
    monkeypatch.setenv(child.NICE_ENV, "7")  # else chosen from the load (tests share the machine)
    root = env / "runs"
    mgr = JobManager(str(root))
    cs = expand_grid("synthetic", [32, 64], 32, ["mup"], [1e-2, 2e-2], [0.5], 20, [0], batch_size=16)
    jid = mgr.submit(cs, label="tiny", key="k")
    snap = end_of(mgr, jid)
    assert snap["status"] == "done" and snap["error"] is None
    assert sorted(r["run_id"] for r in snap["records"]) == sorted(c.run_id for c in cs)
    assert set(stored(root)) == {c.run_id for c in cs}
    p = snap["process"]
    assert p["pid"] != os.getpid() and p["threads"] == 1 and p["nice"] == os.nice(0) + 7 and p["batch"]
    assert p["load"] is not None and p["policy"] and "torch was loaded" not in p["policy_reason"]
    assert snap["curves"] and snap["fraction"] == pytest.approx(1.0)
    kinds = {e["type"] for e in events(mgr, jid)}
    assert {"configs", "process", "plan", "chunk", "start", "step", "done", "record"} <= kinds
    assert json.loads((mgr.job_dir(jid) / "status.json").read_text())["status"] == "done"


def test_a_second_manager_finds_the_running_job_cancels_it_and_resume_continues(env):
    """A reload (a new session: the job found by its key) or a new manager (Streamlit's cache cleared) follows the
    job from its folder; its Cancel is a SIGTERM to the process, which checkpoints; the same sweep again resumes."""
    root = env / "runs"
    path = model_file(env, "slow", pace=0.02)
    cs = own_configs(path, widths=(32,), steps=400)
    first = JobManager(str(root))
    jid = first.submit(cs, label="slow", opts=LOOP, key="train_job")
    other = JobManager(str(root))
    assert wait_for(lambda: other.active("train_job"), "the job in its folder") == jid
    assert other.active("nobody's key") is None
    wait_for(lambda: other.snapshot(jid, records=False)["step"] >= 4, "a few steps, seen from the files")
    snap = other.snapshot(jid, records=False, live_only=True)
    assert snap["status"] == "running" and snap["curves"] and snap["info"] and snap["width"] == 32
    other.cancel(jid)
    assert end_of(first, jid)["status"] == "cancelled" and end_of(other, jid)["status"] == "cancelled"
    assert other.active("train_job") is None
    [partial] = stored(root, "partial").values()
    assert 0 < partial["steps_done"] < 400
    assert list((root / "checkpoints").glob("*.pt"))  # the interrupted ensemble's checkpoint

    again = other.submit(cs, label="slow", opts=LOOP, key="train_job")
    snap = end_of(other, again)
    assert snap["status"] == "done"
    [start] = [e for e in events(other, again) if e["type"] == "start"]
    assert start["resumed_from"] >= partial["steps_done"] > 0  # continued from the checkpoint, not from step 0
    assert [r["steps_done"] for r in stored(root).values()] == [400]


def test_a_model_file_that_raises_is_one_line_and_the_earlier_runs_stay(env):
    """The Train page's path: the `lm` preset's study design on the user's model file (study.run_study)."""
    from wdscale.show import planning

    root = env / "runs"
    path = model_file(env, "raises")
    spec = planning.own_study_spec(path, "32,64", 4, "0.01", "0.1")
    mgr = JobManager(str(root))
    snap = end_of(mgr, mgr.submit_study(spec, 4, label="raises", opts=LOOP, key="own_job"))
    assert snap["status"] == "error"
    assert snap["error"].startswith("RuntimeError: the model file broke at width 64 (raises.py:")
    assert "\n" not in snap["error"]
    runs = stored(root)
    assert runs and {r["width"] for r in runs.values()} == {32}  # the proxy grid and width 32 before the crash
    assert "Traceback" in (mgr.job_dir(snap["id"]) / child.LOG).read_text()  # the details, for who wants them
    # the manager goes on serving: the next job trains
    ok = mgr.submit(own_configs(model_file(env, "slow"), widths=(32,), steps=3, lrs=(3e-2,)), opts=LOOP)
    assert end_of(mgr, ok)["status"] == "done"


def test_a_model_file_that_calls_os_exit(env):
    root = env / "runs"
    mgr = JobManager(str(root))
    snap = end_of(mgr, mgr.submit(own_configs(model_file(env, "exits")), opts=LOOP))
    assert snap["status"] == "error"
    assert "exited with code 3 before it finished" in snap["error"] and "os._exit" in snap["error"]
    assert [r["width"] for r in stored(root).values()] == [32]


def test_a_killed_training_process(env):
    root = env / "runs"
    mgr = JobManager(str(root))
    jid = mgr.submit(own_configs(model_file(env, "slow"), steps=200), opts=LOOP)
    wait_for(lambda: stored(root) and mgr.snapshot(jid, records=False)["width"] == 64, "width 64 training")
    os.kill(mgr.snapshot(jid, records=False)["pid"], signal.SIGKILL)
    snap = end_of(mgr, jid)
    assert snap["status"] == "error"
    assert "killed (SIGKILL)" in snap["error"] and "out-of-memory killer" in snap["error"]
    assert [r["width"] for r in stored(root).values()] == [32]


def test_out_of_memory_says_so(env):
    """An address-space cap on the training process (RLIMIT_AS, ``WDSCALE_TRAIN_MEMORY``) and a model file that
    asks for 16 GiB past it."""
    root = env / "runs"
    mgr = JobManager(str(root), memory=child.parse_bytes("3G"))
    snap = end_of(mgr, mgr.submit(own_configs(model_file(env, "oom")), opts=LOOP))
    assert snap["status"] == "error"
    assert snap["error"].startswith("out of memory in the training process: an allocation of 16.0 GiB failed (oom.py:")
    assert [r["width"] for r in stored(root).values()] == [32]


def test_a_job_whose_app_is_gone_is_not_running(env):
    """A folder left by an app that stopped (its owner and its process gone, no word on how it ended) is no running
    job: the next manager concludes it."""
    root = env / "runs"
    d = root / "jobs" / "abc123def456"
    d.mkdir(parents=True)
    child.write_json(d / "job.json", {"id": "abc123def456", "key": "demo_job", "label": "demo", "created": 1.0,
                                      "owner": 2 ** 22 + 7, "owner_start": None})
    child.write_json(d / "child.pid", {"pid": 2 ** 22 + 9, "start": None, "phase": 0, "started": 2.0})
    mgr = JobManager(str(root))
    assert mgr.active("demo_job") is None
    snap = mgr.snapshot("abc123def456")
    assert snap["status"] == "error" and "the app stopped" in snap["error"]
    assert json.loads((d / "status.json").read_text())["status"] == "error"
    assert mgr.snapshot("../etc") is None and mgr.snapshot("0" * 12) is None


def test_the_priority_follows_the_load_of_other_work(monkeypatch):
    monkeypatch.delenv(child.NICE_ENV, raising=False)
    assert child.choose_nice(None)[0] == child.choose_nice(0.1)[0] == 10  # idle: the server and browser first
    assert child.choose_nice(1.5)[0] == 0  # busy with others' work: niceness would only starve the training
    monkeypatch.setenv(child.NICE_ENV, "3")
    assert child.choose_nice(1.5) == (3, "$WDSCALE_TRAIN_NICE")


def test_parse_bytes_and_oom_words():
    assert child.parse_bytes("3G") == 3 * 2 ** 30 and child.parse_bytes("512m") == 512 * 2 ** 20
    assert child.parse_bytes("1000") == 1000 and child.parse_bytes("") is None
    assert child.is_oom(MemoryError()) and child.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not child.is_oom(RuntimeError("boom"))


STOPS = '''import os, sys, time
from wdscale.show.jobs import JobManager
from wdscale.training.sweep import expand_grid
from wdscale.training.train import TrainOptions
root, path = sys.argv[1], sys.argv[2]
cs = expand_grid("slow", [32], 32, ["mup"], [1e-2], [0.1], 400, [0], model_file=path)
mgr = JobManager(root)
jid = mgr.submit(cs, opts=TrainOptions(members="loop"), key="train_job")
while mgr.snapshot(jid, records=False)["step"] < 4:
    time.sleep(0.2)
print(jid, flush=True)
os._exit(0)  # the server dies at once: no cancel, no cleanup
'''


def test_the_training_process_stops_when_the_app_that_started_it_is_gone(env):
    """No orphan keeps the cores busy after the server stops: the process checkpoints and exits by itself, and the
    next manager on the data dir sees the job as ended."""
    import subprocess
    import sys

    root = env / "runs"
    out = subprocess.run([sys.executable, "-c", STOPS, str(root), model_file(env, "slow", pace=0.02)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    jid = out.stdout.split()[-1]
    mgr = JobManager(str(root))
    wait_for(lambda: mgr.snapshot(jid, records=False)["status"] not in ("queued", "running"), "the job's end")
    snap = mgr.snapshot(jid)
    assert snap["status"] == "cancelled" and "the app that started it stopped" in snap["error"]
    [partial] = stored(root, "partial").values()  # checkpointed and stored as partial: Resume continues it
    assert partial["steps_done"] > 0 and list((root / "checkpoints").glob("*.pt"))
