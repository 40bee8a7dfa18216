import math

import pytest

from wdscale.science.analysis import optimum
from wdscale.core.rules import resolve
from wdscale.training.train import RunConfig
from wdscale.science.verdict import MIN_TAUS, horizon_check, horizon_warnings, sweep_horizon_warnings, transfer_verdict

CURV = 0.1  # loss = 1 + CURV * (octaves from the optimum)^2
# Planted runs are 10^6 steps long: >= 3 tau for every lr of the grid, so only the planted optima decide.
LRS = [2.0 ** k for k in range(-11, -3)]  # 2^-11 .. 2^-4


def planted_loss(lr, opt):
    return 1.0 + CURV * (math.log2(lr) - math.log2(opt)) ** 2


def make_record(width, lr, loss, rule="mup", wd=0.1, steps=10**6, evals=None, diverged=False, base_width=64):
    cfg = RunConfig(model="synthetic", width=width, base_width=base_width, rule=rule, lr=lr, wd=wd, steps=steps)
    rec = dict(cfg.canonical())
    rec.update(run_id=cfg.run_id, status="done", final_loss=None if diverged else loss, diverged=diverged,
               diverged_step=5 if diverged else None, evals=evals or {str(steps): None if diverged else loss},
               groups=cfg.resolved().table(steps))
    return rec


def planted_sweep(opt_of_width, rule="mup", **kw):
    return [make_record(w, lr, planted_loss(lr, opt), rule=rule, **kw) for w, opt in opt_of_width.items()
            for lr in LRS]


def test_parabola_in_log_lr_gives_its_vertex():
    true = 3.7e-3  # between grid points
    xs = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
    o = optimum(xs, [(math.log(x) - math.log(true)) ** 2 + 0.3 for x in xs])
    assert o["method"] == "quadratic"
    assert o["x_opt"] == pytest.approx(true, rel=1e-9)
    assert o["loss_opt"] == pytest.approx(0.3, abs=1e-12)


def test_planted_drift_and_regret():
    # optimum halves with each doubling of width: drift -1 octave/doubling
    opts = {64: 2.0 ** -7, 128: 2.0 ** -8, 256: 2.0 ** -9}
    (v,) = transfer_verdict(planted_sweep(opts), threshold=0.5)
    assert v["rule"] == "mup" and v["wd"] == 0.1 and v["widths"] == [64, 128, 256]
    for w, o in opts.items():
        assert v["optima"][w]["x_opt"] == pytest.approx(o, rel=1e-9)
    assert v["drift"] == pytest.approx(-1.0, abs=1e-9)
    # trained at the proxy's 2^-7, width 128 is 1 octave off its optimum, width 256 two octaves
    assert v["regret"][128] == pytest.approx(CURV * 1 ** 2, abs=1e-12)
    assert v["regret"][256] == pytest.approx(CURV * 2 ** 2, abs=1e-12)
    assert v["max_regret"] == pytest.approx(CURV * 4, abs=1e-12)
    assert v["verdict"] == "FAIL" and v["passed"] is False and v["threshold"] == 0.5


def test_threshold_and_regret_threshold_decide():
    opts = {64: 2.0 ** -7, 128: 2.0 ** -7.5, 256: 2.0 ** -8}  # -0.5 octave/doubling, off-grid optima
    recs = planted_sweep(opts)
    assert transfer_verdict(recs)[0]["drift"] == pytest.approx(-0.5, abs=1e-9)
    assert transfer_verdict(recs, threshold=0.6)[0]["verdict"] == "PASS"
    assert transfer_verdict(recs, threshold=0.4)[0]["verdict"] == "FAIL"
    v = transfer_verdict(recs, threshold=0.6)[0]
    # width 256: optimum 2^-8 is on the grid, proxy's 2^-7 is one octave away
    assert v["regret"][256] == pytest.approx(CURV, abs=1e-12)
    assert transfer_verdict(recs, threshold=0.6, regret_threshold=CURV * 1.01)[0]["verdict"] == "PASS"
    assert transfer_verdict(recs, threshold=0.6, regret_threshold=CURV * 0.99)[0]["verdict"] == "FAIL"


def test_perfect_transfer_passes_with_zero_regret():
    (v,) = transfer_verdict(planted_sweep({64: 2.0 ** -7, 128: 2.0 ** -7, 256: 2.0 ** -7}))
    assert v["drift"] == pytest.approx(0.0, abs=1e-9)
    assert all(r == pytest.approx(0.0, abs=1e-12) for r in v["regret"].values())
    assert v["verdict"] == "PASS"


