"""The steady-state demo: its task, its verdicts and the ``wdscale demo --json`` contract."""
import json
import math
import subprocess
import sys

import pytest
import torch

from wdscale.science.analysis import lr_optima
from wdscale.science.study import DEMO, proxy_configs, proxy_optimum, transfer_configs
from wdscale.models.ensemble import activations
from wdscale.models.synthetic import SyntheticConfig, SyntheticData, SyntheticFFN, Teacher
from wdscale.science.verdict import compare_rules, transfer_verdict
from test_verdict import LRS, make_record, planted_loss


def test_teacher_and_data_are_fixed_and_deterministic_per_seed():
    cfg = SyntheticConfig(n_train=256, n_features=64, n_val=32)
    t1, t2 = Teacher(cfg), Teacher(cfg)
    assert torch.equal(t1.a, t2.a) and torch.equal(t1.g, t2.g)  # the teacher never changes
    a, b, c = SyntheticData(cfg, 0), SyntheticData(cfg, 0), SyntheticData(cfg, 1)
    assert torch.equal(a.val[0], c.val[0]) and torch.equal(a.val[1], c.val[1])  # one held-out set for all
    for _ in range(5):  # crosses an epoch boundary (256 / 128 = 2 batches per epoch)
        (xa, ya), (xb, yb), (xc, _) = next(a), next(b), next(c)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, xc)  # another data seed, another order
    # the training set is finite: every batch is drawn from it
    train_x = a.train[0]
    assert all(any(torch.equal(x, t) for t in train_x) for x in xa[:4])


def test_every_hidden_matrix_sees_a_full_rank_width_d_input():
    cfg = SyntheticConfig(n_train=256, n_features=64)
    d = 64
    model = SyntheticFFN(1, d, cfg)
    from wdscale.core.rules import resolve

    model.init_member(0, 0, resolve("mup", d, 32, 1e-2, 1.0))
    with torch.no_grad(), activations(model) as cap:
        model(torch.randn(512, cfg.d_in))
    hidden = [n for n, c in model.param_class.items() if c == "matrix"]
    assert set(hidden) <= set(cap) and len(hidden) == 2 * cfg.depth
    for n in hidden:
        u = cap[n][0][0]  # (B, d) input of member 0
        assert torch.linalg.matrix_rank(u).item() == d, n


def test_w1_is_scale_invariant():
    """Scaling W1 leaves the function unchanged (relu is homogeneous and a norm follows): the assumption behind
    AdamW's norm equilibrium."""
    cfg = SyntheticConfig(n_train=256, n_features=64)
    from wdscale.core.rules import resolve

    model = SyntheticFFN(1, 32, cfg)
    model.init_member(0, 0, resolve("mup", 32, 32, 1e-2, 1.0))
    x = torch.randn(16, cfg.d_in)
    with torch.no_grad():
        y0 = model(x)
        model.w1_0.mul_(7.0)
        assert torch.allclose(model(x), y0, rtol=1e-4, atol=1e-5)
        model.w2_0.mul_(7.0)  # W2 is the sublayer gain: its scale matters
        assert not torch.allclose(model(x), y0, rtol=1e-2, atol=1e-3)


def _two_seed_records(opt_by_seed, width=64, rule="mup"):
    """Planted loss curves whose seeds disagree: seed 0 prefers 2^-7, seed 1 2^-9 with a deeper minimum."""
    out = []
    for seed, (opt, depth) in opt_by_seed.items():
        for lr in LRS:
            r = make_record(width, lr, planted_loss(lr, opt) - depth, rule=rule)
            r["seed"] = seed
            r["run_id"] += str(seed)
            out.append(r)
    return out


def test_seed_averaging_agrees_between_optima_and_verdict():
    recs = []
    for w in (64, 128):
        recs += _two_seed_records({0: (2.0 ** -7, 0.0), 1: (2.0 ** -9, 0.05)}, width=w)
    opt = lr_optima(recs)[("mup", 0.1)]
    (v,) = transfer_verdict(recs)
    for w in (64, 128):
        assert opt[w]["x_opt"] == pytest.approx(v["optima"][w]["x_opt"], rel=1e-12)
        # the mean of the two parabolas peaks half way (in log lr), not at the deeper seed's 2^-9
        assert math.log2(opt[w]["x_opt"]) == pytest.approx(-8.0, abs=1e-9)
    assert v["n_seeds"] == 2


