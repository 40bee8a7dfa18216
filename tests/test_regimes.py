"""The LM-regime study's pieces: S = sum_t eta_t lam under a schedule, the gate at the optima, the fitted rule's b,
the presets' data slices, and the regime numbers."""
import math

import numpy as np
import pytest

from wdscale.models import presets
from wdscale.models.config import RunConfig, lr_factor, schedule_sum
from wdscale.models.data import TextData, load_corpus, split
from wdscale.science.regimes import alpha_per_class, fitted_b, fitted_b_sqrt, matrix_class, study_regime
from wdscale.science.verdict import record_taus, transfer_verdict
from test_verdict import LRS, make_record, planted_loss


@pytest.mark.parametrize("steps,warmup", [(2000, 0.05), (1000, 0.1), (333, 0.0)])
def test_decay_sum_under_cosine_equals_its_closed_form(steps, warmup):
    # warmup s_t = (t+1)/T_w for t < T_w; then 0.1 + 0.45 (1 + cos(pi k / n)), k = 0..n-1, n = T - T_w, and
    # sum_k cos(pi k / n) = 1 exactly: S/(eta lam) = (T_w + 1)/2 + 0.55 n + 0.45 (T_w an integer number of steps)
    tw = round(warmup * steps)
    closed = ((tw + 1) / 2 if tw else 0.0) + 0.55 * (steps - tw) + 0.45
    c = RunConfig(model="transformer", width=128, base_width=32, rule="mup", lr=0.016, wd=0.1, steps=steps,
                  schedule="cosine", warmup=warmup)
    assert c.lr_sum() == pytest.approx(closed, rel=1e-9)
    assert c.lr_sum() == pytest.approx(sum(lr_factor(c, t) for t in range(steps)), rel=1e-12)
    # the record, the table and the verdict's S all count the schedule: less than steps * eta * lam
    S = c.decay_table()["matrix"]["steps_over_tau"]
    assert S == pytest.approx(closed * 0.016 / 4 * 0.1, rel=1e-9) and S < steps * 0.016 / 4 * 0.1
    rec = {**c.canonical(), "matrix_lr": 0.004, "matrix_wd": 0.1}
    assert record_taus(rec) == pytest.approx(S, rel=1e-9)
    assert schedule_sum("constant", 0.0, steps) == steps


def test_steady_state_gate_sits_at_the_optima_not_the_grid_edge():
    # steps chosen so the grid's lowest lr is far below 3 tau, but the planted optimum is well above it
    steps = 6000
    opts = {64: 2.0 ** -6, 128: 2.0 ** -6}
    recs = [make_record(w, lr, planted_loss(lr, o), steps=steps) for w, o in opts.items() for lr in LRS]
    (v,) = transfer_verdict(recs, threshold=0.5)
    assert v["min_steps_over_tau_grid"] < 3 <= v["min_steps_over_tau"]
    for w, o in v["optima"].items():  # S at the optimum: eta_opt * lam * steps at a constant lr
        m = w / 64
        assert o["steps_over_tau"] == pytest.approx(steps * opts[w] / m * 0.1, rel=1e-6)
    assert v["verdict"] == "PASS"
    short = [make_record(w, lr, planted_loss(lr, o), steps=300) for w, o in opts.items() for lr in LRS]
    (v2,) = transfer_verdict(short, threshold=0.5)
    assert v2["verdict"] == "INCONCLUSIVE" and any("at the optimum" in n for n in v2["notes"])


def _sv_records(alpha, rule="mup", widths=(32, 64, 128), eta0=0.01, lam=0.1, noise=0.0, seed=0):
    """Records whose sigma_top is exactly C sqrt(eta_mat / lam_mat) d^alpha (times a little noise)."""
    rng = np.random.default_rng(seed)
    out = []
    b = {"mup": 0.0, "wd": 0.5, "indep": 1.0}[rule]
    for w in widths:
        m = w / widths[0]
        lr_m, wd_m = eta0 / m, lam * m ** b
        sv = 0.3 * math.sqrt(lr_m / wd_m) * w ** alpha
        names = {f"l{i}_{n}": "matrix" for i in range(2) for n in ("wq", "wk", "wv", "wo", "w1", "w3", "w2")}
        out.append({"rule": rule, "width": w, "base_width": widths[0], "lr": eta0, "wd": lam, "seed": 0,
                    "matrix_lr": lr_m, "matrix_wd": wd_m, "param_class": {**names, "emb": "embedding"},
                    "top_sv": {n: sv * math.exp(noise * rng.standard_normal()) for n in names}, "model": "transformer",
                    "status": "done"})
    return out


@pytest.mark.parametrize("alpha", [0.75, 0.6, 1.0])
def test_fitted_b_sqrt_recovers_a_known_alpha(alpha):
    recs = _sv_records(alpha) + _sv_records(alpha, rule="wd")
    f = fitted_b_sqrt(recs, 0.01)
    assert f["widths"] == [32, 64]  # the two smallest widths only
    assert f["alpha_hat"] == pytest.approx(alpha, abs=1e-9)
    assert f["b"] == pytest.approx(round(2 * alpha - 1, 2))
    assert fitted_b_sqrt(_sv_records(alpha, widths=(32,)), 0.01) is None  # one width: nothing to fit