def test_rules_and_wds_are_judged_separately():
    recs = planted_sweep({64: 2.0 ** -7, 128: 2.0 ** -7}, rule="wd") + \
        planted_sweep({64: 2.0 ** -7, 128: 2.0 ** -8}, rule="mup") + \
        planted_sweep({64: 2.0 ** -6, 128: 2.0 ** -8}, rule="mup", wd=0.3)
    vs = {(v["rule"], v["wd"]): v for v in transfer_verdict(recs)}
    assert set(vs) == {("wd", 0.1), ("mup", 0.1), ("mup", 0.3)}
    assert vs["wd", 0.1]["drift"] == pytest.approx(0.0, abs=1e-9)
    assert vs["mup", 0.1]["drift"] == pytest.approx(-1.0, abs=1e-9)
    assert vs["mup", 0.3]["drift"] == pytest.approx(-2.0, abs=1e-9)


def test_diverged_runs_are_excluded_and_unsafe():
    opts = {64: 2.0 ** -7, 128: 2.0 ** -8}
    recs = planted_sweep(opts)
    # the two largest lrs diverge at width 128: the optimum fit ignores them
    for r in recs:
        if r["width"] == 128 and r["lr"] >= 2.0 ** -5:
            r.update(final_loss=None, diverged=True)
    (v,) = transfer_verdict(recs)
    assert v["optima"][128]["x_opt"] == pytest.approx(2.0 ** -8, rel=1e-9)
    assert v["optima"][128]["n_diverged"] == 2
    # now the lr right above the proxy optimum diverges at width 128: transferring there is infinitely bad
    for r in recs:
        if r["width"] == 128 and r["lr"] == 2.0 ** -6:
            r.update(final_loss=None, diverged=True)
    recs2 = [r for r in recs if not (r["width"] == 128 and r["lr"] == 2.0 ** -7)]
    (v2,) = transfer_verdict(recs2)
    assert math.isinf(v2["regret"][128])


def test_edge_optimum_is_inconclusive():
    (v,) = transfer_verdict(planted_sweep({64: 2.0 ** -7, 128: 2.0 ** -12}))  # below the grid
    assert v["verdict"] == "INCONCLUSIVE" and v["passed"] is None
    assert any("edge" in n for n in v["notes"])


def test_too_few_widths_or_lrs_gives_no_verdict():
    assert transfer_verdict(planted_sweep({64: 2.0 ** -7})) == []
    few = [r for r in planted_sweep({64: 2.0 ** -7, 128: 2.0 ** -7}) if r["lr"] in LRS[:2]]
    assert transfer_verdict(few) == []


def test_wd_verdict_on_a_lambda_grid():
    wds = [0.025, 0.05, 0.1, 0.2, 0.4]
    opt = {64: 0.1, 128: 0.2}  # lambda optimum doubles with width: +1 octave per doubling
    recs = [make_record(w, 1e-2, planted_loss(wd, opt[w]), wd=wd) for w in opt for wd in wds]
    (v,) = transfer_verdict(recs, param="wd")
    assert v["lr"] == 1e-2 and v["param"] == "wd"
    assert v["drift"] == pytest.approx(1.0, abs=1e-9)


def test_horizon_check_reads_intermediate_evals():
    steps = 800
    # the optimum moves with training length: early it is the same at every width, at the end it drifts
    opt_at = {200: {64: 2.0 ** -7, 128: 2.0 ** -7}, 400: {64: 2.0 ** -7, 128: 2.0 ** -7.5},
              800: {64: 2.0 ** -7, 128: 2.0 ** -8}}
    recs = []
    for w in (64, 128):
        for lr in LRS:
            evals = {str(s): planted_loss(lr, opt_at.get(s, opt_at[200])[w]) for s in range(100, 801, 100)}
            recs.append(make_record(w, lr, evals["800"], steps=steps, evals=evals))
    hc = horizon_check(recs)
    assert [h["fraction"] for h in hc] == [0.25, 0.5, 1.0]
    assert [h["step"] for h in hc] == [200, 400, 800]
    assert [h["drift"] for h in hc] == pytest.approx([0.0, -0.5, -1.0], abs=1e-9)
    assert hc[2]["opt"][128] == pytest.approx(2.0 ** -8, rel=1e-9)
    # step= in transfer_verdict reads the same evals
    assert transfer_verdict(recs, step=400)[0]["drift"] == pytest.approx(-0.5, abs=1e-9)


def test_run_diverged_late_still_counts_early():
    recs = planted_sweep({64: 2.0 ** -7, 128: 2.0 ** -7}, steps=800,
                         evals=None)
    for r in recs:
        r["evals"] = {"200": r["final_loss"], "800": r["final_loss"]}
    bad = next(r for r in recs if r["width"] == 128 and r["lr"] == 2.0 ** -7)
    bad.update(diverged=True, final_loss=None, diverged_step=500)
    early = transfer_verdict(recs, step=200)[0]
    assert early["optima"][128]["x_opt"] == pytest.approx(2.0 ** -7, rel=1e-9)  # not diverged yet at 200
    assert transfer_verdict(recs)[0]["optima"][128]["n_diverged"] == 1


