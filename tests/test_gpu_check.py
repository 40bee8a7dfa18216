"""scripts/gpu_check.py must not rot between the rare runs on a GPU: run it at tiny sizes on the CPU.  Also the
trainer's GPU speed path (bf16 autocast, torch.compile, flash SDPA) as far as a CPU can exercise it."""
import dataclasses
import importlib.util
import shutil
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
SECTIONS = ["env", "peak", "transformer_bf16", "equality", "mfu", "synthetic", "flash", "mfu_compile", "study_lm",
            "mfu_autotune"]


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
    assert not [n for n, r in s.items() if "error" in r or ("skipped" in r and n != "mfu_autotune")]
    assert "skipped" in s["mfu_autotune"]  # no autotuning on the CPU
    assert s["env"]["torch"] == torch.__version__ and s["env"]["device_name"]
    assert s["peak"]["bf16_tflops"] > 0
    assert s["transformer_bf16"]["pass"] and s["transformer_bf16"]["dtypes"]["logits"] == "torch.bfloat16"
    assert s["equality"]["pass_1e-5"]  # on the CPU ensemble and alone agree to the tests' tolerance
    assert [(r["width"], r["members"]) for r in s["mfu"]["rows"]] == [(32, 1), (32, 2), (64, 1), (64, 2)]
    assert all(0 < r["mfu_vs_measured_bf16_peak"] < 10 for r in s["mfu"]["rows"])
    assert [r["width"] for r in s["synthetic"]["rows"]] == [16, 32, 64]
    assert s["flash"]["pass"] and s["flash"]["dtypes"] == ["torch.bfloat16"] and not s["flash"]["attn_mask"]
    assert [r["variant"] for r in s["mfu_compile"]["rows"]] == ["eager, SDPA's own kernel choice", "eager, flash SDPA"]
    st = s["study_lm"]
    assert st["preset"] == "lm" and {r["width"] for r in st["rows"]} == {32, 64, 128}
    assert set(st["totals"]) == {"fp32 eager", "bf16 eager"} and all(t["study_s"] > 0 for t in st["totals"].values())
    md = (tmp_path / "gpu_check.md").read_text()
    assert "CPU smoke run" in md and "### mfu" in md and "| 64 | 2 |" in md
    assert "### study_lm" in md and "members capped at 1: not a study time" in md and "### flash" in md


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


# ---------------------------------------------------------------------------------------------------------
# The trainer's GPU speed path, on the CPU
# ---------------------------------------------------------------------------------------------------------
def _tiny(n=2, steps=6, **kw):
    from wdscale.training.train import RunConfig

    rules = ["mup", "sp", "wd"]
    return [RunConfig(model="transformer", width=32, base_width=32, rule=rules[i % 3], lr=1e-2, wd=0.1, steps=steps,
                      seed=i, depth=1, seq_len=16, head_dim=16, batch_size=2, **kw) for i in range(n)]


def test_defaults_are_unchanged_eager_fp32():
    from wdscale.training.train import TrainOptions

    o = TrainOptions()
    assert (o.amp, o.compile, o.compile_mode, o.device) == (False, False, None, "cpu")


def test_amp_on_cpu_trains_bf16_with_fp32_master_weights(one_thread):
    from wdscale.training.train import TrainOptions, build, train_ensemble

    cs = _tiny()
    seen = []

    def check(step, model, batch, opt):
        seen.append(({p.dtype for p in model.parameters()}, {t.dtype for e in opt.params for t in e[4:6]}))

    amp = train_ensemble(cs, TrainOptions(amp=True, n_evals=1, callbacks=[check]))
    fp32 = train_ensemble(cs, TrainOptions(n_evals=1))
    assert seen and all(w == {torch.float32} and m == {torch.float32} for w, m in seen)  # master copy and moments
    for a, b in zip(amp, fp32):
        assert all(torch.isfinite(torch.tensor(a["train_loss"]))) and not a["diverged"]
        assert {w.dtype for w in a["weights"].values()} == {torch.float32}
        assert a["train_loss"] != b["train_loss"]  # autocast really ran in bf16 ...
        assert abs(a["final_loss"] - b["final_loss"]) / b["final_loss"] < 0.02  # ... and trains the same model
    # one step by hand: bf16 logits, fp32 loss and gradients
    model, data = build(cs[0], 2, torch.device("cpu"))
    for i, c in enumerate(cs):
        model.init_member(i, c.seed, c.resolved())
    batch = next(data)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(batch[:, :-1]), model.loss(batch)
    loss.sum().backward()
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert {p.grad.dtype for p in model.parameters()} == {torch.float32}


