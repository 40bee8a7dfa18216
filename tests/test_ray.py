"""The Ray executor: same results as in-process, survives a dying worker, resumes after a killed driver.

One local Ray instance (loopback, no dashboard) serves the whole module; it is started from a short-lived
thread, as the app's job worker would start it, and must outlive that thread.
"""
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from wdscale.training.store import RunStore  # noqa: E402
from wdscale.training.sweep import expand_grid, run_sweep  # noqa: E402
from wdscale.training.train import TrainOptions  # noqa: E402

GRID = dict(model="synthetic", widths=[32, 64], base_width=32, rules=["mup", "wd"], lrs=[1e-2, 3e-2],
            wds=[0.1], steps=30)


@pytest.fixture(scope="module")
def cluster():
    from wdscale.training.ray_executor import ensure_ray

    th = threading.Thread(target=ensure_ray)
    th.start()
    th.join()
    assert ray.is_initialized()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The reference: the same grid trained in-process."""
    import torch

    store = RunStore(tmp_path_factory.mktemp("local"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like a Ray task (1 CPU); also far faster on a contended 2-core machine
    try:
        return store, run_sweep(expand_grid(**GRID), store, TrainOptions())
    finally:
        torch.set_num_threads(threads)


def in_thread(fn):
    """Run fn() on a fresh thread (like Streamlit's worker) and return its value or raise its error."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    th = threading.Thread(target=target)
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def assert_same(recs, ref_recs, ref_store, store):
    ref = {r["run_id"]: r for r in ref_recs}
    assert sorted(r["run_id"] for r in recs) == sorted(ref)
    for r in recs:
        q = ref[r["run_id"]]
        assert r["status"] == "done" and not r["diverged"]
        assert r["final_loss"] == pytest.approx(q["final_loss"], abs=1e-6)
        assert set(r["top_sv"]) == set(q["top_sv"])
        for name, sv in r["top_sv"].items():
            assert sv == pytest.approx(q["top_sv"][name], abs=1e-6)
        a, b = store.spectra(r["run_id"]), ref_store.spectra(r["run_id"])
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-6)


def check_events(events, n_chunks, steps):
    """Progress never goes backwards, every chunk starts once and finishes at the last step."""
    starts = [e["chunk"] for e in events if e["type"] == "start"]
    assert sorted(starts) == list(range(n_chunks))
    for k in range(n_chunks):
        st = [e["step"] for e in events if e["type"] == "step" and e["chunk"] == k]
        assert st == sorted(set(st)) and st[-1] == steps
        assert [e["step"] for e in events if e["type"] == "done" and e["chunk"] == k] == [steps]
    ray_ev = [e for e in events if e["type"] == "ray"]
    assert ray_ev[0] == {"type": "ray", "done": 0, "running": 0, "queued": n_chunks}
    assert ray_ev[-1] == {"type": "ray", "done": n_chunks, "running": 0, "queued": 0}


def test_ray_sweep_equals_in_process_from_a_worker_thread(cluster, clean, tmp_path):
    ref_store, ref = clean
    store = RunStore(tmp_path / "ray")
    events = []
    recs = in_thread(lambda: run_sweep(expand_grid(**GRID), store, TrainOptions(), on_event=events.append,
                                       executor="ray"))
    assert not any(r["cached"] for r in recs)
    assert_same(recs, ref, ref_store, store)
    check_events(events, n_chunks=2, steps=GRID["steps"])
    # the instance started from the (finished) fixture thread is still usable
    assert ray.get(ray.put(7)) == 7


def test_dead_worker_is_retried_and_results_unchanged(cluster, clean, tmp_path, monkeypatch):
    ref_store, ref = clean
    marker = tmp_path / "fault-fired"
    monkeypatch.setenv("WDSCALE_RAY_FAULT_ONCE", str(marker))
    store = RunStore(tmp_path / "ray")
    events = []
    recs = run_sweep(expand_grid(**GRID), store, TrainOptions(), on_event=events.append, executor="ray")
    assert marker.exists()  # a worker did die mid-run ...
    dead_pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(dead_pid, 0)
    assert_same(recs, ref, ref_store, store)  # ... and its retry reproduced the clean results
    check_events(events, n_chunks=2, steps=GRID["steps"])


def test_cancel_stops_running_and_queued_tasks(cluster, store):
    configs = expand_grid(**{**GRID, "steps": 3000})
    cancel = threading.Event()

    def on_event(e):
        if e["type"] == "step":
            cancel.set()

    recs = run_sweep(configs, store, TrainOptions(), on_event=on_event, cancel=cancel, executor="ray")
    # stopped early: whatever came back is partial, and nothing is cached as done
    assert all(r["status"] == "partial" and 0 < r["steps_done"] < 3000 for r in recs)
    assert all(store.get(c.run_id) is None for c in configs)


def test_killed_driver_resumes_from_the_store(cluster, tmp_path):
    """A driver SIGKILLed after its first stored run loses nothing: the rerun trains only the missing runs."""
    out = tmp_path / "runs"
    args = ["--widths", "32,64", "--base-width", "32", "--rules", "mup", "--lrs", "1e-2,3e-2", "--wds", "0.1",
            "--steps", "100", "--spectra-every", "100"]
    # Hold all CPUs but one, so the driver's two tasks run one after the other: the kill then surely lands
    # while the second still trains.  The driver joins this cluster by address (the multi-machine path).
    class Hold:  # defined here so Ray ships it by value (the tests folder is not importable on workers)
        def ready(self):
            return True

    hold = ray.remote(num_cpus=ray.cluster_resources()["CPU"] - 1)(Hold).remote()
    ray.get(hold.ready.remote())
    proc = subprocess.Popen([sys.executable, "-m", "wdscale", "sweep", *args, "--out", str(out), "--json",
                             "--executor", "ray", "--address", ray.get_runtime_context().gcs_address],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()  # printed right after the run was stored
        assert first, "the driver died before storing a run"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        ray.kill(hold)
    stored = {r["run_id"] for r in RunStore(out).records(status="done")}
    assert json.loads(first)["run_id"] in stored
    assert 1 <= len(stored) < 4

    configs = expand_grid("synthetic", [32, 64], 32, ["mup"], [1e-2, 3e-2], [0.1], 100)
    events = []
    recs = run_sweep(configs, RunStore(out), TrainOptions(spectra_every=100), on_event=events.append,
                     executor="ray")
    plan = events[0]
    assert plan["type"] == "plan" and plan["cached"] == len(stored) and plan["to_train"] == 4 - len(stored)
    assert {r["run_id"] for r in recs if r["cached"]} == stored
    assert len(recs) == 4 and all(r["status"] == "done" for r in recs)
