"""``wdscale scan`` end to end on a tiny synthetic scan (its JSON, its cache, its recipe, its bad input), the
report's ``scan``, the Which λ transfers page, and "no named rule transfers here" where no named rule's drift CI
lies inside the threshold (planted records: the report, the tour, Home's table, the Scan page)."""
import contextlib
import io
import json
import math
import sqlite3

import pytest
import torch

from wdscale import cli
from wdscale.science.scan import q_of, scan_configs
from wdscale.training.store import RunStore

from test_pages_glance import page_functions
from test_scan import planted, sigma_line

ARGS = ["scan", "--preset", "synthetic", "--widths", "32,64", "--steps", "6", "--proxy-lrs", "0.008,0.016,0.0226274",
        "--proxy-wds", "1,3", "--q", "0,0.5,1.5", "--seeds", "0,1", "--target-width", "256", "--threads", "1"]
NO_NAMED = "No named rule transfers here"


def scan_cli(out, *extra) -> tuple[int, str, str]:
    o, e = io.StringIO(), io.StringIO()
    n = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
            rc = cli.main(ARGS + ["--out", str(out), *extra])
    finally:
        torch.set_num_threads(n)
    return rc, o.getvalue(), e.getvalue()


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """One tiny real scan: d0 = 32 and 64, 6 steps, q = 0, 0.5, 1.5 x 7 lrs x 2 seeds; proxy grid 3 lrs x 2 lams."""
    out = tmp_path_factory.mktemp("scan") / "runs"
    rc, stdout, err = scan_cli(out, "--json")
    assert rc == 0, err
    return out, json.loads(stdout)


def spec():
    from wdscale.models.presets import PRESETS

    return {**PRESETS["synthetic"], "widths": (32, 64), "base_width": 32, "steps": 6, "seeds": (0, 1),
            "proxy_lrs": (0.008, 0.016, 0.0226274), "proxy_wds": (1.0, 3.0)}


def test_scan_json_has_the_runs_and_the_scan(scanned):
    _, s = scanned
    assert {"runs", "scan"} <= set(s)
    sc = s["scan"]
    for k in ("q_drift", "q_drift_ci", "q_sigma", "q_sigma_ci", "rows", "mechanism", "scoreboard"):
        assert k in sc, k
    assert {"holds", "gap", "gap_ci"} <= set(sc["mechanism"])
    assert [r["q"] for r in sc["rows"]] == [0.0, 0.5, 1.5]
    for r in sc["rows"]:
        assert {"q", "drift", "drift_ci", "sigma_exponent", "sigma_exponent_ci"} <= set(r)
    assert [b["predictor"] for b in sc["scoreboard"]] == ["paper_recipe", "measured_law", "constant_timescale",
                                                          "lam_fixed"]
    assert all({"predictor", "q", "error"} <= set(b) for b in sc["scoreboard"])
    for key in ("q_drift", "q_sigma"):  # a crossing outside the grid is null, with the reason beside it
        assert (sc[key] is None) == bool(sc[key + "_reason"]), key
    assert len(s["runs"]) == 3 * 2 * 7 * 2  # q x widths x lrs x seeds
    for r in s["runs"]:
        for k in ("rule", "b", "width", "lr", "seed", "final_loss", "top_sv", "param_class"):
            assert k in r, k
        assert r["b"] == r["q"] == q_of(r)
    assert {(r["q"], r["rule"]) for r in s["runs"]} == {(0.0, "mup"), (0.5, "wd"), (1.5, "custom")}


def test_twins_are_not_trained_twice_and_a_rerun_trains_nothing(scanned):
    from wdscale.science.study import proxy_configs

    out, s = scanned
    d = spec()
    proxy = proxy_configs(6, d)
    scan = scan_configs(d, s["proxy"]["eta0"], s["proxy"]["lam0"], (0.0, 0.5, 1.5), steps=6)
    ids = {c.run_id for c in proxy + scan}
    assert len(RunStore(out).records()) == len(ids)  # every run stored once, under its own id
    # one member per (width, seed, lr, lam) at d0, where every q is the same member; above d0 one per q too
    members = {(c.width, c.seed, c.lr, c.wd, q_of(c.canonical()) if c.width > c.base_width else None)
               for c in proxy + scan}
    assert s["n_trained"] == len(members) < len(ids)
    assert s["n_twins"] == 2 * 7 * 2  # wd's and q = 1.5's runs at d0: mup's very members