def test_attention_can_take_the_flash_kernel_under_bf16(one_thread, monkeypatch):
    """Nothing forces the math kernel: bf16 q/k/v, unit last-dim stride, no mask (causal flag), the scale folded
    into q; and with only the flash backend allowed the forward and backward run."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wdscale.training.train import build

    cs = _tiny()
    model, data = build(cs[0], 2, torch.device("cpu"))
    for i, c in enumerate(cs):
        model.init_member(i, c.seed, c.resolved())
    batch = next(data)
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen.append((q, k, v, a, kw))
        return real(q, k, v, *a, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(batch)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and seen
    q, k, v, a, kw = seen[0]
    assert {t.dtype for t in (q, k, v)} == {torch.bfloat16} and [t.stride(-1) for t in (q, k, v)] == [1, 1, 1]
    assert not a and kw.get("attn_mask") is None and kw["is_causal"] and kw["scale"] == 1.0


def test_device_and_compile_mode_errors_are_one_line_value_errors():
    from wdscale.cli import main
    from wdscale.training.train import TrainOptions, train_ensemble

    with pytest.raises(ValueError, match="unknown compile mode 'fast'") as e:
        train_ensemble(_tiny(steps=2), TrainOptions(compile=True, compile_mode="fast"))
    assert "\n" not in str(e.value)
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda would train")
    with pytest.raises(ValueError, match="CUDA was asked for but torch sees no GPU") as e:
        train_ensemble(_tiny(steps=2), TrainOptions(device="cuda", amp=True, compile=True))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cmd", [["sweep", "--model", "transformer", "--widths", "32", "--base-width", "32",
                                  "--rules", "mup", "--lrs", "1e-2", "--steps", "3", "--seq-len", "16",
                                  "--head-dim", "16", "--depth", "1", "--batch-size", "2"],
                                 ["study", "--preset", "lm", "--seeds", "0"]])
def test_cli_amp_compile_flags_and_cuda_without_gpu_is_one_line(cmd, tmp_path, capsys, monkeypatch):
    from wdscale.cli import build_parser, main

    args = build_parser().parse_args(cmd + ["--out", str(tmp_path), "--amp", "--compile"])
    assert args.amp and args.compile
    assert not build_parser().parse_args(cmd).compile  # default: eager, as before
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda would train")
    monkeypatch.setenv("WDSCALE_DEMO_STEPS", "3")
    rc = main(cmd + ["--out", str(tmp_path), "--device", "cuda", "--amp", "--compile"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no GPU" in err[0]


def test_inductor_cache_goes_under_the_wdscale_cache(tmp_path, monkeypatch):
    from wdscale.training import train

    monkeypatch.setenv("WDSCALE_CACHE", str(tmp_path))
    monkeypatch.setattr(train, "_USER_INDUCTOR_DIR", None)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_FX_GRAPH_CACHE", raising=False)
    assert train.inductor_cache() == tmp_path / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
    monkeypatch.setattr(train, "_USER_INDUCTOR_DIR", str(tmp_path / "mine"))  # a user's own setting wins
    assert train.inductor_cache() == tmp_path / "mine"


def _can_compile() -> str | None:
    """Why torch.compile cannot run here, or None."""
    if not (shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")):
        return "no C compiler (inductor's CPU backend needs one)"
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    return None


@pytest.mark.slow  # a cold compile of the tiny model takes ~50 s on one thread (~9 s from a warm cache)
@pytest.mark.skipif(_can_compile() is not None, reason=str(_can_compile()))
def test_compiled_training_gives_the_eager_losses(one_thread):
    """Tolerance 1e-5 relative on every step's loss and the final val loss (measured: 3e-7): inductor fuses and
    reorders fp32 sums, nothing else changes.  Weights: 1e-4 relative in norm per matrix (elementwise, Adam's
    normalised step amplifies rounding in near-zero gradients, as the GPU check saw for cuBLAS)."""
    from wdscale.training.train import TrainOptions, train_ensemble

    cs = _tiny(n=2, steps=6)
    eager = train_ensemble(cs, TrainOptions(n_evals=1))
    comp = train_ensemble(cs, TrainOptions(n_evals=1, compile=True))
    for a, b in zip(eager, comp):
        for x, y in zip(a["train_loss"], b["train_loss"]):
            assert abs(x - y) <= 1e-5 * abs(x)
        assert abs(a["final_loss"] - b["final_loss"]) <= 1e-5 * abs(a["final_loss"])
        for n, w in a["weights"].items():
            assert float((w - b["weights"][n]).norm() / w.norm()) <= 1e-4, n


@pytest.mark.slow  # one cold compile on the CPU (~1 min)
@pytest.mark.skipif(_can_compile() is not None, reason=str(_can_compile()))
def test_cpu_smoke_with_compile_runs_the_compiled_variant(tmp_path, monkeypatch):
    mod = _load()
    monkeypatch.setenv("WDSCALE_CACHE", str(tmp_path / "cache"))
    assert mod.main(["--out", str(tmp_path), "--cpu-smoke", "--smoke-compile", "--only", "mfu_compile"]) == 0
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["mfu_compile"]["rows"]
    comp = [r for r in rows if r["variant"].startswith("compile default")]
    assert comp and comp[0]["compile_s"] > 0 and comp[0]["max_last_loss_rel_diff_vs_eager"] < 1e-2
