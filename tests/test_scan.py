"""The lam-exponent scan on planted data: known drift(q) and sigma_top exponent(q) lines, known crossings.

The planted loss of each run is a parabola in log2 lr around an optimum that moves drift(q) octaves per width
doubling, plus a seed's own offset (the same under every q: a seed is one init everywhere); sigma_top grows with
width as d^sigma(q) times sqrt(lr / eta0), so an exponent read anywhere but at the fixed lr eta0 comes out wrong.
"""
import json
import math

import numpy as np
import pytest

from wdscale.models.config import RunConfig
from wdscale.science.scan import (QS, crossing, format_scan, mechanism, predictors, q_of, recipe, scan_configs,
                                  scan_summary, scoreboard)

ETA0, LAM0, D0 = 0.01, 1.0, 32
WIDTHS = (32, 64, 128)
OCTAVES = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5)  # 8 lrs per width
SEEDS = (0, 1, 2)
TWINS = {0.0: "mup", 0.5: "wd", 1.0: "indep"}


def record(q, width, lr, seed, loss, sv, wd=LAM0, steps=2000):
    rule = TWINS.get(q, "custom")
    cfg = RunConfig(model="synthetic", width=width, base_width=D0, rule=rule, lr=lr, wd=wd, steps=steps, seed=seed,
                    **({} if rule != "custom" else {"a": 1.0, "b": q}))
    g = cfg.resolved().groups["matrix"]
    return {**cfg.canonical(), "run_id": cfg.run_id, "status": "done", "final_loss": loss, "diverged": False,
            "groups": cfg.decay_table(), "matrix_lr": g["lr"], "matrix_wd": g["wd"],
            "top_sv": {"b0_w1": 3.0 * sv * (width / D0) ** 0.05, "b0_w2": 2.0 * sv * (width / D0) ** -0.05,
                       "b0_g": 1.0},
            "param_class": {"b0_w1": "matrix", "b0_w2": "matrix", "b0_g": "vector"}}


def planted(drift, sigma, qs=QS, seeds=SEEDS, shared=0.04, own=0.02, sv_noise=0.02, rng_seed=0):
    """Records of a scan whose optimum drifts drift(q) per doubling and whose sigma_top ~ d^sigma(q) at eta0."""
    rng = np.random.default_rng(rng_seed)
    off = {(s, w): rng.normal(0, shared) for s in seeds for w in WIDTHS}  # a seed's init moves its optimum
    out = []
    for q in qs:
        for w in WIDTHS:
            for s in seeds:
                opt = drift(q) * math.log2(w / D0) + off[s, w] + (rng.normal(0, own) if w > D0 else 0.0)
                sv = math.exp(rng.normal(0, sv_noise)) * (w / D0) ** sigma(q)
                for o in OCTAVES:
                    lr = ETA0 * 2 ** o
                    out.append(record(q, w, lr, s, 1.0 + 0.02 * (o - opt) ** 2, sv * math.sqrt(lr / ETA0)))
    return out


def drift_line(q):
    return 0.6 - 0.5 * q  # crosses zero at q = 1.2


def sigma_line(q):
    return 0.45 - 0.5 * q  # crosses zero at q = 0.9


@pytest.fixture(scope="module")
def summary():
    return scan_summary(planted(drift_line, sigma_line), eta0=ETA0, lam0=LAM0, target_width=512, n_boot=100)


def test_both_planted_crossings_are_recovered_within_narrow_cis(summary):
    lo, hi = summary["q_drift_ci"]
    assert summary["q_drift"] == pytest.approx(1.2, abs=0.08)
    assert lo <= 1.2 <= hi and hi - lo < 0.4
    lo, hi = summary["q_sigma_ci"]
    assert summary["q_sigma"] == pytest.approx(0.9, abs=0.05)
    assert lo <= 0.9 <= hi and hi - lo < 0.2
    assert summary["q_drift_reason"] is None and summary["q_sigma_reason"] is None


