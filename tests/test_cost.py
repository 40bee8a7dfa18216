"""wdscale.training.cost: one cost model (FLOPs, memory, ETA) for both models; the Train page's defaults and ETA."""
import json
import time

import pytest

from wdscale.training import cost
from wdscale.models.config import RunConfig
from wdscale.training.store import RunStore
from wdscale.training.sweep import expand_grid, run_sweep

FAKE = {"a_s": 1e-3, "b_s_per_flop": 1e-10, "c_s_per_svd_unit": 1e-9}


def cfg(model="synthetic", width=64, steps=100, **kw):
    return RunConfig(model=model, width=width, base_width=32, rule="mup", lr=1e-2, wd=0.1, steps=steps, **kw)


def test_flops_and_memory_are_the_models_own():
    from wdscale.models import transformer
    from wdscale.cli.bench import member_flops
    from wdscale.training.train import synthetic_memory_estimate

    s, t = cfg(), cfg("transformer", width=64)
    assert cost.member_step_flops(s) == member_flops(s)  # counted from the built model's weights
    assert cost.member_step_flops(t) == transformer.flops_per_step(t, 1)
    assert cost.step_flops(t, 3) == transformer.flops_per_step(t, 3)
    assert cost.memory_estimate(s, 5) == synthetic_memory_estimate(s, 5)
    assert cost.memory_estimate(t, 2) == transformer.memory_estimate(t, 2)


def test_matrix_shapes_match_the_built_models():
    import torch

    from wdscale.training.train import build

    for c in (cfg(width=48), cfg("transformer", width=64, depth=2)):
        model, _ = build(c, 1, torch.device("cpu"))
        built = sorted(tuple(p.shape[1:]) for p in model.matrices().values())
        assert sorted(cost.matrix_shapes(c)) == built, c.model


def test_snapshot_count_is_the_trainers_cadence():
    from wdscale.training.train import train_ensemble

    for steps in (60, 120):
        res = train_ensemble([cfg(width=32, steps=steps, batch_size=8)])
        assert cost.n_snapshots(steps) == len(res[0]["spectra"]["steps"])


def test_eta_adds_up_per_width_and_skips_stored_runs(tmp_path):
    configs = expand_grid("synthetic", [32, 64], 32, ["mup", "wd"], [1e-2, 2e-2], [3.0], 50, [0], batch_size=8)
    cals = {"synthetic": FAKE}
    eta = cost.study_eta(configs, None, cals=cals)
    # 8 runs; at d=32 mup and wd are twins (m = 1: the same member), so that ensemble trains 2 members, not 4
    assert eta["to_train"] == 8 and set(eta["per_width"]) == {32, 64}
    assert cost.members([c for c in configs if c.width == 32]) == 2
    want = cost.chunk_seconds(configs[0], 2, FAKE) + cost.chunk_seconds(configs[-1], 4, FAKE)
    assert eta["seconds"] == pytest.approx(want)
    assert eta["per_width"][64] > eta["per_width"][32]
    store = RunStore(tmp_path / "runs")
    run_sweep([c for c in configs if c.width == 32], store)
    eta2 = cost.study_eta(configs, store, cals=cals)
    assert eta2["cached"] == 4 and set(eta2["per_width"]) == {64}
    assert eta2["seconds"] == pytest.approx(cost.chunk_seconds(configs[-1], 4, FAKE))


