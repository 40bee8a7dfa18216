"""The Train page's model-file choice (wdscale.models.own): files only from the server's $WDSCALE_MODELS folder, listed
without importing; Load imports the chosen one and shows its classes table and a measured ETA; a bad file is one
st.error line; without the folder the choice says how to enable it."""
import shutil
from pathlib import Path

import pytest

from wdscale.models import own

ROOT = Path(__file__).resolve().parents[1]
CHOICE = "Your model file"
BOOM = '''from pathlib import Path
Path(__file__).with_suffix(".imported").write_text("imported")
raise RuntimeError("this file must not be imported by a listing")
'''


@pytest.fixture
def models(tmp_path, monkeypatch):
    import torch

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(ROOT / "examples" / "nanogpt.py", folder / "nanogpt.py")
    (folder / "notes.txt").write_text("not a model file")
    (folder / "_helper.py").write_text(BOOM)  # private: never offered
    monkeypatch.setenv("WDSCALE_MODELS", str(folder))
    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    monkeypatch.setenv("WDSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WDSCALE_TORCH_THREADS", "1")
    n = torch.get_num_threads()
    yield folder
    torch.set_num_threads(n)


def open_choice():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app.py", default_timeout=120)
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    at.radio(key="t_preset").set_value(CHOICE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def small(at):
    """A tiny study: widths 32,64, 3 steps, a 2 x 1 proxy grid."""
    at.text_input(key="t_mf_widths").set_value("32,64")
    at.number_input(key="t_mf_steps").set_value(3)
    at.text_input(key="t_mf_lrs").set_value("0.01,0.02")
    at.text_input(key="t_mf_wds").set_value("0.1").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at, kinds=("info", "markdown", "caption", "success", "warning")) -> str:
    return "\n".join(x.value for k in kinds for x in at.get(k) if isinstance(getattr(x, "value", None), str))


def test_without_the_folder_the_choice_says_how_to_enable_it(monkeypatch, tmp_path):
    monkeypatch.delenv("WDSCALE_MODELS", raising=False)
    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    at = open_choice()
    assert any("WDSCALE_MODELS=examples streamlit run app.py" in i.value for i in at.info), texts(at)
    assert not at.selectbox and not at.error


