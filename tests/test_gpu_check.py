"""scripts/gpu_check.py must not rot between the rare runs on a GPU: run it at tiny sizes on the CPU."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
SECTIONS = ["env", "peak", "transformer_bf16", "equality", "mfu", "synthetic"]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_smoke_runs_every_section_and_writes_json_and_markdown(tmp_path):
    # a subprocess from another folder: the script must find the package itself (no pip install needed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--cpu-smoke"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "[gpu_check" in p.stdout and "finished" in p.stdout
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rep["mode"] == "cpu-smoke" and list(rep["sections"]) == SECTIONS
    s = rep["sections"]
    assert not [n for n, r in s.items() if "error" in r or "skipped" in r]
    assert s["env"]["torch"] == torch.__version__ and s["env"]["device_name"]
    assert s["peak"]["bf16_tflops"] > 0
    assert s["transformer_bf16"]["pass"] and s["transformer_bf16"]["dtypes"]["logits"] == "torch.bfloat16"
    assert s["equality"]["pass_1e-5"]  # on the CPU ensemble and alone agree to the tests' tolerance
    assert [(r["width"], r["members"]) for r in s["mfu"]["rows"]] == [(32, 1), (32, 2), (64, 1), (64, 2)]
    assert all(0 < r["mfu_vs_measured_bf16_peak"] < 10 for r in s["mfu"]["rows"])
    assert [r["width"] for r in s["synthetic"]["rows"]] == [16, 32, 64]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "CPU smoke run" in md and "### mfu" in md and "| 64 | 2 |" in md


def test_one_failing_section_does_not_lose_the_others(tmp_path, monkeypatch, capsys):
    mod = _load()

    def boom(ctx):
        raise RuntimeError("simulated failure")

    sections = tuple((n, boom if n == "equality" else f) for n, f in mod.SECTIONS)
    monkeypatch.setattr(mod, "SECTIONS", sections)
    rc = mod.main(["--out", str(tmp_path), "--cpu-smoke", "--only", "transformer_bf16,equality"])
    assert rc == 1  # a failed section is a failed check
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(rep["sections"]) == ["env", "peak", "transformer_bf16", "equality"]
    assert "simulated failure" in rep["sections"]["equality"]["error"]
    assert rep["sections"]["transformer_bf16"]["pass"]
    assert "FAILED**: RuntimeError: simulated failure" in (tmp_path / "gpu_check.md").read_text()
    assert "equality: FAILED" in capsys.readouterr().out


def test_nominal_peaks_and_gpu_mode_refuses_without_cuda(tmp_path, monkeypatch):
    mod = _load()
    table = {k: v for k, v, _ in mod.NOMINAL_BF16_TFLOPS}
    assert table["H100"] == table["H200"] == 989.5 and table["H100 PCIe"] == 756.0
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: gpu mode would run")
    assert mod.main(["--out", str(tmp_path)]) == 2
    assert not (tmp_path / "gpu_check.json").exists()