def _rule_records(rule, opts, seeds=(0, 1), jitter=0.0):
    recs = []
    for s in seeds:
        for w, o in opts.items():
            for lr in LRS:
                r = make_record(w, lr, planted_loss(lr, o * 2 ** (jitter * (s - 0.5))), rule=rule)
                r.update(seed=s, run_id=r["run_id"] + str(s))
                recs.append(r)
    return recs


def test_verdict_is_inconclusive_on_an_edge_optimum():
    recs = _rule_records("mup", {64: 2.0 ** -7, 128: 2.0 ** -4})  # 2^-4 is the grid's top lr
    (v,) = transfer_verdict(recs)
    assert v["verdict"] == "INCONCLUSIVE" and any("edge" in n for n in v["notes"])
    (c,) = compare_rules([v])
    assert not c["conclusive"] and "edge" in c["sentence"]


def test_compare_rules_names_the_best_and_is_inconclusive_when_cis_overlap():
    flat = _rule_records("indep", {64: 2.0 ** -7, 128: 2.0 ** -7, 256: 2.0 ** -7}, jitter=0.1)
    moving = _rule_records("mup", {64: 2.0 ** -7, 128: 2.0 ** -6, 256: 2.0 ** -5}, jitter=0.1)
    vs = {v["rule"]: v for v in transfer_verdict(flat + moving)}
    assert vs["indep"]["verdict"] == "PASS" and vs["mup"]["verdict"] == "FAIL"
    lo, hi = vs["indep"]["drift_ci"]
    assert lo <= vs["indep"]["drift"] <= hi and hi - lo > 0  # seeds disagree: a real interval
    (c,) = compare_rules(list(vs.values()))
    assert c["best_rule"] == "indep" and c["conclusive"] and c["ranking"] == ["indep", "mup"]
    assert "Best rule: indep" in c["sentence"] and "+0.00" in c["sentence"] or "-0.00" in c["sentence"]
    # two rules that move alike: their CIs overlap, so no winner is named
    close = _rule_records("wd", {64: 2.0 ** -7, 128: 2.0 ** -6.95, 256: 2.0 ** -6.9}, jitter=0.3)
    close2 = _rule_records("mup", {64: 2.0 ** -7, 128: 2.0 ** -6.9, 256: 2.0 ** -6.85}, jitter=0.3)
    (c2,) = compare_rules(transfer_verdict(close + close2))
    assert not c2["conclusive"] and "overlap" in c2["sentence"]


def test_demo_grid_meets_the_design():
    """The demo's size: >= 3 widths spanning >= 4x, mup/wd/indep, >= 5 lrs, >= 2 seeds, and >= 3 tau for every
    transfer run whatever interior optimum the proxy finds on its grid."""
    assert max(DEMO["widths"]) / min(DEMO["widths"]) >= 4 and len(DEMO["widths"]) >= 3
    assert {"mup", "wd", "indep"} <= set(DEMO["rules"]) and len(DEMO["lr_octaves"]) >= 5
    assert len(DEMO["seeds"]) >= 2
    lrs, wds = DEMO["proxy_lrs"], DEMO["proxy_wds"]
    worst = min(c.resolved().table(c.steps)["matrix"]["steps_over_tau"]
                for eta0 in lrs[1:-1] for lam0 in wds[1:-1]
                for c in transfer_configs(eta0, lam0) if c.seed == 0)
    assert worst >= 3.0
    proxy = min(c.resolved().table(c.steps)["matrix"]["steps_over_tau"] for c in proxy_configs())
    assert proxy >= 3.0


def test_proxy_optimum_is_the_seed_mean_minimum():
    recs = []
    for c in proxy_configs(steps=10):
        r = make_record(c.width, c.lr, 1.0 + (math.log2(c.lr / 8e-3)) ** 2 / 10 + (math.log(c.wd / 3)) ** 2 / 10
                        + 0.001 * c.seed, wd=c.wd, base_width=c.base_width)
        r["seed"] = c.seed
        recs.append(r)
    best = proxy_optimum(recs)
    assert best["lam0"] == 3.0 and abs(math.log2(best["eta0"] / 8e-3)) <= 0.25
    assert best["eta_interior"] and best["lam_interior"]


