import threading

import numpy as np
import pytest
import torch

from wdscale.training.sweep import expand_grid, run_sweep


def grid(**kw):
    base = dict(model="synthetic", widths=[32, 64], base_width=32, rules=["mup", "wd"], lrs=[1e-2], wds=[0.5],
                steps=12)
    return expand_grid(**(base | kw))


def test_same_config_is_not_retrained(store):
    plans = []
    first = run_sweep(grid(), store, on_event=lambda e: e["type"] == "plan" and plans.append(e))
    second = run_sweep(grid(), store, on_event=lambda e: e["type"] == "plan" and plans.append(e))
    assert plans[0]["to_train"] == 4 and plans[1] == {"type": "plan", "cached": 4, "to_train": 0, "chunks": 0}
    assert not any(r["cached"] for r in first) and all(r["cached"] for r in second)
    assert [r["final_loss"] for r in first] == [r["final_loss"] for r in second]


def test_interrupted_sweep_resumes_where_it_stopped(store):
    stop = threading.Event()

    def on_event(e):  # "crash" right after the first width's ensemble finished
        if e["type"] == "done":
            stop.set()

    partial = run_sweep(grid(), store, on_event=on_event, cancel=stop)
    assert len(partial) == 2 and {r["width"] for r in partial} == {32}
    plans = []
    full = run_sweep(grid(), store, on_event=lambda e: e["type"] == "plan" and plans.append(e))
    assert plans[0]["cached"] == 2 and plans[0]["to_train"] == 2
    assert len(full) == 4 and len(store.records()) == 4


def test_cancelled_runs_are_kept_as_partial_not_cached(store):
    stop = threading.Event()
    stop_at = lambda e: e["type"] == "step" and e["step"] >= 4 and stop.set()  # noqa: E731
    run_sweep(grid(widths=[32]), store, on_event=stop_at, cancel=stop)
    recs = store.records()
    assert recs and all(r["status"] == "partial" for r in recs)
    assert store.get(recs[0]["run_id"]) is None  # not served as a finished run
    done = run_sweep(grid(widths=[32]), store)
    assert all(r["status"] == "done" and not r["cached"] for r in done)


def test_files_hold_weights_and_spectra(store):
    rec = run_sweep(grid(widths=[64], rules=["wd"]), store)[0]
    w = store.weights(rec["run_id"])
    assert set(w) == set(rec["param_class"])
    for n, t in w.items():
        if t.ndim == 2:
            assert rec["top_sv"][n] == pytest.approx(float(torch.linalg.svdvals(t)[0]), rel=1e-6)
    spec = store.spectra(rec["run_id"])
    assert spec["steps"][0] == 0 and spec["steps"][-1] == 12
    assert spec["w1_0"].shape == (len(spec["steps"]), 64)
    np.testing.assert_allclose(spec["w1_0"][-1, 0], rec["top_sv"]["w1_0"], rtol=1e-5)
    store.delete(rec["run_id"])
    assert store.records() == []