def test_the_folder_s_file_is_offered_and_load_shows_its_classes_and_a_measured_eta(models):
    at = open_choice()
    assert at.selectbox(key="t_mf").options == ["nanogpt.py"]  # *.py only, no _private files, nothing else
    assert not at.dataframe and not at.error  # listed, not imported: no classes before Load
    assert at.button(key="t_mf_load").label == "Load nanogpt.py"
    small(at)
    at.button(key="t_mf_load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    settings = {r["setting"]: r["value"] for r in at.dataframe[0].value.to_dict("records")}
    assert "nanogpt" in settings["model file"] and settings["widths"].startswith("32, 64")
    rows = {r["parameter"]: r for r in at.dataframe[1].value.to_dict("records")}
    attn = rows["blocks.0.c_attn.weight"]
    assert attn["class"] == "matrix" and attn["shape"] == "192×64"  # at the widest width, the user's own names
    assert attn["τ = 1/(ηλ) steps"] == pytest.approx(1 / (attn["lr η"] * attn["wd λ (torch)"]))
    assert rows["wte.weight"]["class"] == "embedding" and "lm_head.weight" in rows["wte.weight"]["tied to"]
    assert rows["lm_head (output)"]["forward ×"] == pytest.approx(32 / 64)  # mu-P's 1/m on the logits
    t = texts(at)
    assert "ETA ≈" in t and "measured here" in t and "ms per member-step" in t
    assert at.button(key="t_mf_go").label == "Train"
    # the classes follow the width and rule chosen
    at.selectbox(key="t_mf_cw").set_value(32).run()
    rows = {r["parameter"]: r for r in at.dataframe[1].value.to_dict("records")}
    assert rows["blocks.0.c_attn.weight"]["shape"] == "96×32"
    assert not at.error and not at.exception


def test_a_listing_never_imports(models):
    (models / "boom.py").write_text(BOOM)
    (models / "broken.py").write_text("def build(width):\n    return (\n")
    assert [p.name for p in own.model_file_paths(models)] == ["boom.py", "broken.py", "nanogpt.py"]
    at = open_choice()
    assert at.selectbox(key="t_mf").options == ["boom.py", "broken.py", "nanogpt.py"]
    at.selectbox(key="t_mf").set_value("boom.py").run()
    at.selectbox(key="t_mf").set_value("nanogpt.py").run()
    assert not at.error and not at.exception
    assert not (models / "boom.imported").exists() and not (models / "_helper.imported").exists()

    # asked for: Load imports it, and what it raises is one st.error line
    at.selectbox(key="t_mf").set_value("boom.py").run()
    at.button(key="t_mf_load").click().run()
    assert not at.exception
    assert (models / "boom.imported").exists()
    [err] = at.error
    assert "importing it raised RuntimeError: this file must not be imported" in err.value and "\n" not in err.value
    assert not at.dataframe  # nothing shown for a file that does not load

    at.selectbox(key="t_mf").set_value("broken.py").run()
    at.button(key="t_mf_load").click().run()
    [err] = at.error
    assert "broken.py:" in err.value and "syntax error" in err.value


def test_a_file_without_build_and_bad_fields_are_one_line_errors(models):
    (models / "nobuild.py").write_text("def batches(seed):\n    return iter([])\n\ndef val_batches():\n    return []\n")
    at = open_choice()
    at.selectbox(key="t_mf").set_value("nobuild.py").run()
    at.button(key="t_mf_load").click().run()
    assert any("defines no build(width)" in e.value for e in at.error), [e.value for e in at.error]
    at.selectbox(key="t_mf").set_value("nanogpt.py").run()
    at.button(key="t_mf_load").click().run()
    for key, value, needle in [("t_mf_widths", "64", "at least two widths"), ("t_mf_lrs", "50", "out of range"),
                               ("t_mf_wds", "0", "out of range"), ("t_mf_widths", "32,abc", "not an integer")]:
        at.text_input(key=key).set_value(value).run()
        assert not at.exception
        assert any(needle in e.value for e in at.error), (key, [e.value for e in at.error])
        at.text_input(key=key).set_value({"t_mf_widths": "32,64", "t_mf_lrs": "0.01", "t_mf_wds": "0.1"}[key]).run()
    at.text_input(key="t_mf_ov").set_value("lm_head.weight=bogus").run()
    assert any("unknown class 'bogus'" in e.value for e in at.error), [e.value for e in at.error]


def test_a_tiny_model_file_study_trains_live_and_its_spectra_show(models):
    import re
    import time

    at = small(open_choice())
    at.button(key="t_mf_load").click().run()
    at.button(key="t_mf_go").click().run()
    t0, seen_live = time.time(), False
    while time.time() - t0 < 240:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        lines = [p.proto.text or "" for p in at.get("progress")]
        seen_live |= any(re.match(r"(queued|training width)", s) for s in lines)
        if any(s.startswith("done:") for s in lines):
            break
        assert not any(s.startswith("error") for s in lines), lines
        time.sleep(0.3)
    else:
        raise AssertionError(f"no 'done' within 240 s: {texts(at)}")
    assert seen_live
    t = texts(at, ("success", "warning", "code", "markdown"))
    assert "proxy d0=32" in t  # demo.format_summary of run_study's result
    assert any("Spectra" in p.proto.label for p in at.get("page_link"))
    assert at.button(key="t_mf_go").label.startswith("Show the summary")

    at.switch_page("pages/spectra.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "blocks.0.c_attn.weight" in at.selectbox(key="sp_param").options  # the user's own parameter names
    assert at.get("plotly_chart")
