"""The Train page's preset studies (wdscale.models.presets through wdscale.science.study.run_study): the preset choice shows its
settings and an ETA before Train, trains as one background job that cancels and resumes, and ends in the
study's summary; preset_configs / preset_state / cost.phases_eta plan what run_study trains."""
import re
import time

import pytest

from wdscale.training import cost

from wdscale.science import study as demo

from wdscale.models import presets
from wdscale.training.store import RunStore

FAKE_CAL = {"a_s": 1e-3, "b_s_per_flop": 1e-11, "c_s_per_svd_unit": 1e-10}


def tiny_spec(**kw) -> dict:
    """The lm preset's shape on a grid small enough for a test (3 x 2 proxy grid, 3 lrs, 3 widths)."""
    spec = dict(presets.get("lm"))
    spec.update(proxy_lrs=presets.LADDER[6:9], proxy_wds=(0.1, 0.3), lr_octaves=(-0.5, 0.0, 0.5),
                common=dict(spec["common"], batch_size=2, seq_len=16))
    spec.update(kw)
    return spec


def test_preset_configs_are_what_run_study_trains(store, one_thread):
    spec = tiny_spec(model="synthetic", common={}, proxy_wds=(1.0, 3.0))
    eta0, lam0 = demo.assumed_optimum(spec)
    assert (eta0, lam0) == (presets.LADDER[7], 1.0)  # the grid's middle (lower middle of an even count)
    phases = demo.preset_phases(spec, eta0, lam0, b=0.75, steps=5)
    assert [len(p) for p in phases] == [6, 2 * 3 * 3, 3 * 3 + 3 * 3]  # proxy; 2 widths; fitted + the widest
    assert {c.rule for c in phases[2]} == {"fitted", "mup", "wd", "indep"}
    assert all(c.b == 0.75 for c in phases[2] if c.rule == "fitted")
    assert demo.preset_phases(spec, eta0, lam0, b=None, steps=5)[2] == [c for c in phases[2] if c.rule != "fitted"]
    assert len(demo.preset_configs(spec, eta0, lam0, steps=5)) == sum(map(len, phases))

    before = demo.preset_state(spec, store, steps=5)
    assert not before["optimum_known"] and before["stored"] == 0 and not before["complete"]
    out = demo.run_study(store, spec=spec, steps=5)
    state = demo.preset_state(spec, store, steps=5)
    assert state["complete"] and state["optimum_known"] and state["b_known"]
    assert (state["eta0"], state["lam0"]) == (out["proxy"]["eta0"], out["proxy"]["lam0"])
    assert state["b"] == (out["fitted"] or {}).get("b")
    planned = {c.run_id for ph in state["phases"] for c in ph}
    assert planned == {r["run_id"] for r in store.records()}  # the plan is exactly what was trained


def test_phases_eta_counts_a_run_once_and_twins_within_a_phase(store):
    spec = presets.get("lm")
    phases = demo.preset_phases(spec, *demo.assumed_optimum(spec), steps=100)
    cals = {"transformer": FAKE_CAL}
    e = cost.phases_eta(phases, store, cals=cals)
    from wdscale.training.sweep import twin_configs

    earlier, per = set(), []
    for p in phases:  # a run, or its twin at d0 (every mu-P rule is one member there), an earlier phase trains is read
        per.append(cost.study_eta([c for c in p if c.run_id not in earlier
                                   and not any(t.run_id in earlier for t in twin_configs(c))], None, cals=cals))
        earlier |= {c.run_id for c in p}
    assert e["seconds"] == pytest.approx(sum(p["seconds"] for p in per))  # no run is in two phases' plans
    assert e["seconds"] < sum(cost.study_eta(p, None, cals=cals)["seconds"] for p in phases)
    again = cost.phases_eta([phases[0], phases[0][:5]], store, cals=cals)  # a run an earlier phase trains
    assert again["phases"][1] == 0 and again["to_train"] == len(phases[0])
    assert e["seconds"] > cost.study_eta([c for p in phases for c in p], None, cals=cals)["seconds"]  # twins split
    assert e["phases"][0] == pytest.approx(per[0]["seconds"])
    assert sum(e["per_width"].values()) == pytest.approx(e["seconds"])
    assert set(e["member_steps"]) == set(spec["widths"])