def test_rows_carry_the_planted_lines_per_q_per_class_and_per_width_pair(summary):
    rows = {r["q"]: r for r in summary["rows"]}
    assert sorted(rows) == list(QS)
    assert [rows[q]["rule"] for q in (0.0, 0.25, 0.5, 1.0)] == ["mup", "custom", "wd", "indep"]
    for q, r in rows.items():
        assert r["drift"] == pytest.approx(drift_line(q), abs=0.06)
        assert r["drift_ci"][0] < r["drift"] < r["drift_ci"][1]
        # at the fixed lr eta0: read at each width's optimum it would be off by drift(q)/2 (sigma ~ sqrt(lr))
        assert r["sigma_exponent"] == pytest.approx(sigma_line(q), abs=0.03)
        assert r["sigma_per_class"]["W1"]["exponent"] == pytest.approx(sigma_line(q) + 0.05, abs=0.03)
        assert r["sigma_per_class"]["W2"]["exponent"] == pytest.approx(sigma_line(q) - 0.05, abs=0.03)
        assert [p["widths"] for p in r["pair_drifts"]] == [[32, 64], [64, 128]]
        for p in r["pair_drifts"]:
            assert p["drift"] == pytest.approx(drift_line(q), abs=0.15)
    assert rows[0.0]["transfers"] is False and rows[1.25]["transfers"] is True
    assert summary["named_transfer"] == ["indep"]  # drift +0.1: inside ±0.25, though q_drift* = 1.2


def test_mechanism_fails_with_the_planted_gap(summary):
    m = summary["mechanism"]
    assert m["holds"] is False
    assert m["gap"] == pytest.approx(0.3, abs=0.08)
    assert 0 < m["gap_ci"][0] < 0.3 < m["gap_ci"][1]
    assert m["drift_at_q_sigma"] == pytest.approx(drift_line(0.9), abs=0.06)  # what matching sigma_top leaves


def test_summary_is_json_and_reads_as_text(summary):
    s = json.loads(json.dumps(summary, allow_nan=False))
    assert {"q_drift", "q_drift_ci", "q_sigma", "q_sigma_ci", "rows", "mechanism", "scoreboard"} <= set(s)
    assert {"q", "drift", "drift_ci", "sigma_exponent", "sigma_exponent_ci", "pair_drifts"} <= set(s["rows"][0])
    assert {b["predictor"]: b["q"] for b in s["scoreboard"]}["constant_timescale"] == 1.0
    assert s["recipe"]["extrapolates"] is True  # 512 is past the widest width scanned (128)
    text = format_scan(s)
    assert "FAILS" in text and "no named rule transfers here" not in text and "1.2" in text


def test_a_line_that_never_crosses_is_none_with_its_side_and_edge_value():
    c = crossing(QS, [0.8 - 0.1 * q for q in QS], name="drift")
    assert c["q"] is None and c["ci"] is None and c["side"] == "above"
    assert c["reason"].startswith("drift stays positive: +0.65 at q = 1.5, the grid's upper edge")
    c = crossing(QS, [-0.2 - 0.1 * q for q in QS], name="drift")
    assert c["q"] is None and c["side"] == "below"
    assert c["reason"].startswith("drift stays negative: -0.20 at q = 0, the grid's lower edge")


def test_a_scan_whose_drift_never_crosses_reports_null_and_still_judges_the_mechanism():
    s = scan_summary(planted(lambda q: 0.8 - 0.1 * q, sigma_line, seeds=(0, 1)), eta0=ETA0, n_boot=60)
    assert s["q_drift"] is None and s["q_drift_ci"] is None
    assert "stays positive" in s["q_drift_reason"] and "upper edge" in s["q_drift_reason"]
    assert s["q_sigma"] == pytest.approx(0.9, abs=0.05)
    m = s["mechanism"]  # q_drift* is past 1.5 while q_sigma*'s CI lies well inside: the gap is > 0.5
    assert m["holds"] is False and m["gap"] is None and m["gap_ci"][0] > 0.5 and m["gap_ci"][1] is None
    assert all(b["error"] is None for b in s["scoreboard"])
    assert "stays positive" in format_scan(s)


