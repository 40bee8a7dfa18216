"""A first run that teaches: the proxy's grid has its own figure, Deploy is hidden, the README describes the
current models, and a reference store's runs are 'reference (weights not shipped)', not 'damaged'."""
import json
import tomllib
from pathlib import Path

from wdscale.cli import main
from wdscale.training.store import RunStore
from wdscale.training.sweep import expand_grid, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def test_streamlit_hides_the_deploy_button():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["client"]["toolbarMode"] in ("minimal", "viewer")


def test_readme_models_section_describes_the_current_models():
    text = (ROOT / "README.md").read_text()
    models = text[text.index("## Models"):text.index("\n## ", text.index("## Models") + 5)]
    assert "normalized residual MLP" in models and "finite" in models and "power-law" in models
    assert "LLaMA-style" in models and "transformer.py" in models
    assert "fixed\n  random teacher" not in models  # the old core's description is gone


def test_reference_store_runs_are_listed_as_reference_not_damaged(capsys):
    assert main(["runs", "--out", str(ROOT / "gallery" / "synthetic-4w")]) == 0
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    assert len(lines) == 306 and all("reference (weights not shipped)" in ln for ln in lines)
    assert "damaged" not in cap.out + cap.err and "--repair" not in cap.err
    assert main(["runs", "--out", str(ROOT / "gallery" / "synthetic-4w"), "--check"]) == 0
    cap = capsys.readouterr()
    assert "306 ok, 0 damaged" in cap.out and "weights not shipped" in cap.out and "--repair" not in cap.out
    assert main(["runs", "--out", str(ROOT / "gallery" / "tiny"), "--check"]) == 0  # weights shipped there
    assert "8 ok" in capsys.readouterr().out
    assert main(["runs", "--out", str(ROOT / "gallery" / "synthetic-4w"), "--repair"]) == 1  # read-only
    assert "read-only" in capsys.readouterr().err


def test_an_ordinary_store_with_a_missing_weights_file_is_still_damaged(tmp_path, capsys, one_thread):
    store = RunStore(tmp_path / "runs")
    recs = run_sweep(expand_grid("synthetic", [32], 32, ["mup"], [0.01], [1.0], 5, [0], batch_size=8), store)
    store.paths(recs[0]["run_id"])[0].unlink()
    assert main(["runs", "--out", str(tmp_path / "runs"), "--check"]) == 1
    assert "damaged" in capsys.readouterr().out


def test_transfer_page_draws_the_proxy_grid_in_its_own_figure(tmp_path, monkeypatch, one_thread):
    from streamlit.testing.v1 import AppTest

    store = RunStore(tmp_path / "runs")
    kw = dict(batch_size=16, data_seed=0)
    lrs = [0.004, 0.008, 0.016]
    run_sweep(expand_grid("synthetic", [32], 32, ["mup"], lrs, [1.0, 3.0, 10.0], 20, [0], **kw)  # the proxy grid
              + expand_grid("synthetic", [32, 64], 32, ["mup", "wd"], lrs, [3.0], 20, [0], **kw), store)
    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.run()
    at.switch_page("pages/transfer.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [s["layout"]["title"]["text"] for s in specs]
    lr_fig = specs[titles.index("Loss vs learning rate, per rule")]
    names = {t.get("name") for t in lr_fig["data"]}
    assert names >= {"d=32", "d=64"} and not any("wd₀" in (n or "") for n in names)  # only λ₀ = 3 curves
    for t in lr_fig["data"]:  # the proxy's λ₀ = 1 and 10 runs are not in the mup panel
        assert len(t.get("x") or []) <= len(lrs)
    grid = [s for s, t in zip(specs, titles) if t.startswith("The proxy's η₀ × λ₀ grid")]
    assert grid and grid[0]["data"][0]["type"] == "heatmap"
    assert len(grid[0]["data"][0]["y"]) == 3  # λ₀ = 1, 3, 10
