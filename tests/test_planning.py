"""wdscale.show.planning, called directly (no Streamlit): what the Train page plans, counts and says before Train.

The page (pages/train.py) only draws these; tests/test_app.py and tests/test_app_own.py check the drawing."""
import math
import re
import shutil
from pathlib import Path

import pytest

from wdscale.show import planning as pl
from wdscale.show.jobs import MAX_RUNS
from wdscale.training.sweep import expand_grid, run_sweep

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FORM = dict(model="synthetic", widths="32,64,128", base_width=32, rules=["mup", "wd"], steps=1000, eta0=0.01,
                    n_lr=5, spacing="×√2", lam0=3.0)  # the Train page's defaults (pages/train.py DEFAULTS)


@pytest.fixture
def nanogpt(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(ROOT / "examples" / "nanogpt.py", folder / "nanogpt.py")
    return folder / "nanogpt.py"


def small_spec(path, steps=3):
    """The page's tiny model-file study: widths 32,64, a 2 x 1 proxy grid."""
    return pl.own_study_spec(path, "32,64", steps, "0.01,0.02", "0.1")


# -- small pieces --------------------------------------------------------------------------------------------------
def test_grid_is_centred_and_spaced_by_the_factor():
    g = pl.grid(0.01, 5, math.sqrt(2))
    assert g[2] == 0.01 and g == sorted(g) and len(g) == 5
    assert all(b / a == pytest.approx(math.sqrt(2), rel=1e-3) for a, b in zip(g, g[1:]))
    assert pl.grid(3.0, 1, 10.0) == [3.0]
    assert pl.grid(0.01, 4, 2.0) == [0.003536, 0.007071, 0.01414, 0.02828]  # even n: no point at the centre


def test_button_label_says_what_pressing_it_does():
    state = {"complete": False, "stored": 0, "partial": 0, "n_runs": 48}
    assert pl.study_button_label(state) == "Train"
    assert pl.study_button_label({**state, "stored": 5}) == "Resume (5 of 48 runs stored)"
    assert pl.study_button_label({**state, "partial": 1}) == "Resume (0 of 48 runs stored)"
    assert pl.study_button_label({**state, "stored": 48, "complete": True}).startswith("Show the summary")


def test_store_line_names_what_is_stored_and_cancelled():
    state = {"stored": 3, "n_runs": 10, "partial": 0}
    assert pl.store_line(state) == "3 of 10 runs are in the store."
    assert pl.store_line({**state, "partial": 2}) == "3 of 10 runs are in the store; 2 cancelled mid-ensemble."
    line = pl.store_line({**state, "partial": 2}, phases=True)
    assert "(resumed from a checkpoint)" in line and line.endswith("the rest.")


def test_study_result_only_for_a_finished_study():
    assert pl.study_result(None) is None and pl.study_result({"result": None}) is None
    assert pl.study_result({"result": {"partial": True, "sentence": "x"}}) is None


def test_session_records_are_the_job_s_own_else_the_asked_for_stored_runs(store):
    configs = expand_grid("synthetic", [32], 32, ["mup"], [0.01], [1.0], 3, [0], batch_size=8)
    rec = run_sweep(configs, store)[0]
    assert pl.session_records({"records": [{"run_id": "mine"}]}, [rec["run_id"]], store) == [{"run_id": "mine"}]
    assert [r["run_id"] for r in pl.session_records(None, [rec["run_id"], "0" * 16], store)] == [rec["run_id"]]
    assert pl.session_records(None, None, store) == []


# -- your own grid -------------------------------------------------------------------------------------------------
def test_the_default_form_is_thirty_steady_state_runs_all_to_train(store):
    s = pl.custom_study(**DEFAULT_FORM)
    assert len(s["configs"]) == 30  # 3 widths x 2 rules x 5 lrs
    assert s["widths"] == [32, 64, 128] and s["lrs"][2] == 0.01 and s["wds"] == [3.0] and s["seeds"] == [0]
    assert pl.study_line(s).startswith("**30 runs**: widths [32, 64, 128], η₀ ∈ {0.005, 0.007071, 0.01,")
    assert pl.decay_warning(s["configs"]) is None
    kind, text, _ = pl.horizon_check(s["configs"])
    assert kind == "success" and "every run reaches ≥ 3 τ" in text
    todo = pl.store_plan(s["configs"], store)
    assert todo["n_todo"] == 30 and todo["label"] == "Train"
    assert todo["line"].startswith("0 of 30 runs are already in the store; 30 to train")


def test_explicit_lists_win_over_the_grids_and_lambda_zero_is_one_run():
    s = pl.custom_study(**{**DEFAULT_FORM, "lrs": "0.01, 0.02", "seeds": "0,1"})
    assert s["lrs"] == [0.01, 0.02] and s["seeds"] == [0, 1] and len(s["configs"]) == 3 * 2 * 2 * 2
    s = pl.custom_study(**{**DEFAULT_FORM, "lam0": 0.0, "n_wd": 3})
    assert s["wds"] == [0.0]
    s = pl.custom_study(**{**DEFAULT_FORM, "wds": "1,3"})
    assert s["wds"] == [1.0, 3.0]


@pytest.mark.parametrize("change,needle", [
    ({"widths": ""}, "width list is empty"),
    ({"widths": "64,abc"}, "not an integer"),
    ({"lrs": "50"}, "out of range"),
    ({"model": "transformer", "corpus": None}, "upload a corpus file"),
])
def test_a_bad_form_is_one_clear_error(change, needle):
    with pytest.raises(ValueError, match=re.escape(needle)) as e:
        pl.custom_study(**{**DEFAULT_FORM, **change})
    assert "\n" not in str(e.value)


def test_few_steps_warn_once_per_width_in_the_resolved_table():
    rows, warnings = pl.resolved_rows("mup", [32, 64], 32, 0.01, 3.0, None, None, 10)
    assert {r["width"] for r in rows} == {32, 64} and {"class", "lr η", "steps/τ", "m", "readout ×"} <= set(rows[0])
    assert len(warnings) == 2 and warnings[0].startswith("mup, d=32: ")
    kind, text, _ = pl.horizon_check(pl.custom_study(**{**DEFAULT_FORM, "steps": 10})["configs"])
    assert kind == "warning" and text.startswith("Horizon check: ")


def test_no_decay_is_an_infinite_tau_shown_empty():
    from wdscale.core.rules import resolve

    rows = pl.fmt_table(resolve("mup", 64, 32, 0.01, 0.0), 100)
    assert rows and all(r["τ = 1/(ηλ) steps"] is None for r in rows)


def test_a_stored_study_is_shown_not_retrained(store):
    s = pl.custom_study(**{**DEFAULT_FORM, "widths": "32", "steps": 3, "lrs": "0.01"})
    run_sweep(s["configs"], store)
    todo = pl.store_plan(s["configs"], store)
    assert todo["n_todo"] == 0 and todo["label"] == "Show (all runs are in the store)"


def test_an_uploaded_corpus_is_stored_once_by_content(tmp_path):
    raw = ("a line of text in the corpus\n" * 50).encode()
    p1 = pl.save_corpus(raw, tmp_path / "corpora")
    assert Path(p1).read_bytes() == raw and pl.save_corpus(raw, tmp_path / "corpora") == p1
    for bad in (b"\xff\xfe" * 600, b"short", ("x" * 999 + "\x00").encode()):
        with pytest.raises(ValueError, match="corpus is not usable text"):
            pl.save_corpus(bad, tmp_path / "corpora")


# -- preset studies ------------------------------------------------------------------------------------------------
def test_preset_plan_and_settings_name_the_regime(store):
    p = pl.preset_plan("lm", store)
    assert p["spec"]["name"] == "lm" and p["steps"] > 0
    assert p["state"]["stored"] == 0 and not p["state"]["complete"] and p["state"]["phases"]
    rows = {r["setting"]: r["value"] for r in pl.preset_settings(p["spec"], p["steps"])}
    assert rows["model"].startswith("transformer") and "data" not in rows
    ds = {"sliced": True, "train_bytes": 100_000, "bytes_per_step": 512, "bytes_read": 1_024_000, "epochs": 10.24}
    rows = {r["setting"]: r["value"] for r in pl.preset_settings(p["spec"], p["steps"], ds)}
    assert rows["data"] == ("512 bytes per step, 1,024,000 bytes per run from the first 100,000 bytes of the "
                            "training split: 10.24 epochs")
    note = pl.preset_note(p["spec"], p["state"])
    assert note.startswith(" An estimate before the proxy optimum is known") and "fitted b = 0.75" in note
    known = {**p["state"], "optimum_known": True, "b_known": True, "b": 0.5}
    assert pl.preset_note(p["spec"], known).endswith("fitted b = +0.50.")
    with pytest.raises(ValueError, match="unknown preset"):
        pl.preset_plan("nope", store)


# -- your model file -----------------------------------------------------------------------------------------------
def test_models_folder_is_off_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(pl.MODELS_ENV, raising=False)
    assert pl.models_folder() is None
    monkeypatch.setenv(pl.MODELS_ENV, str(tmp_path))
    assert pl.models_folder() == str(tmp_path)
    assert f"{pl.MODELS_ENV}=examples streamlit run app.py" in pl.models_off_text()


def test_the_plan_of_a_small_model_file_lists_its_phases_and_ensembles(nanogpt, store):
    spec = small_spec(nanogpt)
    assert spec["model"] == "nanogpt" and spec["widths"] == (32, 64) and spec["base_width"] == 32
    assert spec["steps"] == 3 and spec["proxy_lrs"] == (0.01, 0.02) and spec["proxy_wds"] == (0.1,)
    state = pl.own_study_state(spec, store)
    proxy, transfer, fitted = state["phases"]
    assert {(c.width, c.rule, c.lr, c.wd) for c in proxy} == {(32, "mup", 0.01, 0.1), (32, "mup", 0.02, 0.1)}
    assert {c.rule for c in transfer} == {"mup", "wd", "indep"} and {c.width for c in transfer} == {32, 64}
    assert {c.rule for c in fitted} == {"fitted"}
    assert state["n_runs"] == len({c.run_id for ph in state["phases"] for c in ph}) and state["stored"] == 0
    ens = pl.own_plan(state["phases"], store)
    ids = [c.run_id for ch in ens for c in ch]
    assert len(ids) == len(set(ids))  # no run counted twice across phases
    assert set(ids) <= {c.run_id for ph in state["phases"] for c in ph} and len(ids) <= state["n_runs"]
    assert sorted(c.run_id for c in ens[0]) == sorted(c.run_id for c in proxy)  # the proxy grid trains first
    assert {c.width for ch in ens for c in ch} == {32, 64} and {c.rule for ch in ens for c in ch} >= {"mup", "fitted"}
    assert all(len({c.width for c in ch}) == 1 for ch in ens)  # an ensemble is one width
    settings = {r["setting"]: r["value"] for r in pl.own_settings(nanogpt, "ab" * 32, spec, "mup", "")}
    assert "nanogpt.py (sha256 abababababab…" in settings["model file"] and settings["widths"].startswith("32, 64")
    assert settings["init, overrides"] == "mup; none"


def test_the_classes_table_shows_the_user_s_own_names(nanogpt, store):
    spec = small_spec(nanogpt)
    state = pl.own_study_state(spec, store)
    cfg = pl.class_config(spec, 64, "mup", state["eta0"], state["lam0"])
    assert cfg.width == 64 and cfg.rule == "mup" and cfg.lr == state["eta0"] and cfg.steps == 3
    rows = {r["parameter"]: r for r in pl.class_table(pl.class_rows(str(nanogpt), cfg), spec["steps"])}
    attn = rows["blocks.0.c_attn.weight"]
    assert attn["class"] == "matrix" and attn["shape"] == "192×64"
    assert attn["τ = 1/(ηλ) steps"] == pytest.approx(1 / (attn["lr η"] * attn["wd λ (torch)"]))
    assert attn["steps/τ"] == pytest.approx(3 / attn["τ = 1/(ηλ) steps"])
    assert rows["wte.weight"]["class"] == "embedding" and "lm_head.weight" in rows["wte.weight"]["tied to"]
    assert rows["lm_head (output)"]["forward ×"] == pytest.approx(32 / 64)
    over = pl.class_rows(str(nanogpt), cfg, pl.override_text("blocks.0.c_attn.weight=vector"))
    assert {r["name"]: r["class"] for r in over}["blocks.0.c_attn.weight"] == "vector"
    assert pl.override_text("   ") == "" and "proxy grid’s middle" in pl.classes_caption(state)


def fake_measure(loop=0.01, batched=0.004):
    return lambda members: {"loop": loop * members[0].width / 32, "batched": batched, "batched_error": None}


def test_the_eta_is_positive_and_grows_with_the_steps(nanogpt, store):
    etas = {}
    for steps in (3, 6):
        state = pl.own_study_state(small_spec(nanogpt, steps), store)
        etas[steps] = pl.own_eta(pl.own_plan(state["phases"], store), "loop", fake_measure())
    assert etas[3]["seconds"] > 0 and etas[6]["seconds"] == pytest.approx(2 * etas[3]["seconds"])
    assert 0 < etas[3]["to_train"] <= state["n_runs"] and set(etas[3]["per_width"]) == {32, 64}
    assert etas[3]["per_width"][64] > etas[3]["per_width"][32]  # the wider member-steps cost more here
    assert etas[3]["seconds"] == pytest.approx(sum(etas[3]["per_width"].values()))
    text = pl.own_eta_text(etas[3], False)
    assert text.startswith("**ETA ≈") and "ms per member-step, loop" in text and "until its optimum is known" in text


def test_the_eta_takes_the_path_the_trainer_would(nanogpt, store):
    from wdscale.models.own import BATCHED_MIN_SPEEDUP

    ens = pl.own_plan(pl.own_study_state(small_spec(nanogpt), store)["phases"], store)
    assert set(pl.own_eta(ens, "auto", fake_measure())["paths"].values()) == {"batched"}  # >= 2.5x faster
    slow = lambda members: {"loop": 0.01, "batched": 0.01 / BATCHED_MIN_SPEEDUP * 1.01,  # noqa: E731
                            "batched_error": None}  # batched faster, but not enough to adopt it
    assert pl.own_eta(ens, "auto", slow)["paths"] == {32: "loop", 64: "loop"}
    assert set(pl.own_eta(ens, "batched", slow)["paths"].values()) == {"batched"}
    none = lambda members: {"loop": 0.01, "batched": None, "batched_error": "vmap failed"}  # noqa: E731
    assert set(pl.own_eta(ens, "batched", none)["paths"].values()) == {"loop"}
    asked = []
    pl.own_eta(ens, "loop", lambda m: asked.append(m) or {"loop": 0.01, "batched": None, "batched_error": None})
    assert [len(m) for m in asked] == [min(pl.ETA_MEMBERS, len(ens[0])), pl.ETA_MEMBERS]  # once per width
    assert [m[0].width for m in asked] == [32, 64]


def test_member_step_times_are_measured_here(nanogpt, store):
    import torch

    ens = pl.own_plan(pl.own_study_state(small_spec(nanogpt), store)["phases"], store)
    n = torch.get_num_threads()
    t = pl.member_step_times(str(nanogpt), tuple(ens[0][:2]), "cpu", 1)
    assert torch.get_num_threads() == n  # the threads are put back
    assert t["loop"] > 0 and (t["batched"] is None) == (t["batched_error"] is not None)


@pytest.mark.parametrize("widths,steps,lrs,wds,needle", [
    ("64", 3, "0.01", "0.1", "at least two widths"),
    ("32,abc", 3, "0.01", "0.1", "not an integer"),
    ("32,99999", 3, "0.01", "0.1", "widths must be positive integers up to"),
    ("32,64", 0, "0.01", "0.1", "steps must be a positive integer"),
    ("32,64", 3, "50", "0.1", "out of range"),
    ("32,64", 3, "0.01", "0", "out of range"),
    ("32,64", 3, "", "0.1", "at least one lr"),
])
def test_a_bad_form_is_refused_before_the_file_is_imported(tmp_path, widths, steps, lrs, wds, needle):
    boom = tmp_path / "boom.py"
    boom.write_text(f"from pathlib import Path\nPath({str(tmp_path / 'imported')!r}).write_text('x')\n")
    with pytest.raises(ValueError, match=re.escape(needle)) as e:
        pl.own_study_spec(boom, widths, steps, lrs, wds)
    assert "\n" not in str(e.value) and not (tmp_path / "imported").exists()


@pytest.mark.parametrize("source,needle", [
    ("def build(width):\n    return (\n", "syntax error"),
    ("def batches(seed):\n    return iter([])\n\ndef val_batches():\n    return []\n", "defines no build(width)"),
    ("raise RuntimeError('no')\n", "importing it raised RuntimeError: no"),
])
def test_a_bad_file_is_one_clear_error(tmp_path, source, needle):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    with pytest.raises(ValueError, match=re.escape(needle)) as e:
        small_spec(bad)
    assert "\n" not in str(e.value)


def test_a_bad_override_and_a_too_big_study_are_one_clear_error(nanogpt, store):
    with pytest.raises(ValueError, match="unknown class 'bogus'"):
        pl.own_study_spec(nanogpt, "32,64", 3, "0.01", "0.1", overrides="lm_head.weight=bogus")
    lrs = ",".join(f"{0.001 * 1.1 ** k:.5g}" for k in range(25))
    wds = ",".join(f"{0.01 * 1.2 ** k:.5g}" for k in range(20))
    spec = pl.own_study_spec(nanogpt, "32,64", 3, lrs, wds)
    with pytest.raises(ValueError, match=f"study too big: .* runs \\(limit {MAX_RUNS}\\)"):
        pl.own_study_state(spec, store)
