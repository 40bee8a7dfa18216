import threading

import pytest
import torch

from wdscale.models.ensemble import EnsembleAdamW
from wdscale.models.synthetic import SyntheticConfig, SyntheticData, SyntheticFFN
from wdscale.training.train import RunConfig, TrainOptions, lr_factor, train_ensemble


def cfg(**kw):
    base = dict(model="synthetic", width=64, base_width=32, rule="wd", lr=1e-2, wd=0.5, steps=30)
    return RunConfig(**(base | kw))


def rel_diff(a, b):
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-12))


@pytest.mark.parametrize("fused", [False, True], ids=["multi-tensor", "fused"])
def test_optimizer_equals_torch_adamw(fused):
    """Both optimizer paths equal torch.optim.AdamW to 1e-5 relative (the fused one is torch's own one-pass
    kernel per member and class; the multi-tensor one rounds like torch's foreach AdamW)."""
    c = cfg(rule="indep")
    res = c.resolved()
    a, b = SyntheticFFN(1, 64), SyntheticFFN(1, 64)
    a.init_member(0, 3, res)
    b.load_state_dict(a.state_dict())
    opt_a = EnsembleAdamW(a, [res], fused=fused)
    groups = [{"params": [p], "lr": res.groups[b.param_class[n]]["lr"],
               "weight_decay": res.groups[b.param_class[n]]["wd"]} for n, p in b.named_parameters()]
    opt_b = torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=1e-8)
    data = SyntheticData(SyntheticConfig(), 0)
    alive = torch.ones(1, dtype=torch.bool)
    for _ in range(15):
        batch = next(data)
        a.loss(batch).sum().backward()
        b.loss(batch).sum().backward()
        opt_a.step(torch.ones(1, dtype=torch.float64), alive)
        opt_b.step()
        opt_a.zero_grad(), opt_b.zero_grad()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert rel_diff(pa, pb) < 1e-5, n


def test_fused_and_multi_tensor_paths_agree_on_an_ensemble():
    """The same 4-member ensemble trained 20 steps with each optimizer path: weights within 1e-5 relative."""
    cs = members()
    res = [c.resolved() for c in cs]
    out = []
    for fused in (False, True):
        model = SyntheticFFN(len(cs), 64)
        for i, (c, r) in enumerate(zip(cs, res)):
            model.init_member(i, c.seed, r)
        opt = EnsembleAdamW(model, res, fused=fused)
        data = SyntheticData(SyntheticConfig(), 0)
        alive = torch.ones(len(cs), dtype=torch.bool)
        for _ in range(20):
            model.loss(next(data)).sum().backward()
            opt.step(torch.ones(len(cs), dtype=torch.float64), alive)
            opt.zero_grad()
        out.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for n in out[0]:
        for i in range(len(cs)):
            assert rel_diff(out[1][n][i], out[0][n][i]) < 1e-5, (n, i)


def members():
    return [cfg(rule="mup", lr=3e-3, seed=1), cfg(rule="wd", lr=1e-2, wd=0.2, seed=2),
            cfg(rule="sp", lr=1e-3, wd=0.0, seed=3), cfg(rule="custom", lr=2e-2, wd=1.0, a=0.5, b=1.0, seed=4)]


def test_ensemble_equals_alone():
    together = train_ensemble(members())
    for c, r in zip(members(), together):
        alone = train_ensemble([c])[0]
        for n, w in alone["weights"].items():
            assert rel_diff(r["weights"][n], w) < 1e-5, (c.rule, n)
        assert r["final_loss"] == pytest.approx(alone["final_loss"], rel=1e-5)
        assert r["top_sv"] == pytest.approx(alone["top_sv"], rel=1e-5)


def test_diverging_member_is_frozen_and_others_unaffected():
    bad = cfg(rule="sp", lr=50.0, wd=0.0, seed=9)
    cs = members()[:2] + [bad]
    res = train_ensemble(cs, TrainOptions(spectra_every=5))
    assert res[2]["diverged"] and res[2]["diverged_step"] is not None
    assert res[2]["final_loss"] != res[2]["final_loss"]  # NaN: no loss is reported for a diverged run
    assert not res[0]["diverged"] and not res[1]["diverged"]
    for c, r in zip(cs[:2], res[:2]):
        alone = train_ensemble([c])[0]
        assert r["final_loss"] == pytest.approx(alone["final_loss"], rel=1e-5)
    # frozen: once caught, its weights no longer change, so every later spectrum snapshot is the same
    sv = res[2]["spectra"]["w1_0"]
    later = [i for i, s in enumerate(res[2]["spectra"]["steps"]) if s > res[2]["diverged_step"] + 1]
    assert len(later) >= 2
    for i in later[1:]:
        assert (torch.nan_to_num(torch.as_tensor(sv[i])) == torch.nan_to_num(torch.as_tensor(sv[later[0]]))).all()


