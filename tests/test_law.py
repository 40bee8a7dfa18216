"""The measured law sigma ~ eta^a lam^-b (wdscale.science.law): planted exponents come back, identical runs count once,
Kosson's balance predicts the stationary norm of a toy whose update is known, and the fitted rule's exponent is
e_mup / b_hat."""
import math

import numpy as np
import pytest

from wdscale.science import law
from wdscale.science.regimes import fitted_b, fitted_b_sqrt

NAMES = {"w1_0": "matrix", "w2_0": "matrix", "w1_1": "matrix", "w2_1": "matrix", "w_in": "embedding"}
ETAS = (2e-3, 4e-3, 8e-3, 1.6e-2)
LAMS = (0.5, 1.0, 2.0, 4.0)


def _run(i, width, eta0, lam0, rule="mup", seed=0, base=32, steps=4000, exps=None, gamma=0.0, noise=0.0, rng=None,
         snapshots=None):
    """A record + spectra whose every hidden matrix has sigma_i = C eta^a lam^-b d^gamma * shape_i, eta, lam the
    matrix class's (mup: eta = eta0/m); ``exps`` {class: (a, b)} (default W1 and W2 both a = 0.3, b = 0.7).
    At a snapshot step t the spectrum is the final one (S counts up to t)."""
    exps = exps or {"W1": (0.3, 0.7), "W2": (0.3, 0.7)}
    m = width / base
    eta = eta0 / m
    lam = lam0 * {"mup": 1.0, "wd": math.sqrt(m), "indep": m}[rule]
    shape = np.linspace(1.0, 0.2, width)
    snapshots = snapshots or (steps,)
    sp, top = {"steps": np.array((0,) + tuple(snapshots))}, {}
    for n, c in NAMES.items():
        if c != "matrix":
            continue
        a, b = exps["W1" if n.startswith("w1") else "W2"]
        s = 0.7 * eta ** a * lam ** -b * width ** gamma
        if rng is not None:
            s *= math.exp(noise * rng.standard_normal())
        sp[n] = np.stack([shape * 0.05] + [shape * s] * len(snapshots))
        top[n] = float(s)
    rec = {"run_id": f"{i:016x}", "status": "done", "diverged": False, "rule": rule, "width": width,
           "base_width": base, "lr": eta0, "wd": lam0, "seed": seed, "data_seed": 0, "steps": steps,
           "schedule": "constant", "warmup": 0.0, "model": "synthetic", "matrix_lr": eta, "matrix_wd": lam,
           "readout_mult": 1 / m, "param_class": dict(NAMES), "top_sv": top,
           "groups": {"matrix": {"lr": eta, "wd": lam, "steps_over_tau": steps * eta * lam}}}
    return rec, sp


def _study(runs):
    recs, spectra = [], {}
    for rec, sp in runs:
        recs.append(rec)
        spectra[rec["run_id"]] = sp
    return recs, spectra


def _proxy_grid(start=0, **kw):
    return [_run(start + k, 32, e, l, **kw) for k, (e, l) in enumerate((e, l) for e in ETAS for l in LAMS)]


def test_fit_recovers_planted_exponents_per_class_and_for_every_quantity():
    rng = np.random.default_rng(0)
    recs, spectra = _study(_proxy_grid(exps={"W1": (0.3, 0.7), "W2": (0.6, 0.4)}, noise=0.02, rng=rng))
    L = law.measure_law(recs, spectra, n_boot=200)
    assert L["scope"] == "proxy" and L["pooled"]["n"] == 16 and L["min_S"] == 3
    w1, w2 = L["classes"]["W1"], L["classes"]["W2"]
    assert w1["a"] == pytest.approx(0.3, abs=0.03) and w1["b"] == pytest.approx(0.7, abs=0.03)
    assert w2["a"] == pytest.approx(0.6, abs=0.03) and w2["b"] == pytest.approx(0.4, abs=0.03)
    assert w1["a_ci"][0] < 0.3 < w1["a_ci"][1] and w1["b_ci"][0] < 0.7 < w1["b_ci"][1]
    # the whole spectrum scales alike here, so ||W||_F and the bulk carry the same exponents
    assert w1["fro"]["a"] == pytest.approx(0.3, abs=0.03) and w1["bulk"]["b"] == pytest.approx(0.7, abs=0.03)
    assert law.holds(w1) is False and law.holds(w2) is False
    # pooled (geometric mean over the matrices) the two wrong laws average to a = 0.45, b = 0.55: the reason the
    # fit is per class
    assert law.holds(L["pooled"]) is True
    assert "holds for all hidden matrices pooled" in L["sentence"] and "but not for W1 (a 0.3" in L["sentence"]