def test_the_text_output_reruns_from_the_store_with_the_recipe(scanned):
    out, s = scanned
    rc, text, _ = scan_cli(out)
    assert rc == 0
    assert " 0 members trained now" in text  # everything cached, twins included
    assert "λ ∝ d^q scan under η ∝ 1/d" in text and "predictors of q_drift*" in text
    r, sc = s["scan"]["recipe"], s["scan"]
    eta0, lam0 = s["proxy"]["eta0"], s["proxy"]["lam0"]
    assert r["eta"] == pytest.approx(eta0 * 32 / 256, rel=1e-12) and r["target_width"] == 256
    if sc["q_drift"] is None:
        assert r["lam"] is None and "no λ to recommend" in r["sentence"]
    else:
        assert r["lam"] == pytest.approx(lam0 * 8 ** sc["q_drift"], rel=1e-12)
    assert r["extrapolates"] and "This extrapolates beyond the widths measured (up to 64)" in text
    assert f"η = η0·d0/D = {eta0:.4g}·32/256 = {r['eta']:.4g}" in text


@pytest.mark.parametrize("bad,needle", [(["--q", "-0.5"], "q must be a finite number >= 0"),
                                        (["--q", "1"], "at least two q values"),
                                        (["--q", "0,x"], "'x' is not a number"),
                                        (["--target-width", "0"], "--target-width must be a positive integer")])
def test_bad_input_is_one_line_rc_2_before_anything_trains(tmp_path, bad, needle):
    rc, _, err = scan_cli(tmp_path / "runs", *bad)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_the_report_reads_the_stored_scan(scanned):
    out, s = scanned
    o = io.StringIO()
    with contextlib.redirect_stdout(o):
        assert cli.main(["report", str(out), "--format", "json"]) == 0
    rep = json.loads(o.getvalue())["scan"]
    assert rep["qs"] == [0.0, 0.5, 1.5] and rep["eta0"] == s["scan"]["eta0"] and rep["n_runs"] == len(s["runs"])
    for k in ("q_drift", "q_sigma"):  # the same runs, the same reading
        assert (rep[k] is None) == (s["scan"][k] is None)
        if rep[k] is not None:
            assert rep[k] == pytest.approx(s["scan"][k], abs=1e-9)
    assert [b["q"] for b in rep["scoreboard"]] == pytest.approx([b["q"] for b in s["scan"]["scoreboard"]])


# -- "no named rule transfers here", on planted records ---------------------------------------------------------
def drift_off(q):
    return 0.7 - 0.3 * q  # +0.4 at q = 1: no named rule transfers, and the line never crosses zero in [0, 1]


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """A store written by hand: the named rules of a planted scan (mup, wd, indep), 3 widths, 2 seeds, with empty
    weight and spectra files so the app's readers count every run as whole."""
    root = tmp_path_factory.mktemp("planted") / "runs"
    store = RunStore(root)
    recs = planted(drift_off, sigma_line, qs=(0.0, 0.5, 1.0), seeds=(0, 1))
    with sqlite3.connect(store.db) as c:
        for i, r in enumerate(recs):
            c.execute("INSERT INTO runs VALUES (?,?,?,?,?)", (r["run_id"], "{}", "done", json.dumps(r), i))
    for r in recs:
        for p in store.paths(r["run_id"]):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
    return root


def test_the_verdict_says_no_named_rule_transfers_before_the_least_drift():
    from test_verdict import planted_sweep

    from wdscale.science.verdict import compare_rules, transfer_verdict

    opts = {64: 2.0 ** -7, 128: 2.0 ** -6.6, 256: 2.0 ** -6.2}  # +0.4 octaves per doubling under every rule
    recs = [r for rule in ("mup", "indep") for r in planted_sweep(opts, rule=rule)]
    (c,) = compare_rules(transfer_verdict(recs))
    assert c["no_named_transfer"] and c["sentence"].startswith(NO_NAMED)
    assert "least drift so far: indep" in c["sentence"]  # the CIs overlap: not settled either
    (c,) = compare_rules(transfer_verdict(planted_sweep({64: 2.0 ** -7, 128: 2.0 ** -7})))
    assert not c["no_named_transfer"] and c["sentence"].startswith("Best rule: mup")


