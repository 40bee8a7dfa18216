import json
import math

import pytest
import torch

from wdscale.models import transformer
from wdscale.training.store import RunStore
from wdscale.training.train import RunConfig, TrainOptions, train_ensemble
from wdscale.models.ensemble import EnsembleAdamW, elinear, rms_norm
from wdscale.core.rules import resolve
from wdscale.models.transformer import Transformer, TransformerConfig, apply_rope, flops_per_step, rope_tables

TINY = dict(model="transformer", width=32, base_width=32, rule="mup", lr=1e-2, wd=0.1, steps=3, seq_len=16,
            head_dim=16, batch_size=4, depth=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(**kw):
    return RunConfig(**(TINY | kw))


def rel_diff(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_rope_scores_depend_on_relative_position_only():
    hd, T = 16, 40
    cos, sin = rope_tables(T, hd, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(hd, generator=g, dtype=torch.float64), torch.randn(hd, generator=g, dtype=torch.float64)

    def score(tq, tk):
        xq = torch.zeros(T, 1, hd, dtype=torch.float64)
        xk = torch.zeros(T, 1, hd, dtype=torch.float64)
        xq[tq, 0], xk[tk, 0] = q, k
        return float(apply_rope(xq, cos, sin)[tq, 0] @ apply_rope(xk, cos, sin)[tk, 0])

    base = score(7, 3)
    for shift in (1, 5, 20, 32):
        assert score(7 + shift, 3 + shift) == pytest.approx(base, rel=1e-10, abs=1e-10)
    assert abs(score(7, 3) - score(7, 6)) > 1e-3  # and the score does depend on the offset
    # a rotation keeps norms
    x = torch.randn(T, 2, hd, generator=g, dtype=torch.float64)
    assert torch.allclose(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_causal_future_tokens_do_not_change_past_logits():
    m = Transformer(2, TransformerConfig(32, depth=2, head_dim=16, seq_len=24))
    for i, rule in enumerate(("sp", "mup")):
        m.init_member(i, i, cfg(rule=rule, width=32).resolved())
    idx = torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(1))
    idx2 = idx.clone()
    idx2[:, 15:] = (idx2[:, 15:] + 17) % 256
    with torch.no_grad():
        a, b = m(idx), m(idx2)
    assert torch.allclose(a[:, :, :15], b[:, :, :15], atol=1e-5)
    assert not torch.allclose(a[:, :, 15:], b[:, :, 15:], atol=1e-3)


def test_shapes_params_and_mup_scales():
    c = cfg(width=64, base_width=16)
    m, data = transformer.build(c, 2, torch.device("cpu"))
    m.init_member(0, 0, cfg(width=64, base_width=16, rule="sp").resolved())
    m.init_member(1, 0, c.resolved())
    assert m.cfg.n_heads == 4 and m.cfg.hidden % 8 == 0 and m.cfg.hidden >= 8 * 64 / 3
    assert m.attn_scale.tolist() == pytest.approx([1 / 4, 1 / 4])  # 1/sqrt(hd) for every rule: hd is fixed
    assert m.readout_mult.tolist() == pytest.approx([1.0, 0.25])
    assert m.param_class["emb"] == "embedding" and m.param_class["readout"] == "readout"
    assert m.param_class["l1_wq"] == "matrix" and m.param_class["l0_norm1"] == "vector"
    mats = m.matrices()
    assert {"emb", "readout", "l0_wq", "l0_wk", "l0_wv", "l0_wo", "l0_w1", "l0_w2", "l0_w3"} <= set(mats)
    assert not any(p.ndim == 3 and "norm" in n for n, p in mats.items())
    batch = next(data)
    assert batch.shape == (4, 17) and batch.dtype == torch.int64
    loss = m.loss(batch)
    assert loss.shape == (2,)
    # mu-P logits start 1/m smaller: near the uniform-byte loss ln 256
    assert float(loss[1].detach()) == pytest.approx(math.log(256), abs=0.15)


def test_sp_and_mup_are_the_same_model_at_the_base_width():
    # m = 1: same init (same seed), readout multiplier 1, and one attention scale for every rule
    m = Transformer(3, TransformerConfig(32, depth=2, head_dim=16, seq_len=16))
    for i, rule in enumerate(("sp", "mup", "wd")):
        m.init_member(i, 7, cfg(rule=rule, width=32, base_width=32).resolved())
    batch = torch.randint(0, 256, (3, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, loss = m(batch[:, :-1]), m.loss(batch)
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])
    assert loss[0] == loss[1] == loss[2]
    # and at m > 1 they do differ (readout multiplier 1/m under mu-P only)
    m2 = Transformer(2, TransformerConfig(64, depth=1, head_dim=16, seq_len=16))
    for i, rule in enumerate(("sp", "mup")):
        m2.init_member(i, 7, cfg(rule=rule, width=64, base_width=32).resolved())
    assert m2.attn_scale.tolist() == [0.25, 0.25]
    with torch.no_grad():
        z = m2(batch[:, :-1])
    assert torch.allclose(z[1], z[0] / 2, rtol=1e-5, atol=1e-6)


def test_readout_init_is_sp_at_every_width_with_a_1_over_m_multiplier():
    """What rules.py documents: readout N(0, 1/d) at the member's own width (not MuReadout's base-width variance),
    times 1/m in the forward, so the initial logits shrink like 1/m (MuReadout: 1/sqrt(m))."""
    rms = {}
    for d in (32, 128):
        m = Transformer(1, TransformerConfig(d, depth=1, head_dim=16, seq_len=16))
        m.init_member(0, 0, cfg(rule="mup", width=d, base_width=32).resolved())
        w = m.readout[0].detach()
        assert float(w.std()) == pytest.approx(1 / math.sqrt(d), rel=0.05)  # fan-in d, not d0 = 32
        assert float(m.readout_mult[0]) == pytest.approx(32 / d)
        batch = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            rms[d] = float(m(batch).pow(2).mean().sqrt())
    assert rms[128] / rms[32] == pytest.approx(1 / 4, rel=0.2)  # O(1/m), m = 4


def test_flops_count_matches_the_model_parameters():
    c = cfg(width=64, depth=3, batch_size=5, seq_len=24)
    m, _ = transformer.build(c, 1, torch.device("cpu"))
    n_matmul = sum(p[0].numel() for n, p in m.matrices().items() if n != "emb")
    tokens = 5 * 24 * 7
    assert flops_per_step(c, 7) == 6 * n_matmul * tokens + 12 * 3 * 24 * 64 * tokens
    n_total = sum(p[0].numel() for p in m.parameters())
    assert transformer.n_params(c)["total"] == n_total


def test_ensemble_equals_alone_float64():
    cs = [cfg(rule="mup", lr=1e-2, wd=0.1, seed=1), cfg(rule="sp", lr=3e-3, wd=0.0, seed=2),
          cfg(rule="wd", lr=2e-2, wd=0.5, seed=3)]
    cs = [RunConfig(**(TINY | dict(width=64, rule=c.rule, lr=c.lr, wd=c.wd, seed=c.seed, steps=4))) for c in cs]
    opts = TrainOptions(n_evals=1, spectra_every=100)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        together = train_ensemble(cs, opts)
        alone = [train_ensemble([c], opts)[0] for c in cs]
    finally:
        torch.set_default_dtype(old)
    for r, a in zip(together, alone):
        assert r["run_id"] == a["run_id"]
        for n, w in a["weights"].items():
            assert rel_diff(r["weights"][n], w) < 1e-5, (a["config"].rule, n)
        assert r["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert r["final_loss"] == pytest.approx(a["final_loss"], rel=1e-5)
    # the members really differ (different rules, lr, wd, init)
    assert len({round(r["final_loss"], 6) for r in together}) == 3


def test_training_lowers_loss_below_uniform():
    c = cfg(width=32, lr=1e-2, steps=40, batch_size=8, seq_len=32, depth=1)
    r = train_ensemble([c], TrainOptions(n_evals=2))[0]
    assert not r["diverged"]
    assert r["final_loss"] < math.log(256) - 1.0  # byte statistics alone get well below uniform


def test_preflight_refuses_absurd_width_and_bad_head_dim():
    with pytest.raises(ValueError, match="GiB"):
        transformer.preflight([cfg(width=8192, base_width=64, head_dim=32, depth=64)], "cpu")  # at the size limits
    with pytest.raises(ValueError, match="multiple of head_dim"):
        transformer.preflight([cfg(width=48, head_dim=32)], "cpu")
    transformer.preflight([cfg()], "cpu")  # a tiny one passes


def test_cli_sweep_transformer_into_store(tmp_path, capsys):
    from wdscale.cli import main

    out = tmp_path / "runs"
    args = ["sweep", "--model", "transformer", "--widths", "32,64", "--base-width", "32", "--rules", "sp,mup",
            "--lrs", "1e-2", "--wds", "0.1", "--steps", "3", "--seq-len", "16", "--head-dim", "16",
            "--batch-size", "4", "--depth", "1", "--out", str(out), "--json"]
    assert main(args) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(recs) == 4 and {(r["rule"], r["width"]) for r in recs} == {(a, b) for a in ("sp", "mup")
                                                                            for b in (32, 64)}
    for r in recs:
        assert r["model"] == "transformer" and r["status"] == "done" and math.isfinite(r["final_loss"])
        assert {"emb", "l0_wq", "l0_w2", "readout"} <= set(r["top_sv"])
    store = RunStore(out)
    assert len(store.records(model="transformer")) == 4
    sv = store.spectra(recs[0]["run_id"])
    assert sv["l0_wq"].shape[1] == recs[0]["width"]
    # same command again: everything cached, nothing retrained
    assert main(args) == 0
    assert all(json.loads(line)["cached"] for line in capsys.readouterr().out.splitlines() if line.strip())
    # width 64 is not a multiple of head_dim 24: one line, exit 2, before training
    assert main(args[:-3] + ["--head-dim", "24", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "head_dim" in err and "Traceback" not in err and not (tmp_path / "b" / "weights").exists()


# -- the CUDA / bf16 path, as far as it can be checked without a GPU (scripts/gpu_check.py does the rest) -------
def test_device_selection_errors(monkeypatch):
    from wdscale.training.train import pick_device, preflight

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    for dev in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="CUDA was asked for but torch sees no GPU"):
            pick_device(dev)
    with pytest.raises(ValueError, match="no GPU"):  # before any model is built or anything trains
        train_ensemble([cfg()], TrainOptions(device="cuda"))
    with pytest.raises(ValueError, match="no GPU"):
        preflight([cfg()], "cuda")
    with pytest.raises(ValueError, match="no GPU"):
        transformer.preflight([cfg()], "cuda")
    for bad in ("gpu", "cuda0", ""):
        with pytest.raises(ValueError, match="unknown device|no GPU"):
            pick_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # auto picks the GPU when there is one
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="sees 1 GPU"):
        pick_device("cuda:3")


def test_bf16_autocast_on_cpu_dtypes_and_finite_loss():
    m = Transformer(2, TransformerConfig(32, depth=2, head_dim=16, seq_len=16))
    for i, rule in enumerate(("sp", "mup")):
        m.init_member(i, i, cfg(rule=rule).resolved())
    batch = torch.randint(0, 256, (4, 17), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = m.loss(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(batch[:, :-1])
        loss = m.loss(batch)
    assert logits.dtype == torch.bfloat16  # the matmuls ran in bf16
    assert loss.dtype == torch.float32 and loss.shape == (2,)  # cross-entropy on a float32 copy of the logits
    assert torch.isfinite(loss).all()
    assert torch.allclose(loss.detach(), ref, rtol=2e-2)  # bf16 rounding only
    loss.sum().backward()
    for n, p in m.named_parameters():  # master weights and their grads stay fp32
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32, n
        assert torch.isfinite(p.grad).all(), n
    assert m.attn_scale.dtype == m.readout_mult.dtype == torch.float32


def test_amp_training_on_cpu_matches_fp32_loosely():
    c = cfg(width=32, steps=6, depth=1)
    fp32 = train_ensemble([c], TrainOptions(n_evals=1))[0]
    bf16 = train_ensemble([c], TrainOptions(n_evals=1, amp=True))[0]
    assert not bf16["diverged"] and all(math.isfinite(x) for x in bf16["train_loss"])
    assert all(w.dtype == torch.float32 for w in bf16["weights"].values())
    assert bf16["train_loss"][0] == pytest.approx(fp32["train_loss"][0], rel=2e-2)
    assert bf16["final_loss"] == pytest.approx(fp32["final_loss"], rel=5e-2)


# -- the module rewrite keeps the maths: a frozen copy of the model before it (commit fccaae4) ------------------------
def _old_init(m, i, seed, res):
    """EnsembleModule.init_member before Resolved carried the init: gains kept, embedding N(0, 1), rest 1/fan_in."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            cls = m.param_class[name]
            std = None if cls == "vector" else 1.0 if cls == "embedding" else 1.0 / math.sqrt(p.shape[-1])
            if std is not None:
                p[i].copy_(torch.randn(p.shape[1:], generator=g) * std)
        m.readout_mult[i] = res.readout_mult


def _old_forward(m, idx):
    """Transformer.forward before the module rewrite, verbatim but for reading weights by their public names."""
    P = dict(m.named_parameters())
    E, (B, T) = m.E, idx.shape
    d, hd = m.width, m.cfg.head_dim
    H, f = m.cfg.n_heads, m.cfg.hidden
    flat_idx = idx[None] + (torch.arange(E, device=idx.device) * m.cfg.vocab)[:, None, None]
    h = torch.nn.functional.embedding(flat_idx, P["emb"].reshape(E * m.cfg.vocab, d))
    cos, sin = rope_tables(T, hd)
    scale = torch.full((E,), 1.0 / math.sqrt(hd)).view(E, 1, 1, 1, 1)
    for i in range(m.cfg.depth):
        p = lambda n: P[f"l{i}_{n}"]  # noqa: E731
        x = rms_norm(h, p("norm1"))
        qkv = elinear(x, torch.cat((p("wq"), p("wk"), p("wv")), dim=1))
        qk, v = qkv.split((2 * d, d), dim=-1)
        q, k = apply_rope(qk.reshape(E, B, T, 2 * H, hd), cos, sin).split(H, dim=-2)
        q = (q * scale.to(q.dtype)).reshape(E * B, T, H, hd).transpose(1, 2)
        k = k.reshape(E * B, T, H, hd).transpose(1, 2)
        v = v.reshape(E * B, T, H, hd).transpose(1, 2)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
        a = a.transpose(1, 2).reshape(E, B, T, d)
        h = h + elinear(a, p("wo"))
        x = rms_norm(h, p("norm2"))
        gate, up = elinear(x, torch.cat((p("w1"), p("w3")), dim=1)).split(f, dim=-1)
        h = h + elinear(torch.nn.functional.silu(gate) * up, p("w2"))
    z = elinear(rms_norm(h, P["norm_out"]), P["readout"])
    return z * m.readout_mult.view(E, 1, 1, 1).to(z.dtype)


def _old_loss(m, batch):
    logits = _old_forward(m, batch[:, :-1])
    tgt = batch[:, 1:].reshape(1, -1).expand(m.E, -1).reshape(-1)
    ce = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt, reduction="none")
    return ce.view(m.E, -1).mean(1)


OLD_NEW_TOL = 1e-6  # relative; measured: 0 (the same ops in the same order, bit for bit)


def test_modules_give_the_old_models_losses_under_sp_and_mup_groups():
    """Same seed, same batches, 4 AdamW steps with each member's own groups (sp and mup at m = 2): the module-built
    model's losses equal the old single-loop forward's, and its init the old init."""
    cfg = TransformerConfig(64, depth=2, head_dim=16, seq_len=16)
    res = [resolve("sp", 64, 32, 1e-2, 0.1), resolve("mup", 64, 32, 1e-2, 0.1)]
    new, old = Transformer(2, cfg), Transformer(2, cfg)
    for i, r in enumerate(res):
        new.init_member(i, 5 + i, r)
        _old_init(old, i, 5 + i, r)
    for (n, a), b in zip(new.named_parameters(), old.parameters()):
        assert torch.equal(a, b), n
    g = torch.Generator().manual_seed(6)
    batches = [torch.randint(0, 256, (4, 17), generator=g) for _ in range(4)]
    losses = {"new": [], "old": []}
    for key, m, loss_fn in (("new", new, Transformer.loss), ("old", old, _old_loss)):
        opt = EnsembleAdamW(m, res)
        for batch in batches:
            loss = loss_fn(m, batch)
            losses[key].append(loss.detach())
            loss.sum().backward()
            opt.step(torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.bool))
            opt.zero_grad()
    new_l, old_l = torch.stack(losses["new"]), torch.stack(losses["old"])
    assert not torch.equal(new_l[:, 0], new_l[:, 1])  # the two rules' members really differ
    worst = float(((new_l - old_l).abs() / old_l.abs()).max())
    assert worst <= OLD_NEW_TOL, worst