def test_the_sqrt_law_is_recognised_where_it_holds_and_named_where_not():
    recs, spectra = _study(_proxy_grid(exps={"W1": (0.5, 0.5), "W2": (0.5, 0.2)}))
    L = law.measure_law(recs, spectra, n_boot=50)
    assert law.holds(L["classes"]["W1"]) is True and law.holds(L["classes"]["W2"]) is False
    s = L["sentence"]
    assert "holds for W1 (a 0.50, b 0.50)" in s and "not for W2 (a 0.50, b 0.20)" in s
    both = law.where_law_holds({"x": law.measure_law(*_study(_proxy_grid(exps={"W1": (0.5, 0.5),
                                                                                 "W2": (0.5, 0.5)})), n_boot=20),
                                "y": L})
    assert both.startswith("σ_top ∝ √(η/λ) holds") and "in x (a 0.50, b 0.50)" in both and "not in y" in both


def test_S_filter_and_identical_runs_count_once():
    runs = _proxy_grid()
    # the same computations stored again under other rule names (every mu-P rule is one model at m = 1)
    dup = [_run(100 + k, 32, r[0]["lr"], r[0]["wd"], rule="mup") for k, r in enumerate(runs)]
    for (rec, _), (orig, _) in zip(dup, runs):
        rec["rule"] = "wd"
    # short runs (S < 3) obeying another law must not move the fit
    short = [_run(200 + k, 32, e, l, steps=20, exps={"W1": (1.0, 0.0), "W2": (1.0, 0.0)})
             for k, (e, l) in enumerate((e, l) for e in ETAS for l in LAMS)]
    recs, spectra = _study(runs + dup + short)
    n_short = sum(r["groups"]["matrix"]["steps_over_tau"] < 3 for r in recs)
    assert n_short == 16
    L = law.measure_law(recs, spectra, n_boot=50)
    assert L["pooled"]["n"] == 16  # duplicates once, every short run out
    assert L["pooled"]["a"] == pytest.approx(0.3, abs=1e-6) and L["pooled"]["b"] == pytest.approx(0.7, abs=1e-6)
    everything = law.measure_law(recs, spectra, min_S=0.0, n_boot=20)["pooled"]
    assert everything["a"] > 0.35  # without the filter the short runs' law leaks in: the filter is doing work


def test_one_lam_at_d0_falls_back_to_every_width_with_lam_varying_across_rules():
    runs = []
    k = 0
    for w in (32, 64, 128):
        for rule in ("mup", "wd", "indep"):
            for e in ETAS:
                runs.append(_run(k, w, e, 2.0, rule=rule, gamma=0.4))
                k += 1
    recs, spectra = _study(runs)
    assert law.choose_scope(recs) == "all"
    L = law.measure_law(recs, spectra, n_boot=50)
    assert L["scope"] == "all"
    assert L["pooled"]["a"] == pytest.approx(0.3, abs=1e-6) and L["pooled"]["b"] == pytest.approx(0.7, abs=1e-6)
    only_d0 = law.measure_law(recs, spectra, scope="proxy", n_boot=20)["pooled"]
    assert not only_d0["identifiable"] and math.isnan(only_d0["b"])  # one lam: b cannot be told from the intercept


def test_law_over_time_reads_every_snapshot_and_is_empty_for_a_final_spectrum():
    runs = _proxy_grid(snapshots=(250, 1000, 4000))
    recs, spectra = _study(runs)
    over = law.law_over_time(recs, spectra, n_boot=20)
    assert [o["step"] for o in over] == [250, 1000, 4000]
    # S counts up to each snapshot: fewer runs pass S >= 3 early
    assert over[0]["n"] < over[-1]["n"] == 16
    assert all(o["b"] == pytest.approx(0.7, abs=1e-6) for o in over if o["n"] >= 6)
    recs1, spectra1 = _study(_proxy_grid())
    assert law.law_over_time(recs1, spectra1) == []  # one snapshot besides step 0: nothing over time


