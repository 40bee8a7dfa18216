"""Model files (wdscale.models.own): every member equals a plain torch loop, in both paths; classes; the readout hook; run
ids follow the file's bytes; each bad input is one line, rc 2, with nothing stored."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from wdscale.models import own
from wdscale.models.config import RunConfig
from wdscale.core.rules import param_groups, resolve
from wdscale.training.store import RunStore
from wdscale.training.sweep import run_sweep
from wdscale.training.train import TrainOptions


EX = Path(__file__).resolve().parents[1] / "examples"
STEPS = 20


def _configs(path: Path, init: str, schedule: str = "constant") -> list[RunConfig]:
    """Two members at m = 2 (the readout multiplier and the mu-P lr are in play): different rule, lr and seed."""
    mf = own.load(path)
    kw = dict(model=mf.name, model_file=str(path), width=64, base_width=32, steps=STEPS, init=init,
              schedule=schedule, warmup=0.2 if schedule != "constant" else 0.0)
    return [RunConfig(rule="mup", lr=3e-3, wd=0.1, seed=0, **kw), RunConfig(rule="wd", lr=6e-3, wd=0.3, seed=1, **kw)]


def plain_loop(path: Path, cfg: RunConfig, readout: str):
    """What a user writes by hand: the issue's reference loop, nothing of wdscale's trainer."""
    from wdscale.models.config import lr_factor

    mf = own.load(path)
    torch.manual_seed(cfg.seed)
    m = mf.build(cfg.width)
    if cfg.init != "keep":  # the documented mu-P init (own.reinit) on the classes shapes give
        own.reinit(m, cfg.resolved(), own.classes(mf, m, cfg.width, cfg.base_width), cfg.seed)
    groups = param_groups(m, cfg.width, cfg.base_width, cfg.rule, cfg.lr, cfg.wd, base_model=mf.build(cfg.base_width))
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95))
    lrs = [g["lr"] for g in opt.param_groups]
    mult = resolve(cfg.rule, cfg.width, cfg.base_width, cfg.lr, cfg.wd).readout_mult
    m.get_submodule(readout).register_forward_hook(lambda mod, args, out: out * mult)
    it = iter(mf.batches(cfg.data_seed))
    losses = []
    for step in range(cfg.steps):
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr * lr_factor(cfg, step)
        loss = mf.loss(m, next(it))
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return losses, {n: p.detach().clone() for n, p in m.named_parameters()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _fro(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _comparable(name: str, w: torch.Tensor) -> list[torch.Tensor]:
    """The parts of a weight whose exact gradient is not zero.  An attention key's bias (the middle third of a fused
    c_attn bias) shifts every score of a query by the same amount, which softmax ignores: its gradient is rounding
    noise, which Adam normalizes into lr-sized steps, so it differs between any two implementations (the plain loop
    at 1 thread against 2 differs there by ~1e-3, and by <1e-5 everywhere else)."""
    if name.endswith("c_attn.bias"):
        q, _, v = w.chunk(3)
        return [q, v]
    return [w]


@pytest.mark.parametrize("name, readout", [("nanogpt", "lm_head"), ("hf_llama", "lm_head"), ("hf_gpt2", "lm_head")])
@pytest.mark.parametrize("path_kind", ["loop", "batched"])
def test_each_member_equals_a_plain_torch_loop(name, readout, path_kind):
    path = EX / f"{name}.py"
    # init keep for the HF models (the reference), mu-P re-draw and a schedule for nanoGPT
    cfgs = _configs(path, "mup" if name == "nanogpt" else "keep", "cosine" if name == "nanogpt" else "constant")
    res = own.train_members(cfgs, TrainOptions(members=path_kind))
    # vmap's batched kernels sum in another order than the loop's; after 20 Adam steps the weights differ at the
    # 1e-5 level (measured 1.1e-5 on hf_gpt2 on an AMD EPYC, < 1e-5 on the earlier CI machine): rounding, not a
    # different update (the tie itself is checked exactly in test_tied_weights_stay_tied_in_both_paths)
    w_tol = 1e-5 if path_kind == "loop" else 2e-5
    assert all(r["extra"]["member_path"] == path_kind for r in res)
    for cfg, r in zip(cfgs, res):
        losses, weights = plain_loop(path, cfg, readout)
        got = torch.tensor(r["train_loss"], dtype=torch.float64)
        assert len(got) == STEPS
        assert _rel(got, torch.tensor(losses, dtype=torch.float64)) < 1e-5  # every step's loss
        for n, w in weights.items():
            for mine, ref in zip(_comparable(n, r["weights"][n]), _comparable(n, w)):
                assert _fro(mine, ref) < w_tol, n
        assert got[-1] < got[0]  # it trained


def test_tied_weights_stay_tied_in_both_paths():
    path = EX / "hf_gpt2.py"
    cfgs = _configs(path, "keep")
    for kind in ("loop", "batched"):
        p = own.members._make_path(kind, own.load(path), cfgs, {}, torch.device("cpu"))
        b = next(iter(own.load(path).batches(0)))
        for _ in range(3):
            losses = p.step(b, [1.0, 1.0], [True, True])
        # a lost tie gives a uniform guess: ln 256 = 5.55 (the naive torch.func recipe's failure)
        assert all(abs(x - 5.545) > 0.05 for x in losses)
        if kind == "loop":
            m = p.members[0].model
            assert m.lm_head.weight is m.transformer.wte.weight
        p.close()


def test_classes_of_the_three_models():
    want = {
        "nanogpt": {"wte.weight": "embedding", "wpe.weight": "embedding", "blocks.0.c_attn.weight": "matrix",
                    "blocks.0.mlp_proj.weight": "matrix", "blocks.0.ln_1.weight": "vector",
                    "blocks.0.c_attn.bias": "vector"},
        "hf_gpt2": {"transformer.wte.weight": "embedding", "transformer.h.0.attn.c_attn.weight": "matrix",
                    "transformer.h.1.mlp.c_proj.weight": "matrix", "transformer.ln_f.bias": "vector"},
        "hf_llama": {"model.embed_tokens.weight": "embedding", "model.layers.0.self_attn.q_proj.weight": "matrix",
                     "model.layers.1.mlp.down_proj.weight": "matrix", "model.norm.weight": "vector",
                     "lm_head.weight": "readout"},
    }
    for name, expect in want.items():
        mf = own.load(EX / f"{name}.py")
        for width in (32, 64):  # the base width itself too (classes then come from a wider build)
            m = mf.build(width)
            got = own.classes(mf, m, width, 32)
            assert {k: got[k] for k in expect} == expect, (name, width)
            ref = own.shape_reference(mf, width, 32)
            assert own.readout_modules(m, width, ref) == ["lm_head"], name
        assert "lm_head.weight" not in got or name == "hf_llama"  # a tie is classed once, by its first holder


def test_the_hook_multiplies_only_the_logits():
    path = EX / "hf_gpt2.py"
    mf = own.load(path)
    cfg = _configs(path, "keep")[0]  # mup at m = 2: logits x 1/2
    mem = own.Member(mf, cfg, {}, torch.device("cpu"))
    ids = next(iter(mf.batches(0)))["input_ids"]
    seen = {}
    h = mem.model.transformer.wte.register_forward_hook(lambda mod, a, out: seen.__setitem__("emb", out))
    with torch.no_grad():
        scaled = mem.model(input_ids=ids).logits
        for hk in mem.hooks:
            hk.remove()
        emb_scaled = seen["emb"].clone()
        plain = mem.model(input_ids=ids).logits
    h.remove()
    torch.testing.assert_close(seen["emb"], emb_scaled)  # the lookup of the tied weight is never scaled
    torch.testing.assert_close(scaled, plain * 0.5)


def test_an_edited_file_gets_new_run_ids(tmp_path):
    f = tmp_path / "mine.py"
    shutil.copy(EX / "nanogpt.py", f)
    c = dict(model="mine", model_file=str(f), width=64, base_width=32, rule="mup", lr=1e-2, wd=0.1, steps=10)
    before = RunConfig(**c).run_id
    g = tmp_path / "elsewhere" / "mine.py"
    g.parent.mkdir()
    shutil.copy(f, g)
    assert RunConfig(**{**c, "model_file": str(g)}).run_id == before  # the same bytes: the same runs
    f.write_text(f.read_text() + "\n# an edit\n")
    assert RunConfig(**c).run_id != before
    assert RunConfig(**{**c, "init": "keep"}).run_id != RunConfig(**c).run_id


def test_a_model_file_sweep_is_stored_and_cached(tmp_path):
    path = EX / "nanogpt.py"
    cfgs = [RunConfig(model="nanogpt", model_file=str(path), width=w, base_width=32, rule="mup", lr=lr, wd=0.1,
                      steps=6) for w in (32, 64) for lr in (3e-3, 1e-2)]
    store = RunStore(tmp_path / "runs")
    recs = run_sweep(cfgs, store, TrainOptions(members="loop"))
    assert len(recs) == 4 and not any(r["cached"] for r in recs)
    r = recs[-1]
    assert r["model"] == "nanogpt" and len(r["model_file_sha256"]) == 64 and r["member_path"] == "loop"
    sp = store.spectra(r["run_id"])
    assert "blocks.0.c_attn.weight" in sp and "wte.weight" in sp  # every 2-D weight, the user's own names
    assert r["param_class"]["blocks.1.c_fc.weight"] == "matrix"
    again = run_sweep(cfgs, store, TrainOptions(members="loop"))
    assert all(x["cached"] for x in again)


BAD = {
    "missing": (None, "no such file"),
    "syntax": ("def build(width)\n    return 1\n", "bad.py:1: syntax error"),
    "no_build": ("def batches(seed):\n    return iter([])\n\ndef val_batches():\n    return []\n",
                 "defines no build(width)"),
    "build_raises": ("import torch\n\ndef build(width):\n    raise RuntimeError('boom')\n\n"
                     "def batches(seed):\n    return iter([])\n\ndef val_batches():\n    return []\n",
                     "build(32) raised RuntimeError: boom (bad.py:4)"),
    "no_matrix": ("import torch\n\ndef build(width):\n    return torch.nn.Sequential(torch.nn.Linear(8, width), "
                  "torch.nn.Linear(width, 3))\n\n"
                  "def batches(seed):\n    return iter([torch.zeros(2, 8)] * 100)\n\n"
                  "def val_batches():\n    return [torch.zeros(2, 8)]\n\n"
                  "def loss(model, batch):\n    return model(batch).pow(2).mean()\n", "no hidden matrix found"),
    "ambiguous": ("import torch\n\nclass M(torch.nn.Module):\n    def __init__(self, width):\n"
                  "        super().__init__()\n        self.inp = torch.nn.Linear(4, width)\n"
                  "        self.hid = torch.nn.Linear(width, width)\n"
                  "        self.proj = torch.nn.Parameter(torch.randn(width, 2) / width)\n\n"
                  "    def forward(self, x):\n        return self.hid(self.inp(x)) @ self.proj\n\n"
                  "def build(width):\n    return M(width)\n\n"
                  "def batches(seed):\n    return iter([torch.zeros(2, 4)] * 100)\n\n"
                  "def val_batches():\n    return [torch.zeros(2, 4)]\n\n"
                  "def loss(model, batch):\n    return model(batch).pow(2).mean()\n", "--override proj=CLASS"),
    "loss_not_scalar": ("import torch\n\ndef build(width):\n    return torch.nn.Sequential(torch.nn.Linear(4, width),"
                        " torch.nn.Linear(width, width), torch.nn.Linear(width, 2))\n\n"
                        "def batches(seed):\n    return iter([torch.zeros(3, 4)] * 100)\n\n"
                        "def val_batches():\n    return [torch.zeros(3, 4)]\n\n"
                        "def loss(model, batch):\n    return model(batch)\n", "not a scalar tensor"),
    "loss_nan": ("import torch\n\ndef build(width):\n    return torch.nn.Sequential(torch.nn.Linear(4, width),"
                 " torch.nn.Linear(width, width), torch.nn.Linear(width, 2))\n\n"
                 "def batches(seed):\n    return iter([torch.zeros(3, 4)] * 100)\n\n"
                 "def val_batches():\n    return [torch.zeros(3, 4)]\n\n"
                 "def loss(model, batch):\n    return model(batch).sum() * float('nan')\n", "not finite"),
    "runs_out": ("import torch\n\ndef build(width):\n    return torch.nn.Sequential(torch.nn.Linear(4, width),"
                 " torch.nn.Linear(width, width), torch.nn.Linear(width, 2))\n\n"
                 "def batches(seed):\n    return iter([torch.ones(3, 4)] * 5)\n\n"
                 "def val_batches():\n    return [torch.ones(3, 4)]\n\n"
                 "def loss(model, batch):\n    return model(batch).pow(2).mean()\n", "ran out after 5 batches"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_model_files_get_one_line_and_rc_2(tmp_path, case):
    src, want = BAD[case]
    f = tmp_path / "bad.py"
    if src is not None:
        f.write_text(src)
    out = tmp_path / "runs"
    widths = "32,64"
    p = subprocess.run([sys.executable, "-m", "wdscale", "sweep", "--model", str(f), "--widths", widths,
                        "--base-width", "32", "--rules", "mup", "--lrs", "1e-2", "--wds", "0.1", "--steps", "20",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert want in lines[0], lines[0]
    assert "Traceback" not in p.stderr
    runs = list((out / "weights").glob("*")) if out.exists() else []
    assert runs == []  # nothing half stored


def test_override_names_a_class(tmp_path):
    f = tmp_path / "amb.py"
    f.write_text(BAD["ambiguous"][0])
    mf = own.load(f)
    m = mf.build(64)
    with pytest.raises(ValueError, match="--override proj=CLASS"):
        own.classes(mf, m, 64, 32)
    got = own.classes(mf, m, 64, 32, own.parse_overrides("proj=readout"))
    assert got["proj"] == "readout" and got["hid.weight"] == "matrix" and got["inp.weight"] == "embedding"
    assert own.readout_modules(m, 64, own.shape_reference(mf, 64, 32), {"proj": "readout"}) == [""]


def test_a_model_vmap_cannot_batch_falls_back_to_the_loop_with_a_notice(tmp_path):
    f = tmp_path / "drop.py"
    f.write_text(textwrap.dedent("""
        import torch
        def build(width):  # dropout draws random numbers: vmap (randomness="error") refuses, the loop runs it
            return torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Dropout(0.1),
                                       torch.nn.Linear(width, width), torch.nn.Linear(width, 2))
        def batches(seed):
            g = torch.Generator().manual_seed(seed)
            while True:
                yield torch.randn(8, 4, generator=g)
        def val_batches():
            return [torch.ones(8, 4)]
        def loss(model, batch):
            return model(batch).pow(2).mean()
    """))
    mf = own.load(f)
    cfgs = [RunConfig(model="drop", model_file=str(f), width=64, base_width=32, rule="mup", lr=1e-2, wd=0.1, steps=4,
                      seed=s) for s in (0, 1)]
    seen = []
    path, reason = own.choose_path(mf, cfgs, {}, torch.device("cpu"), "auto", seen.append)
    assert path == "loop" and "vmap cannot batch" in reason
    assert seen and seen[0]["type"] == "notice" and len(seen[0]["text"].splitlines()) == 1
    with pytest.raises(ValueError, match="batched path cannot run"):
        own.choose_path(mf, cfgs, {}, torch.device("cpu"), "batched")


def test_dropout_members_equal_training_alone(tmp_path):
    """Members stepped in turn keep their own RNG stream: with dropout, member i equals the model trained alone."""
    f = tmp_path / "drop2.py"
    f.write_text(textwrap.dedent("""
        import torch
        def build(width):
            return torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(width, width), torch.nn.Linear(width, 2))
        def batches(seed):
            g = torch.Generator().manual_seed(seed)
            while True:
                yield torch.randn(8, 4, generator=g)
        def val_batches():
            return [torch.ones(8, 4)]
        def loss(model, batch):
            return model(batch).pow(2).mean()
    """))
    cfgs = [RunConfig(model="drop2", model_file=str(f), width=64, base_width=32, rule="mup", lr=1e-2, wd=0.1, steps=8,
                      seed=s, init="keep") for s in (0, 1)]
    together = own.train_members(cfgs, TrainOptions(members="loop"))
    alone = own.train_members(cfgs[1:], TrainOptions(members="loop"))
    assert together[1]["train_loss"] == alone[0]["train_loss"]
    assert together[0]["train_loss"] != together[1]["train_loss"]


def test_the_leaf_knows_the_rule_classes():
    from wdscale.models.own import modelfile
    from wdscale.core import rules

    assert modelfile.CLASSES == rules.CLASSES


def test_coord_check_on_a_model_file_through_hooks():
    """The coordinate check on the user's own modules: under SP a hidden output grows with width after Adam steps,
    under mu-P it stays near flat; the hooks come off (the model trains as Member trains it)."""
    rows = own.coord_check(str(EX / "nanogpt.py"), widths=(32, 64, 128), rules=("sp", "mup"), steps=2, lr=1e-2)
    slopes = {(s["rule"], s["module"]): s["slope"] for s in own.coord_slopes(rows)}
    for mod in ("blocks.1.c_proj", "blocks.1.mlp_proj"):
        assert slopes[("sp", mod)] > 0.3 and abs(slopes[("mup", mod)]) < 0.15, mod
    assert {r["step"] for r in rows} == {0, 1, 2} and "logits" in {r["module"] for r in rows}


def test_coord_cli_on_a_model_file():
    p = subprocess.run([sys.executable, "-m", "wdscale", "coord", "--model", str(EX / "nanogpt.py"), "--widths",
                        "32,64", "--steps", "1", "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    import json

    out = json.loads(p.stdout)
    assert out["slopes"] and {r["rule"] for r in out["rows"]} == {"sp", "mup"}
    bad = subprocess.run([sys.executable, "-m", "wdscale", "coord", "--model", "nope.txt"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["loop", "batched"])
def test_a_cancelled_model_file_ensemble_resumes_to_the_unbroken_numbers(tmp_path, kind):
    """Nothing lost on a crash: a cancel writes the checkpoint; the resumed members equal an unbroken run."""
    import threading

    from wdscale.training.train import train_ensemble

    path = EX / "nanogpt.py"
    cfgs = [RunConfig(model="nanogpt", model_file=str(path), width=64, base_width=32, rule=r, lr=6e-3, wd=0.3,
                      steps=12, seed=s, schedule="cosine", warmup=0.2) for r, s in (("mup", 0), ("wd", 1))]
    whole = own.train_members(cfgs, TrainOptions(members=kind))
    cancel = threading.Event()
    opts = TrainOptions(members=kind, checkpoint_dir=str(tmp_path / "ck"), spectra_every=4)

    def stop_at_5(e):
        if e["type"] == "step" and e["step"] >= 5:
            cancel.set()
    first = train_ensemble(cfgs, opts, on_event=stop_at_5, cancel=cancel)
    assert first[0]["status"] == "partial" and 5 <= first[0]["steps_done"] < 12
    assert list((tmp_path / "ck").glob("*.pt"))
    seen = []
    again = train_ensemble(cfgs, opts, on_event=seen.append)
    assert next(e for e in seen if e["type"] == "start")["resumed_from"] == first[0]["steps_done"]
    for a, b in zip(again, whole):
        assert a["status"] == "done" and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        for n, w in b["weights"].items():
            assert _fro(a["weights"][n], w) < 1e-6, n
