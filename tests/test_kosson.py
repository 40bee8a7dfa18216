import math

import pytest
import torch

from wdscale.science.kosson import KossonMonitor, alignment, monitored_update, summarize, warmup_comparison
from wdscale.training.train import RunConfig, TrainOptions, lr_factor, train_ensemble


def test_rank_one_aligned_weight_has_alignment_one():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(48, generator=g), torch.randn(64, generator=g)
    v = v / v.norm()
    W = torch.outer(u, v)  # rank 1, row space = v
    X = torch.randn(100, generator=g)[:, None] * v[None]  # every sample along v
    m = alignment(W, 0.01 * W, X)
    assert m["alpha_w"] == pytest.approx(1.0, rel=1e-6)
    assert m["alpha_dw"] == pytest.approx(1.0, rel=1e-6)
    assert m["ratio"] == pytest.approx(1.0, rel=1e-6)
    assert m["rel_update"] == pytest.approx(0.01, rel=1e-6)
    assert m["rel_rep_change"] == pytest.approx(0.01, rel=1e-6)
    # an update orthogonal to every input changes nothing downstream
    w_perp = torch.randn(64, generator=g)
    w_perp -= (w_perp @ v) * v
    assert alignment(W, torch.outer(u, w_perp), X)["alpha_dw"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("C", [256, 1024])
def test_random_high_dim_alignment_is_one_over_sqrt_fan_in(C):
    g = torch.Generator().manual_seed(C)
    W, dW = torch.randn(128, C, generator=g), torch.randn(128, C, generator=g)
    X = torch.randn(512, C, generator=g)
    m = alignment(W, dW, X)
    assert m["fan_in"] == C
    assert m["alpha_w"] * math.sqrt(C) == pytest.approx(1.0, abs=0.05)
    assert m["alpha_dw"] * math.sqrt(C) == pytest.approx(1.0, abs=0.05)


def test_batched_members_match_single_and_identity_holds():
    g = torch.Generator().manual_seed(1)
    W, dW, X = torch.randn(3, 16, 32, generator=g), torch.randn(3, 16, 32, generator=g), torch.randn(3, 10, 32,
                                                                                                       generator=g)
    mb = alignment(W, dW, X)
    for i in range(3):
        mi = alignment(W[i], dW[i], X[i])
        for k in ("rel_update", "rel_rep_change", "alpha_dw", "alpha_w", "ratio"):
            assert float(mb[k][i]) == pytest.approx(mi[k], rel=1e-9)
        assert mi["rel_rep_change"] == pytest.approx(mi["ratio"] * mi["rel_update"], rel=1e-9)
    with pytest.raises(ValueError):
        alignment(W[0], dW[0], torch.randn(10, 31))


def test_monitored_steps():
    got = [u for u in range(1, 41) if monitored_update(u, 10, early=True)]
    assert got == [2, 4, 8, 10, 16, 20, 30, 32, 40]
    assert [u for u in range(1, 41) if monitored_update(u, 10, early=False)] == [10, 20, 30, 40]


def _tiny(width=32, rule="mup", lrs=(3e-3, 1e-2), steps=12):
    return [RunConfig(model="synthetic", width=width, base_width=32, rule=rule, lr=lr, wd=0.1, steps=steps,
                      depth=2, batch_size=16) for lr in lrs]


def test_monitor_during_training_matches_a_direct_measurement():
    cfgs = _tiny()
    mon = KossonMonitor(every=4, early=False)
    direct = {}

    def spy(step, model, batch, opt):  # independent check: copy the weights at every step
        direct[step + 1] = model.w1_0.detach().clone()

    results = train_ensemble(cfgs, TrainOptions(callbacks=[spy, mon], n_evals=1))
    assert sorted({r["step"] for r in mon.series}) == [4, 8, 12]
    assert {r["param"] for r in mon.series} == {"w1_0", "w2_0", "w1_1", "w2_1"}  # the hidden matrices only
    assert {r["member"] for r in mon.series} == {0, 1}
    for r in mon.series:
        assert r["rel_rep_change"] == pytest.approx(r["ratio"] * r["rel_update"], rel=1e-6)
        assert 0 < r["alpha_w"] <= 1 and 0 < r["alpha_dw"] <= 1
    for r in (r for r in mon.series if r["param"] == "w1_0"):
        W0, W1 = direct[r["step"] - 1][r["member"]], direct[r["step"]][r["member"]]
        assert r["rel_update"] == pytest.approx(float((W1 - W0).norm() / W0.norm()), rel=1e-5)
    # the larger lr moves its weights more, relative to their size
    last = {r["member"]: r["rel_update"] for r in mon.series if r["param"] == "w1_0" and r["step"] == 12}
    assert last[1] > last[0]
    mon.attach(results)
    assert len(results[0]["extra"]["kosson"]) == 3 * 4  # 3 records x 4 hidden matrices
    assert set(summarize(results[0]["extra"]["kosson"])) == {"w1_0", "w2_0", "w1_1", "w2_1"}
    # the next ensemble (a new model) starts a new series
    train_ensemble(_tiny(width=64, lrs=(1e-2,), steps=8), TrainOptions(callbacks=[mon], n_evals=1))
    assert sorted({r["step"] for r in mon.series}) == [4, 8]
    assert {r["fan_in"] for r in mon.series} == {64} and {r["member"] for r in mon.series} == {0}


def test_warmup_comparison_stores_mup_and_sp_exp_warmup(store):
    recs = warmup_comparison([32, 64], [3e-3, 1e-2], 0.1, 6, 32, store, warmup=0.5, rules=("mup",),
                             monitor_every=3, depth=1, batch_size=16, opts=TrainOptions(n_evals=1))
    kinds = sorted({(r["rule"], r["schedule"]) for r in recs})
    assert kinds == [("mup", "constant"), ("sp", "exp_warmup")]
    assert len(recs) == 2 * 2 * 2 and all(not r["cached"] for r in recs)
    sp = next(r for r in recs if r["rule"] == "sp" and r["width"] == 64)
    assert sp["warmup"] == 0.5 and sp["matrix_lr"] == sp["lr"]  # no mu-P lr scaling
    stored = store.get(sp["run_id"])
    assert [row["step"] for row in stored["kosson"] if row["param"] == "w1_0"] == [2, 3, 4, 6]
    # the sp schedule starts at 1/m and reaches 1 at half the run (Kosson et al.'s replacement)
    cfg = RunConfig(model="synthetic", width=64, base_width=32, rule="sp", lr=1e-2, wd=0.1, steps=6,
                    schedule="exp_warmup", warmup=0.5, depth=1, batch_size=16)
    assert lr_factor(cfg, 0) == pytest.approx(0.5) and lr_factor(cfg, 3) == 1.0
    again = warmup_comparison([32, 64], [3e-3, 1e-2], 0.1, 6, 32, store, warmup=0.5, rules=("mup",),
                              monitor_every=3, depth=1, batch_size=16, opts=TrainOptions(n_evals=1))
    assert all(r["cached"] for r in again) and len(again) == len(recs)