# -- Kosson's balance ---------------------------------------------------------------------------------------------
def _simulate(u_of, eta, lam, n, steps, seed=0):
    """torch AdamW's step W' = (1 - eta lam) W - eta u on a flat vector; the last half's mean ||W||, RMS of u and
    cos(W, u)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(n) * 0.01
    fro, rms2, cos = [], [], []
    for t in range(steps):
        u = u_of(t, W, rng)
        if t >= steps // 2:
            fro.append(np.linalg.norm(W))
            rms2.append(np.mean(u * u))
            cos.append(W @ u / (np.linalg.norm(W) * np.linalg.norm(u)))
        W = (1 - eta * lam) * W - eta * u
    return float(np.mean(fro)), math.sqrt(np.mean(rms2)), float(np.mean(cos))


def test_balance_predicts_a_random_walk_norm():
    eta, lam, n = 1e-2, 0.5, 4096
    meas, rms, cos = _simulate(lambda t, W, rng: rng.choice([-1.0, 1.0], n), eta, lam, n, 3000)
    assert rms == pytest.approx(1.0) and abs(cos) < 0.05
    pred = law.predict_norm(rms, cos, eta, lam, n)
    assert pred == pytest.approx(meas, rel=0.02)
    assert pred == pytest.approx(math.sqrt(eta * n / (2 * lam)), rel=0.05)  # the sqrt(eta/lam) case


def test_balance_predicts_a_consistent_update_norm_without_eta():
    eta, lam, n = 1e-2, 0.5, 1024
    u0 = np.random.default_rng(1).choice([-1.0, 1.0], n) * 0.7
    meas, rms, cos = _simulate(lambda t, W, rng: u0, eta, lam, n, 3000)
    assert cos == pytest.approx(-1.0, abs=1e-6)
    pred = law.predict_norm(rms, cos, eta, lam, n)
    assert pred == pytest.approx(meas, rel=1e-3)
    assert pred == pytest.approx(np.linalg.norm(u0) / lam, rel=1e-9)  # W = -u/lam: lam^-1, no eta
    assert law.predict_norm(rms, -1.0, 4 * eta, lam, n) == pytest.approx(pred, rel=1e-9)


def test_balance_predicts_a_mixed_update_where_the_noise_only_formula_fails():
    eta, lam, n = 1e-2, 0.5, 2048
    sig = np.random.default_rng(2).standard_normal(n)

    def u(t, W, rng):
        v = 0.3 * sig + rng.standard_normal(n)
        return v / np.sqrt(np.mean(v * v))
    meas, rms, cos = _simulate(u, eta, lam, n, 4000)
    assert cos < -0.05  # W has grown along -signal
    assert law.predict_norm(rms, cos, eta, lam, n) == pytest.approx(meas, rel=0.03)
    assert law.predict_norm(rms, 0.0, eta, lam, n) < 0.9 * meas  # ignoring the alignment misses it


def test_balance_monitor_reads_u_back_from_a_real_ensemble_step():
    """On the synthetic core (a few steps), u recovered from the step reproduces W' exactly."""
    from wdscale.training.sweep import expand_grid
    from wdscale.training.train import TrainOptions, train_ensemble

    cs = expand_grid("synthetic", [32], 32, ["mup"], [8e-3], [1.0, 3.0], 6, [0], data_seed=0)
    mon = law.BalanceMonitor(cs, every=2)
    train_ensemble(cs, TrainOptions(callbacks=[mon]))
    assert mon.rows and {r["member"] for r in mon.rows} == {0, 1}
    for r in mon.rows:
        assert 0.05 < r["update_rms"] < 5 and -1 <= r["cos_wu"] <= 1
        assert r["eta"] == pytest.approx(8e-3) and r["lam"] in (1.0, 3.0)
    rows = law.balance_rows(mon.rows, cs)
    assert {r["wd"] for r in rows} == {1.0, 3.0} and all(r["predicted"] > 0 for r in rows)


# -- the rule from the measured law ----------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b,gamma", [(0.3, 0.7, 0.8), (0.5, 0.5, 0.75), (0.6, 0.35, 0.9)])
def test_fitted_rule_exponent_is_e_mup_over_b_hat(a, b, gamma):
    exps = {"W1": (a, b), "W2": (a, b)}
    proxy, _ = _study(_proxy_grid(exps=exps, gamma=gamma))
    eta0 = ETAS[2]
    transfer, _ = _study([_run(500 + k, w, eta0, 1.0, rule=r, exps=exps, gamma=gamma)
                          for k, (w, r) in enumerate((w, r) for w in (32, 64) for r in ("mup", "wd"))])
    f = fitted_b(transfer, eta0, n_boot=50, proxy=proxy)
    e_mup = gamma - a  # under mup eta ~ 1/d, lam fixed
    assert f["e_mup"] == pytest.approx(e_mup, abs=1e-6) and f["b_hat"] == pytest.approx(b, abs=1e-6)
    assert f["b"] == round(e_mup / b, 2) and f["b_hat_scope"] == "proxy" and f["min_S"] == 3
    assert f["b"] == round(law.fitted_exponent(e_mup, b), 2)
    old = fitted_b_sqrt(transfer, eta0, n_boot=50)  # the sqrt law's 2 alpha_hat - 1 = 2 e_mup
    assert old["b"] == round(2 * e_mup, 2) == f["b_sqrt"]
    if a == b == 0.5:
        assert f["b"] == old["b"]  # the paper's recipe is the measured law's at a = b = 1/2
    else:
        assert f["b"] != old["b"]
    # the rule holds sigma_top flat: planted sigma under lam ~ d^beta, eta ~ 1/d is width-invariant
    beta = e_mup / b
    sig = [(w / 32) ** -a * ((w / 32) ** beta) ** -b * w ** gamma for w in (32, 64, 128)]
    assert np.ptp(np.log(sig)) == pytest.approx(0.0, abs=1e-9)


def test_fitted_rule_refuses_without_a_lam_exponent():
    proxy, _ = _study(_proxy_grid(exps={"W1": (0.5, 0.0), "W2": (0.5, 0.0)}))  # lam does nothing
    transfer, _ = _study([_run(500 + k, w, ETAS[2], 1.0, exps={"W1": (0.5, 0.0), "W2": (0.5, 0.0)})
                          for k, w in enumerate((32, 64))])
    assert fitted_b(transfer, ETAS[2], n_boot=20, proxy=proxy) is None
    with pytest.raises(ValueError):
        law.fitted_exponent(0.3, 0.0)