def test_demo_json_contract(tmp_path):
    env = {"WDSCALE_DEMO_STEPS": "6", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-m", "wdscale", "demo", "--json", "--out", str(tmp_path / "s"),
                        "--threads", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    for k in ("seconds", "min_steps_over_tau", "runs", "rules", "best_rule", "proxy", "sentence"):
        assert k in s, k
    rules = set(DEMO["rules"]) | {"fitted"}  # the paper's recipe taken literally runs beside the named rules
    n = len(DEMO["widths"]) * len(DEMO["rules"]) * len(DEMO["lr_octaves"]) * len(DEMO["seeds"])
    # the fitted rule: every lr at d0 (mup's twins there), its own fewer lrs above d0
    n += (len(DEMO["lr_octaves"]) + (len(DEMO["widths"]) - 1) * len(DEMO["fitted_octaves"])) * len(DEMO["seeds"])
    assert len(s["runs"]) == n
    f = s["fitted"]  # b = e_mup / b_hat: mup's sigma_top width exponent over the proxy grid's lam exponent
    assert f["widths"] == sorted(DEMO["widths"])[:2] and f["b"] == round(f["e_mup"] / f["b_hat"], 2)
    assert {r["b"] for r in s["runs"] if r["rule"] == "fitted"} == {f["b"]}
    for r in s["runs"]:
        for k in ("rule", "width", "lr", "wd", "seed", "steps", "final_loss", "diverged", "matrix_lr", "matrix_wd",
                  "top_sv", "param_class"):
            assert k in r, k
    assert set(s["rules"]) == rules
    for v in s["rules"].values():
        for k in ("drift", "drift_ci", "top_sv_exponent", "optima", "on_edge"):
            assert k in v, k
        assert set(v["optima"]) == {str(w) for w in DEMO["widths"]}
    assert s["best_rule"] in rules
    # a rerun is served from the store
    p2 = subprocess.run([sys.executable, "-m", "wdscale", "demo", "--json", "--out", str(tmp_path / "s"),
                         "--threads", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert json.loads(p2.stdout)["rules"] == s["rules"]


def _summary(drifts, svs, best, alpha=0.87):
    return {"rules": {r: {"drift": d, "top_sv_exponent": e} for (r, d), e in zip(drifts.items(), svs)},
            "best_rule": best, "alpha": alpha}


def test_plain_reading_says_when_the_best_rule_is_not_the_papers():
    from wdscale.science.study import plain_reading

    s = plain_reading(_summary({"mup": 0.74, "wd": 0.48, "indep": 0.28}, [0.28, 0.14, -0.08], "indep"))
    assert "drifts most (+0.74" in s and "not the paper's λ ∝ √d (+0.48)" in s and "Kosson" in s
    assert "overlaps" not in s
    s2 = plain_reading({**_summary({"mup": 0.74, "wd": 0.44, "indep": 0.24}, [0.28, 0.18, -0.07], "indep"),
                        "conclusive": False})
    assert "still overlaps" in s2 and "transfers best" not in s2
    assert "d^0.74" in s  # 2 alpha - 1 with alpha = 0.87
    s = plain_reading(_summary({"mup": 0.6, "wd": 0.02, "indep": -0.3}, [0.25, 0.0, -0.25], "wd"))
    assert "The paper's λ ∝ √d transfers best here (drift" in s
    s = plain_reading(_summary({"mup": 0.0, "wd": 0.3, "indep": 0.5}, [0.1, 0.2, 0.3], "mup"))
    assert "does not drift most" in s and "flattens" not in s


def test_a_fitted_exponent_no_run_can_use_skips_the_phase_with_its_reason():
    """A b measured on runs far from the steady state (a few-step demo) can ask for lr*wd >= 1 at the widest width:
    the study reports it and goes on without that phase (Home once failed here)."""
    from wdscale.science.study import DEMO, fitted_configs, preset_phases

    ok, why = fitted_configs(0.016, 3.0, 10, DEMO, "fitted", 0.5)
    assert ok and why is None
    none, why = fitted_configs(0.008, 10.0, 10, DEMO, "fitted", 5.0)
    assert none == [] and "fitted not trained" in why and ">= 1" in why
    last = preset_phases(DEMO, 0.008, 10.0, b=5.0, steps=10)[2]
    assert last and not any(c.rule == "fitted" for c in last)  # the named rules' widest runs still train


def test_d0_twins_are_trained_once_and_read_for_every_rule(tmp_path, one_thread):
    """At the proxy width (m = 1) every mu-P rule is the same member: each (lr, wd, seed) there trains once (the
    proxy grid's mup runs, or one member per lr the grid lacks), and every other rule's d0 run, the fitted one
    included, is that run read back under its own id, with ``twin_of``.  The records stay complete."""
    from wdscale.models import presets
    from wdscale.science.study import fitted_configs, run_study, transfer_lrs
    from wdscale.training.store import RunStore
    from wdscale.training.sweep import plan

    spec = dict(DEMO, proxy_lrs=presets.LADDER[5:9], proxy_wds=(1.0, 3.0), lr_octaves=(-0.5, 0.0, 0.5, 1.0),
                fitted_octaves=(0.0, 0.5, 1.0), widths=(32, 64), seeds=(0, 1))
    store = RunStore(tmp_path / "runs")
    started = []
    out = run_study(store, steps=8, spec=spec, on_event=lambda e: e["type"] == "start" and started.append(
        (e["width"], e["n_members"])))
    eta0, lam0 = out["proxy"]["eta0"], out["proxy"]["lam0"]
    outside = [lr for lr in transfer_lrs(eta0, spec) if lr not in spec["proxy_lrs"]]
    d0 = [(w, n) for w, n in started if w == 32]
    grid = len(spec["proxy_lrs"]) * len(spec["proxy_wds"]) * 2
    assert d0 == [(32, grid)] + ([(32, 2 * len(outside))] if outside else [])  # nothing at d0 trains twice
    recs = {r["run_id"]: r for r in store.records()}
    rows = [r for r in out["runs"] if r["width"] == 32]
    assert {r["rule"] for r in rows} == {"mup", "wd", "indep", "fitted"}
    for r in rows:  # every rule reports all of its d0 runs
        assert len([x for x in rows if x["rule"] == r["rule"]]) == len(spec["lr_octaves"]) * 2
        rec = recs[r["run_id"]]
        if r["rule"] == "mup":
            assert "twin_of" not in rec
            continue
        if r["lr"] in outside and r["rule"] != "fitted":  # trained with mup's run, in one ensemble member
            assert "twin_of" not in rec
            twin = next(x for x in recs.values() if x["rule"] == "mup" and x["width"] == 32 and
                        (x["lr"], x["wd"], x["seed"]) == (rec["lr"], rec["wd"], rec["seed"]))
        else:
            twin = recs[rec["twin_of"]]
        assert twin["rule"] == "mup" and (twin["lr"], twin["wd"], twin["seed"]) == (rec["lr"], rec["wd"], rec["seed"])
        assert rec["final_loss"] == twin["final_loss"] and rec["top_sv"] == twin["top_sv"]
        assert rec["rule"] == r["rule"] and (rec.get("b") is not None) == (r["rule"] == "fitted")
        assert store.get(r["run_id"]) is not None and store.spectra(r["run_id"])["steps"].size
        assert store.weights(r["run_id"]).keys() == store.weights(twin["run_id"]).keys()
    assert sum(n for w, n in started if w == 64) == 2 * (3 * len(spec["lr_octaves"]) + len(spec["fitted_octaves"]))
    assert store.check()["damaged"] == []
    # a rerun trains nothing; a plan of the d0 fitted runs alone finds them stored
    again = []
    run_study(store, steps=8, spec=spec, on_event=lambda e: e["type"] == "start" and again.append(e))
    assert again == []
    fitted_d0 = [c for c in fitted_configs(eta0, lam0, 8, spec, "fitted", out["fitted"]["b"])[0] if c.width == 32]
    assert fitted_d0 and plan(fitted_d0, store)[1] == []