def test_calibration_is_measured_once_and_cached_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("WDSCALE_CACHE", str(tmp_path))
    assert cost.cached_calibration("synthetic", threads=1) is None
    cal = cost.calibrate("synthetic", threads=1)
    assert cal["a_s"] >= 0 and cal["b_s_per_flop"] > 0 and cal["c_s_per_svd_unit"] > 0
    assert [p["width"] for p in cal["points"]] == [w for w, _, _ in cost.CALIBRATION["synthetic"]]
    files = list(tmp_path.glob("cost-synthetic-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["key"]["threads"] == 1
    # read back, not measured again (its time is bench's `calibration_cache_read_s`, not asserted here)
    monkeypatch.setattr(cost, "measure", lambda *a, **k: pytest.fail("measured again instead of read back"))
    assert cost.calibrate("synthetic", threads=1) == cal
    assert cost.cached_calibration("synthetic", threads=2) is None  # another thread count is another machine


def test_eta_covers_every_run_it_will_train(tmp_path, monkeypatch, one_thread):
    """Calibrate and predict a small synthetic study: every run to train is counted at its width, and a stored
    study costs nothing.  How close the seconds are to the wall time is a benchmark (``wdscale bench``:
    ``eta_error_factor``, target <= 2), not a test: a loaded machine would fail it at random."""
    monkeypatch.setenv("WDSCALE_CACHE", str(tmp_path))
    configs = expand_grid("synthetic", [32, 64, 128], 32, ["mup", "wd"], [0.005, 0.01, 0.02], [3.0], 20, [0])
    eta = cost.study_eta(configs, threads=1)
    assert eta["seconds"] > 0 and eta["to_train"] == len({c.run_id for c in configs})
    assert set(eta["per_width"]) == {32, 64, 128} and eta["per_width"][128] > eta["per_width"][32]
    store = RunStore(tmp_path / "runs")
    run_sweep(configs, store)
    assert cost.study_eta(configs, store, threads=1)["to_train"] == 0


# -- the Train page: defaults form a steady-state study; the ETA is shown before Train, for either model ---------
@pytest.fixture
def app_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    monkeypatch.setenv("WDSCALE_CACHE", str(tmp_path / "cache"))
    from wdscale.show.jobs import default_threads

    for model in ("synthetic", "transformer"):  # constants as if measured: the page must not wait for a timing
        cost.save_calibration({"key": cost.machine_key(model, "cpu", default_threads()), **FAKE, "points": []})
    return tmp_path


def train_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app.py", default_timeout=60)
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_train_page_defaults_are_a_steady_state_study():
    import math

    from wdscale.science.verdict import sweep_horizon_warnings

    src = open(cost.__file__.replace("wdscale/training/cost.py", "pages/train.py")).read()
    ns = {}
    exec(src[src.index("DEFAULTS = "):src.index("\n", src.index("DEFAULTS = "))], ns)
    d = ns["DEFAULTS"]
    k = [i - (d["n_lr"] - 1) / 2 for i in range(d["n_lr"])]
    lrs = [float(f"{d['eta0'] * math.sqrt(2) ** i:.4g}") for i in k]
    configs = expand_grid("synthetic", [int(w) for w in d["widths"].split(",")], d["base_width"], d["rules"], lrs,
                          [d["lam0"]], d["steps"], [0])
    assert sweep_horizon_warnings(configs) == []


def test_train_page_shows_the_clean_horizon_and_the_eta_for_either_model(app_env):
    at = train_page()
    assert not [w.value for w in at.warning if "tau" in w.value or "τ" in w.value]
    assert any("every run reaches ≥ 3 τ" in s.value for s in at.success)
    eta = [i.value for i in at.info if "ETA" in i.value]
    assert eta and "for 30 runs on this machine" in eta[0], eta  # 3 widths x 2 rules x 5 lrs
    at.radio(key="t_model").set_value("transformer").run()
    assert not at.exception
    eta_t = [i.value for i in at.info if "ETA" in i.value]
    assert eta_t and eta_t[0] != eta[0]  # the Transformer costs more per step
    at.text_input(key="t_widths").set_value("32,64,128,256").run()
    eta_big = [i.value for i in at.info if "ETA" in i.value]
    assert not at.error, [e.value for e in at.error]
    assert eta_big and "d=256" in eta_big[0]


def test_train_page_measures_the_machine_when_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    monkeypatch.setenv("WDSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WDSCALE_TORCH_THREADS", "1")
    at = train_page()
    texts = [i.value for i in at.info]
    assert any("ETA" in t for t in texts), texts  # measuring, or already measured
    t0 = time.time()
    while cost.cached_calibration("synthetic", threads=1) is None and time.time() - t0 < 120:
        time.sleep(0.5)
    at.run()
    assert any("ETA ≈" in i.value for i in at.info), [i.value for i in at.info]