def test_alpha_per_class_pools_rules_through_sqrt_eta_over_lam():
    recs = _sv_records(0.8, "mup") + _sv_records(0.8, "wd") + _sv_records(0.8, "indep")
    a = alpha_per_class(recs, 0.01)
    assert set(a) == {"attn q", "attn k", "attn v", "attn o", "mlp gate", "mlp up", "mlp down"}
    for v in a.values():
        assert v["alpha"] == pytest.approx(0.8, abs=1e-9) and v["implied_lambda_exponent"] == pytest.approx(0.6)
    assert matrix_class("l3_w2") == "mlp down" and matrix_class("emb") is None


def test_presets_data_slices_are_what_they_say():
    lm, ep = presets.get("lm"), presets.get("lm-epochs")
    per_step = presets.bytes_per_step(lm)
    assert per_step == lm["common"]["batch_size"] * (lm["common"]["seq_len"] + 1)
    train = split(load_corpus("stdlib"))[0]
    assert presets.epochs(lm) == pytest.approx(per_step * lm["steps"] / len(train)) and presets.epochs(lm) <= 1.0
    assert presets.epochs(ep) == pytest.approx(per_step * ep["steps"] / presets.LM_TRAIN_BYTES) and \
        presets.epochs(ep) >= 10
    d = TextData("stdlib", 64, 8, 0, train_bytes=presets.LM_TRAIN_BYTES)
    assert len(d.train) == presets.LM_TRAIN_BYTES
    assert bytes(d.train.numpy()) == bytes(train[:presets.LM_TRAIN_BYTES])  # the first bytes, validation unchanged
    full = TextData("stdlib", 64, 8, 0)
    assert all(bool((a == b).all()) for a, b in zip(d.val, full.val))
    for _ in range(20):  # every window comes from the slice
        assert int(next(d).shape[1]) == 65
    # the slice is part of the run id; whole-corpus ids are what they were before the field existed
    c = RunConfig(model="transformer", width=32, base_width=32, rule="mup", lr=0.01, wd=0.1, steps=10)
    assert "train_bytes" not in c.canonical()
    assert RunConfig(**{**c.__dict__, "train_bytes": 100_000}).run_id != c.run_id
    with pytest.raises(ValueError, match="train_bytes"):
        RunConfig(model="synthetic", width=32, base_width=32, rule="mup", lr=0.01, wd=0.1, steps=10, train_bytes=10)
    with pytest.raises(ValueError, match="train_bytes"):
        TextData("stdlib", 64, 8, 0, train_bytes=10**9)


def test_study_regime_reports_drift_S_and_the_fitted_result():
    opts = {64: 2.0 ** -6, 128: 2.0 ** -5.5, 256: 2.0 ** -5}  # +0.5 octave / doubling
    recs = []
    for rule, o in (("mup", opts), ("indep", {w: 2.0 ** -6 for w in opts})):
        recs += [make_record(w, lr, planted_loss(lr, x), rule=rule) for w, x in o.items() for lr in LRS]
    s = study_regime(recs, eta0=2.0 ** -6, name="t")
    assert s["rules"]["mup"]["drift"] == pytest.approx(0.5, abs=1e-6)
    assert s["best_named_rule"] == "indep" and s["all_interior"]
    assert s["rules"]["indep"]["at_optimum"][128]["S"] == pytest.approx(10**6 * 2.0 ** -6 / 2 * 0.2, rel=1e-6)


def test_more_seeds_extend_a_preset_study_without_moving_its_proxy():
    from wdscale.science.study import proxy_configs, proxy_seeds, transfer_configs

    spec = dict(presets.get("lm"), seeds=(0, 1, 2))
    assert proxy_seeds(spec) == (0,) and {c.seed for c in proxy_configs(spec=spec)} == {0}
    assert {c.seed for c in transfer_configs(0.008, 0.3, spec=spec)} == {0, 1, 2}
    one = {c.run_id for c in transfer_configs(0.008, 0.3, spec=presets.get("lm"))}
    assert one < {c.run_id for c in transfer_configs(0.008, 0.3, spec=spec)}  # seed 0's runs are reused
    assert proxy_seeds(presets.get("synthetic")) == presets.get("synthetic")["seeds"]  # the demo: every seed


def test_the_regime_comparison_equals_wdscale_report_on_each_reference_study():
    """The Regimes page's drifts and CIs are `wdscale report`'s, study by study (one verdict code path)."""
    import json
    import subprocess
    import sys

    from wdscale.science import gallery

    studies, _ = gallery.reference_regimes()
    assert any(s["name"] == "synthetic-4w" for s in studies)  # always shipped
    for s in studies:
        path = gallery._ref_dir(s["name"])
        p = subprocess.run([sys.executable, "-m", "wdscale", "report", str(path), "--format", "json"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        rep = {v["rule"]: v for v in json.loads(p.stdout)["verdicts"]
               if math.isclose(v["wd"], s["lam0"], rel_tol=1e-9) and len(v["widths"]) >= 2}
        assert set(rep) == set(s["rules"]), s["name"]
        for rule, r in s["rules"].items():
            assert r["drift"] == pytest.approx(rep[rule]["drift"], abs=1e-9), (s["name"], rule)
            assert r["drift_ci"] == pytest.approx(rep[rule]["drift_ci"], abs=1e-9)
            assert r["verdict"] == rep[rule]["verdict"]