def test_data_slice_says_bytes_and_epochs():
    lm, ep = presets.data_slice(presets.get("lm")), presets.data_slice(presets.get("lm-epochs"))
    assert lm["bytes_read"] == ep["bytes_read"] == 2000 * 8 * 65
    assert not lm["sliced"] and lm["epochs"] < 1
    assert ep["sliced"] and ep["train_bytes"] == presets.LM_TRAIN_BYTES and ep["epochs"] == pytest.approx(10.4)
    assert presets.data_slice(presets.get("synthetic")) is None


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    monkeypatch.setenv("WDSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WDSCALE_TORCH_THREADS", "1")
    for model in ("synthetic", "transformer"):  # the ETA reads these instead of timing steps
        cost.save_calibration({"key": cost.machine_key(model, "cpu", 1), **FAKE_CAL})
    yield tmp_path / "runs"
    torch.set_num_threads(1)  # the job thread set it; keep the test process as conftest left it


def open_train(choice: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app.py", default_timeout=60)
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    at.radio(key="t_preset").set_value(choice).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def text(at) -> str:
    return "\n".join(x.value for kind in ("info", "markdown", "success", "warning", "caption", "code")
                     for x in at.get(kind) if isinstance(getattr(x, "value", None), str))


@pytest.mark.parametrize("choice,name", [("LM regime (lm)", "lm"), ("Multi-epoch control (lm-epochs)", "lm-epochs")])
def test_preset_choice_shows_settings_and_an_eta(app_env, choice, name):
    at = open_train(choice)
    settings = {r["setting"]: r["value"] for r in at.dataframe[0].value.to_dict("records")}
    assert {"model", "widths", "sequence, batch", "schedule", "steps", "proxy grid", "transfer", "data"} <= set(settings)
    assert "transformer, depth 2" in settings["model"] and "cosine" in settings["schedule"]
    assert ("10.40 epochs" if name == "lm-epochs" else "0.14 epochs") in settings["data"]
    t = text(at)
    assert "ETA ≈" in t and "before the proxy optimum is known" in t
    assert at.button(key="t_preset_go").label == "Train"
    assert not [w for w in at.text_input if w.key == "t_widths"]  # the own-grid form is not drawn


def wait_status(at, statuses, timeout=240.0):
    """Rerun the page until its progress line matches one of the regexes in ``statuses``."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if any(re.search(s, p.proto.text or "") for p in at.get("progress") for s in statuses):
            return
        time.sleep(0.3)
    raise AssertionError(f"no {statuses} within {timeout} s: {text(at)}")


def test_preset_trains_cancels_resumes_and_summarizes(app_env, monkeypatch, one_thread):
    monkeypatch.setenv("WDSCALE_DEMO_STEPS", "30")
    small = tiny_spec()
    for k in ("proxy_lrs", "proxy_wds", "lr_octaves", "common"):
        monkeypatch.setitem(presets.PRESETS["lm"], k, small[k])
    at = open_train("LM regime (lm)")
    at.button(key="t_preset_go").click().run()
    wait_status(at, [r"training width .* step [1-9]\d*/"])  # past step 0: a checkpoint to resume from
    assert at.get("plotly_chart")  # the running ensemble's live loss curves
    at.button(key="cancel_preset_job_lm").click().run()
    wait_status(at, ["^cancelled"])
    # the job reports "cancelled" as the trainer stops; the partial runs reach the store a moment later
    for _ in range(40):
        if "Resume" in at.button(key="t_preset_go").label:
            break
        time.sleep(0.25)
        at.run()
    assert "Resume" in at.button(key="t_preset_go").label  # a partial ensemble (checkpoint) or stored runs
    store = RunStore(app_env)
    assert not demo.preset_state(presets.get("lm"), store)["complete"]

    at.button(key="t_preset_go").click().run()
    wait_status(at, ["^done:"])
    state = demo.preset_state(presets.get("lm"), store)
    assert state["complete"] and state["optimum_known"]
    t = text(at)
    assert "proxy d0=32" in t and "fitted rule" in t  # demo.format_summary
    links = {p.proto.label for p in at.get("page_link")}
    assert any("Regimes" in x for x in links) and any("Transfer" in x for x in links), links
    assert at.button(key="t_preset_go").label.startswith("Show the summary")