def test_cancel_keeps_partial_results():
    stop = threading.Event()

    def cb(step, model, batch, opt):
        if step == 9:
            stop.set()

    events = []
    res = train_ensemble(members()[:2], TrainOptions(callbacks=[cb]), on_event=events.append, cancel=stop)
    assert all(r["status"] == "partial" and r["steps_done"] == 10 for r in res)
    assert len(res[0]["train_loss"]) == 10
    assert events[-1]["type"] == "cancelled"
    assert res[0]["spectra"]["steps"][-1] == 10  # a snapshot of where it stopped


def test_events_stream_progress_and_spectra():
    events = []
    train_ensemble(members()[:2], TrainOptions(spectra_every=10, event_every=5), on_event=events.append)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == [5, 10, 15, 20, 25, 30]
    spec = [e for e in events if e["type"] == "spectra"]
    assert [e["step"] for e in spec] == [0, 10, 20, 30] and len(spec[0]["top_sv"]["w1_0"]) == 2


def test_top_sv_are_true_singular_values_of_weights():
    r = train_ensemble([cfg()])[0]
    for n, w in r["weights"].items():
        if w.ndim == 2:
            assert r["top_sv"][n] == pytest.approx(float(torch.linalg.matrix_norm(w, ord=2)), rel=1e-5)
    assert r["param_class"]["w1_0"] == "matrix" and r["param_class"]["w_out"] == "readout"


def test_schedules():
    c = cfg(schedule="exp_warmup", rule="sp", warmup=0.5, steps=100, width=128, base_width=32)
    assert lr_factor(c, 0) == pytest.approx(0.25) and lr_factor(c, 50) == 1.0 and lr_factor(c, 99) == 1.0
    w = cfg(schedule="warmup", warmup=0.1, steps=100)
    assert lr_factor(w, 0) == pytest.approx(0.1) and lr_factor(w, 50) == 1.0
    co = cfg(schedule="cosine", warmup=0.0, steps=100)
    assert lr_factor(co, 0) == pytest.approx(1.0) and lr_factor(co, 100) == pytest.approx(0.1)


def test_exp_warmup_refused_with_a_rule_that_scales_the_lr():
    # exp_warmup rises from 1/m to 1: on top of mu-P's eta0/m the width factor would apply twice
    for rule, kw in (("mup", {}), ("wd", {}), ("indep", {}), ("custom", {"a": 0.5})):
        with pytest.raises(ValueError, match="exp_warmup.*applies twice") as e:
            cfg(schedule="exp_warmup", rule=rule, warmup=0.5, **kw)
        assert "\n" not in str(e.value)
    cfg(schedule="exp_warmup", rule="sp", warmup=0.5)  # the intended use
    cfg(schedule="exp_warmup", rule="custom", a=0.0, b=0.5, warmup=0.5)  # no lr scaling in the rule: allowed


def test_default_spectra_cadence():
    from wdscale.training.train import MIN_SPECTRA_GAP

    long = train_ensemble([cfg(steps=4 * MIN_SPECTRA_GAP, width=32)])
    assert long[0]["spectra"]["steps"] == list(range(0, 4 * MIN_SPECTRA_GAP + 1, MIN_SPECTRA_GAP))
    short = train_ensemble([cfg(steps=32)])  # shorter than the gap: first and last only
    assert short[0]["spectra"]["steps"] == [0, 32]


def test_non_finite_member_skips_its_spectra_and_the_rest_is_kept():
    """lr 1e39 turns a member's weights to inf/NaN within a step: its spectra are skipped (an SVD of a non-finite
    batch would fail for every member), it is marked diverged, and its healthy neighbour is stored intact."""
    good, bad = cfg(rule="sp", lr=1e-3, wd=0.0, seed=1, steps=12), cfg(rule="sp", lr=1e39, wd=0.0, seed=2, steps=12)
    res = train_ensemble([good, bad], TrainOptions(spectra_every=3))
    assert res[1]["diverged"] and not res[0]["diverged"]
    alone = train_ensemble([good], TrainOptions(spectra_every=3))[0]
    assert res[0]["final_loss"] == pytest.approx(alone["final_loss"], rel=1e-5)
    assert all(v == v for v in res[0]["top_sv"].values())  # finite spectra for the healthy member


def test_rms_norm_function_matches_the_composite_in_value_and_gradient():
    from wdscale.models.ensemble import _rms_norm_composite, rms_norm

    torch.manual_seed(0)
    for shape in [(3, 5, 16), (2, 4, 7, 16)]:
        x = torch.randn(*shape, requires_grad=True)
        g = torch.randn(shape[0], shape[-1], requires_grad=True)
        w = torch.randn(*shape)
        (rms_norm(x, g) * w).sum().backward()
        gx, gg = x.grad.clone(), g.grad.clone()
        x.grad = g.grad = None
        (_rms_norm_composite(x, g) * w).sum().backward()
        assert torch.allclose(rms_norm(x, g), _rms_norm_composite(x, g), rtol=1e-6, atol=1e-6)
        assert torch.allclose(gx, x.grad, rtol=1e-5, atol=1e-5) and torch.allclose(gg, g.grad, rtol=1e-5, atol=1e-5)
    x64 = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    g64 = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    from wdscale.models.ensemble import _RMSNorm

    assert torch.autograd.gradcheck(lambda a, b: _RMSNorm.apply(a, b, 1e-6), (x64, g64))