def test_crossing_interpolates_linearly_and_its_ci_is_the_bootstrap_percentiles():
    qs = [0, 0.5, 1, 1.5]
    assert crossing(qs, [0.6 - 0.5 * q for q in qs])["q"] == pytest.approx(1.2, abs=1e-12)
    assert crossing(qs, [0.4, 0.1, -0.2, -0.5])["q"] == pytest.approx(0.5 + 0.5 * 0.1 / 0.3, abs=1e-12)
    es = np.linspace(-0.05, 0.05, 101)  # shifted lines cross at 1.2 + 2e
    c = crossing(qs, [0.6 - 0.5 * q for q in qs], [[0.6 + e - 0.5 * q for q in qs] for e in es])
    assert c["ci"] == pytest.approx([1.2 + 2 * es[2], 1.2 + 2 * es[98]], abs=1e-12)
    # a tenth of the resamples never cross: their crossing lies past the upper edge, and so does the CI's top
    es = np.concatenate([np.linspace(-0.05, 0.05, 90), np.full(10, 0.2)])
    c = crossing(qs, [0.6 - 0.5 * q for q in qs], [[0.6 + e - 0.5 * q for q in qs] for e in es])
    assert c["ci"][1] == math.inf and "upper edge" in c["note"]


def test_mechanism_holds_when_the_paired_gap_ci_contains_zero():
    boots = [(1.0 + e, 0.95 + e + 0.02 * k) for k, e in enumerate(np.linspace(-0.2, 0.2, 5))]
    m = mechanism({"q": 1.0}, {"q": 0.97}, boots)
    assert m["holds"] is True and m["gap"] == pytest.approx(0.03)
    assert m["gap_ci"][0] <= 0 <= m["gap_ci"][1]
    m = mechanism(1.2, 0.9, [(1.2 + e, 0.9 + e) for e in np.linspace(-0.3, 0.3, 50)])  # paired: the gap is 0.3
    assert m["holds"] is False and m["gap_ci"] == pytest.approx([0.3, 0.3])


def test_mechanism_is_untested_when_the_bootstrap_has_too_few_distinct_draws():
    # 2 seeds: every joint resample is (s0, s0), (s0, s1) or (s1, s1), 3 distinct draws however many are taken
    boots = [(1.5, 0.8), (1.4, 0.85), (1.6, 0.82)] * 100
    m = mechanism(1.5, 0.84, boots)
    assert m["holds"] is None and m["gap_ci"] is None and "3 distinct draws" in m["reason"]


def test_scan_configs_emit_the_named_rules_as_twins():
    from wdscale.models.presets import LADDER, PRESETS
    from wdscale.science.study import transfer_configs

    spec, eta0, lam0 = PRESETS["synthetic"], LADDER[7], 3.0
    notes = []
    cs = scan_configs(spec, eta0, lam0, QS + (12.0,), seeds=(0, 1), notes=notes)
    by_q = {}
    for c in cs:
        by_q.setdefault(q_of(c.canonical()), []).append(c)
    assert sorted(by_q) == list(QS)  # q = 12 is unusable (lr*wd >= 1 at width 128): left out, with its reason
    assert len(notes) == 1 and "12" in notes[0]
    for q, rule in TWINS.items():
        assert {c.rule for c in by_q[q]} == {rule}
        same = transfer_configs(eta0, lam0, None, {**spec, "seeds": (0, 1)}, rules=[rule])
        assert {c.run_id for c in by_q[q]} == {c.run_id for c in same}  # the cache's runs, not new ones
    for q in (0.25, 0.75, 1.25, 1.5):
        assert {(c.rule, c.a, c.b) for c in by_q[q]} == {("custom", 1.0, q)}
    for q, group in by_q.items():
        assert {c.width for c in group} == set(spec["widths"]) and {c.seed for c in group} == {0, 1}
        assert all(len({c.lr for c in group if c.width == w}) >= 5 for w in spec["widths"])
        assert {c.wd for c in group} == {lam0} and eta0 in {c.lr for c in group}


def test_q_of_reads_the_lambda_exponent():
    assert [q_of({"rule": r}) for r in ("mup", "wd", "indep", "sp", "fitted")] == [0.0, 0.5, 1.0, None, None]
    assert q_of({"rule": "custom", "a": 1.0, "b": 1.25}) == 1.25
    assert q_of({"rule": "custom", "a": 0.5, "b": 1.25}) is None