def test_report_and_tour_say_no_named_rule_transfers_here(planted_store):
    from wdscale.show import tour

    o = io.StringIO()
    with contextlib.redirect_stdout(o):
        assert cli.main(["report", str(planted_store)]) == 0
    md = o.getvalue()
    assert md.index(NO_NAMED) < md.index("Least drift: indep") and "## Which λ transfers" in md
    with contextlib.redirect_stdout(o := io.StringIO()):
        assert cli.main(["report", str(planted_store), "--format", "json"]) == 0
    rep = json.loads(o.getvalue())
    assert rep["comparison"][0]["no_named_transfer"] and rep["comparison"][0]["sentence"].startswith(NO_NAMED)
    assert rep["scan"]["q_drift"] is None and "stays positive" in rep["scan"]["q_drift_reason"]
    assert rep["scan"]["q_sigma"] == pytest.approx(0.9, abs=0.05)  # sigma_line crosses at 0.9
    data = tour.load(store=RunStore(planted_store))
    s6 = tour.step6(data)
    assert s6["text"].index(NO_NAMED) < s6["text"].index("Least drift: indep")
    s8 = tour.step8(data)  # the two crossings of the stored scan
    assert "none in the grid" in s8["text"] and s8["scan"]["q_sigma"] == pytest.approx(0.9, abs=0.05)
    assert f"{s8['scan']['q_sigma']:.2f} [" in s8["text"]
    assert [t for t in s8["fig"].data if t.x is not None and len(t.x) > 0]


def test_home_table_names_no_transfer_before_the_least_drift_and_shows_the_exponent():
    from wdscale.science.regimes import study_regime
    from wdscale.science.scan_run import stored_scan

    recs = planted(drift_off, sigma_line, qs=(0.0, 0.5, 1.0), seeds=(0, 1))
    s = study_regime(recs, eta0=0.01, name="planted", regime="planted regime")
    assert s["no_named_transfer"]
    table = page_functions("pages/home.py", "regime_table")["regime_table"]
    head, _, row = table([s], {"planted": stored_scan(recs, eta0=0.01)}).splitlines()
    assert "| best rule | λ exponent that transfers [CI] |" in head
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("no named rule transfers here; least drift: `indep`")
    assert cells[2].startswith("none in [0, 1] (drift +0.4")
    assert table([s], {}).splitlines()[2].split("|")[3].strip() == "—"  # no scan stored: a dash


# -- the Which λ transfers page ---------------------------------------------------------------------------------
def scan_page(monkeypatch, root):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WDSCALE_DATA", str(root))
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.switch_page("pages/scan.py")  # before the first run: Home (the default page) is not run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_scan_page_draws_the_crossings_and_the_scoreboard(scanned, monkeypatch):
    out, s = scanned
    at = scan_page(monkeypatch, out)
    assert at.title[0].value == "Which λ transfers"
    assert len(at.get("plotly_chart")) == 1
    board, rows = at.dataframe[0].value, at.dataframe[1].value
    assert list(board["predictor"]) == [b["label"] for b in s["scan"]["scoreboard"]]
    assert list(rows["q"]) == [0.0, 0.5, 1.5]
    text = "\n".join(m.value for m in at.markdown)
    assert "q\\_drift\\*" in text and "q\\_σ\\*" in text  # escaped: no italics
    assert any("wdscale scan --preset synthetic" in c.value for c in at.code)
    at.number_input(key="scan_target").set_value(512).run()
    assert not at.exception
    assert any("At width 512" in w.value for w in at.warning)  # past d = 64: it extrapolates, and says so


def test_scan_page_says_no_named_rule_transfers_on_planted_records(planted_store, monkeypatch):
    at = scan_page(monkeypatch, planted_store)
    text = "\n".join(m.value for m in at.markdown)
    assert NO_NAMED in text and text.index(NO_NAMED) < text.index("the least drift is indep")


def test_scan_page_without_a_scan_shows_the_command(tmp_path, monkeypatch):
    at = scan_page(monkeypatch, tmp_path / "runs")
    assert any("No λ scan" in i.value for i in at.info)
    assert any(c.value.startswith("wdscale scan --preset synthetic --out") for c in at.code)
    assert not at.get("plotly_chart")


def test_scan_figure_marks_both_crossings_with_their_cis():
    from wdscale.science.scan import scan_summary
    from wdscale.show.plots import scan_figure
    from test_scan import drift_line

    s = scan_summary(planted(drift_line, sigma_line, seeds=(0, 1)), eta0=0.01, n_boot=40)
    fig = scan_figure(s)
    marks = {t.name.split(" = ")[0]: float(t.name.split(" = ")[1].split()[0]) for t in fig.data
             if t.name.startswith("q_") and " = " in t.name}
    assert marks == {"q_drift*": pytest.approx(s["q_drift"], abs=0.005), "q_σ*": pytest.approx(s["q_sigma"], abs=0.005)}
    assert s["q_drift"] == pytest.approx(1.2, abs=0.1) and s["q_sigma"] == pytest.approx(0.9, abs=0.05)
    assert sum(1 for t in fig.data if t.fill == "toself") == 2  # both CI bands
    assert "q" in fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    s["q_drift"], s["q_drift_ci"] = None, None
    assert any("none in [0, 1.5]" in (t.name or "") for t in scan_figure(s).data)
    assert math.isfinite(len(scan_figure(None).layout.annotations))  # no scan: an empty figure saying so