@pytest.mark.parametrize("steps, warns", [(11, True), (12, False), (13, False)])
def test_tau_warning_fires_exactly_below_threshold(steps, warns):
    res = resolve("mup", 64, 64, 0.5, 0.5)  # lr*wd = 0.25 exactly: tau = 4 steps, 3 tau = 12 steps
    assert MIN_TAUS == 3.0
    assert res.table(steps)["matrix"]["steps_over_tau"] == steps / 4
    assert bool(horizon_warnings(res, steps)) is warns


def test_tau_warning_uses_the_matrix_class_at_width():
    # mu-P at m = 4 divides the matrix lr by 4: tau grows 4x although the proxy's lr*wd is the same
    assert not horizon_warnings(resolve("mup", 64, 64, 0.5, 0.5), 12)
    assert horizon_warnings(resolve("mup", 256, 64, 0.5, 0.5), 47)
    assert not horizon_warnings(resolve("mup", 256, 64, 0.5, 0.5), 48)
    assert horizon_warnings(resolve("mup", 64, 64, 0.5, 0.0), 10**6)  # no decay: tau = inf


def test_sweep_horizon_warnings_one_line_per_rule():
    cfgs = [RunConfig(model="synthetic", width=w, base_width=64, rule=r, lr=0.5, wd=0.5, steps=20)
            for w in (64, 256) for r in ("mup", "indep")]
    msgs = sweep_horizon_warnings(cfgs)
    # mup at width 256: tau = 16 > 20/3; indep keeps lr*wd fixed, so every indep run reaches 5 tau
    assert len(msgs) == 1 and msgs[0].startswith("rule mup: 1 of 2 runs") and "width 256" in msgs[0]


def test_runs_of_an_earlier_model_version_are_another_study():
    """A store from before the model change keeps its runs, but they never mix with the new ones."""
    from wdscale.show.export import group_studies

    new = planted_sweep({64: 2.0 ** -7, 128: 2.0 ** -7})
    old = [{**r, "run_id": r["run_id"][::-1]} for r in new]
    for r in old:
        r.pop("model_version")
    studies = group_studies(new + old)
    assert len(studies) == 2 and any("earlier model version" in k for k in studies)
    assert len(transfer_verdict(new + old)) == 2


def test_swept_keeps_only_real_curves():
    from wdscale.science.analysis import swept

    recs = planted_sweep({64: 2.0 ** -7})  # 8 lrs at one wd: a curve over lr, a single point over wd
    assert len(swept(recs, "lr")) == len(recs) and swept(recs, "wd") == []


def test_final_spectrum_curves_rescale_by_the_class_eta_over_lam():
    import numpy as np

    from wdscale.science.analysis import final_spectrum_curves

    rec = make_record(128, 2e-2, 1.0, rule="mup", wd=4.0, base_width=64)
    rec["param_class"] = {"w": "matrix"}
    sv = np.array([[4.0, 2.0, 1.0], [8.0, 4.0, 2.0]])  # two snapshots; the last is the final spectrum
    raw, resc, norm = final_spectrum_curves([rec], {rec["run_id"]: {"w": sv}}, "w")
    eta, lam = rec["groups"]["matrix"]["lr"], rec["groups"]["matrix"]["wd"]  # 1e-2, 4 under mup at m = 2
    assert eta == 1e-2 and lam == 4.0
    assert list(raw[0]["y"]) == [8.0, 4.0, 2.0] and list(norm[0]["y"]) == [1.0, 0.5, 0.25]
    np.testing.assert_allclose(resc[0]["y"], np.array([8.0, 4.0, 2.0]) / np.sqrt(eta / lam))
    np.testing.assert_allclose(resc[0]["x"], [1 / 3, 2 / 3, 1.0])
    assert final_spectrum_curves([rec], {rec["run_id"]: {}}, "w") == ([], [], [])


def test_norm_rows_compare_with_the_steady_state_prediction():
    import math as _m

    from wdscale.science.analysis import median_norm_ratio, norm_rows

    long_run = make_record(64, 1e-2, 1.0, rule="wd", wd=2.0)  # 10^6 steps: far past 3 tau
    long_run["param_class"] = {"w": "matrix", "g": "vector"}
    eta, lam = long_run["groups"]["matrix"]["lr"], long_run["groups"]["matrix"]["wd"]
    pred = _m.sqrt(eta * 4096 / (2 * lam))
    rows = norm_rows([long_run], {long_run["run_id"]: {"w": (0.9 * pred, 4096), "g": (1.0, 64)}})
    assert len(rows) == 1 and rows[0]["param"] == "w"  # the vector class has no decay: no prediction
    assert rows[0]["predicted"] == _m.sqrt(eta * 4096 / (2 * lam))
    assert median_norm_ratio(rows) == 0.9 * pred / rows[0]["predicted"]
    assert median_norm_ratio([{**rows[0], "steps_over_tau": 1.0}]) is None