def test_predictors_come_from_the_proxy_grid_and_one_2d0_ensemble():
    # sigma_top = eta^0.6 lam^-0.35 d^0.9: under mup e_mup = 0.9 - 0.6 = 0.3, so the paper's 2 alpha - 1 = 2 e_mup = 0.6
    # and the measured law's e_mup / b_hat = 0.3 / 0.35; the loss's minimum on the proxy grid is (ETA0, LAM0)
    def rec(w, lr, wd, s):
        r = record(0.0, w, lr, s, 1.0 + math.log2(lr / ETA0) ** 2 + math.log2(wd / LAM0) ** 2, 1.0, wd=wd,
                   steps=20000)
        r["top_sv"] = {k: r["matrix_lr"] ** 0.6 * r["matrix_wd"] ** -0.35 * w ** 0.9 for k in ("b0_w1", "b0_w2")}
        return r
    proxy = [rec(D0, ETA0 * 2 ** k, wd, s) for k in (-1, 0, 1) for wd in (0.5, 1.0, 2.0) for s in (0, 1)]
    ens = [rec(2 * D0, ETA0 * 2 ** k, LAM0, s) for k in (-1, 0, 1) for s in (0, 1)]
    ens += [rec(4 * D0, ETA0, LAM0, 0)]  # wider runs are not the cheap ones: ignored
    p = {x["predictor"]: x["q"] for x in predictors(proxy, ens, n_boot=50)}
    assert p["paper_recipe"] == pytest.approx(0.6, abs=1e-6)
    assert p["measured_law"] == pytest.approx(0.3 / 0.35, abs=1e-6)
    assert (p["constant_timescale"], p["lam_fixed"]) == (1.0, 0.0)
    board = {b["predictor"]: b["error"] for b in scoreboard(predictors(proxy, ens, n_boot=50), {"q": 1.2})}
    assert board["paper_recipe"] == pytest.approx(-0.6, abs=1e-6) and board["lam_fixed"] == pytest.approx(-1.2)
    assert all(b["error"] is None for b in scoreboard([{"predictor": "x", "q": 0.5}], None))


def test_recipe_numbers_are_exact():
    r = recipe(0.01, 2.0, 32, 256, 1.2, [1.0, 1.4], max_width=128)
    assert r["eta"] == pytest.approx(0.00125, rel=1e-12)
    assert r["lam"] == pytest.approx(2.0 * 8 ** 1.2, rel=1e-12)
    assert r["lam_band"] == pytest.approx([16.0, 2.0 * 8 ** 1.4], rel=1e-12)
    assert r["extrapolates"] and "extrapolates beyond the widths measured (up to 128)" in r["sentence"]
    inside = recipe(0.01, 2.0, 32, 128, 1.2, [1.0, None], max_width=128)
    assert not inside["extrapolates"] and "extrapolates" not in inside["sentence"]
    assert inside["lam_band"] == [pytest.approx(8.0), None]  # an open CI bound stays open
    assert recipe(0.01, 2.0, 32, 256, None)["lam"] is None


def test_sigma_exponent_is_the_demos_number_for_the_named_rules():
    from wdscale.science.study import top_sv_exponents

    recs = planted(drift_line, sigma_line, seeds=(0, 1))
    rows = {r["q"]: r for r in scan_summary(recs, eta0=ETA0, n_boot=50)["rows"]}
    demo = top_sv_exponents([r for r in recs if r["rule"] in TWINS.values()], ETA0)
    for q, rule in TWINS.items():
        assert rows[q]["sigma_exponent"] == pytest.approx(demo[rule]["exponent"], rel=1e-12)


def test_one_seed_gives_crossings_without_a_ci_and_leaves_the_mechanism_untested():
    s = scan_summary(planted(drift_line, sigma_line, seeds=(0,)), eta0=ETA0, n_boot=50)
    assert s["q_drift"] == pytest.approx(1.2, abs=0.1) and s["q_drift_ci"] is None
    assert "fewer than two seeds" in s["q_drift_note"]
    assert s["mechanism"]["holds"] is None and "not testable" in s["mechanism"]["reason"]
    assert "UNTESTED" in format_scan(s)
