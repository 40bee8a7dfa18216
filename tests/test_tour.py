"""The guided tour: live steps 1-2, steps 3-8 from a reference study or a store, the page's navigation
(prev/next, ?step=N, presenter mode), and the one-file HTML export (`wdscale tour`)."""
import json
import re
import shutil

import pytest

from wdscale.science import gallery

from wdscale.show import tour
from wdscale.cli import main
from wdscale.training.store import RunStore
from wdscale.training.sweep import expand_grid, run_sweep


@pytest.fixture(scope="module")
def data():
    return tour.load()  # gallery/synthetic-4w: nothing to train


def test_step1_adamw_update_is_eta_whatever_the_gradient_scale():
    rows = tour.live_update_rms(lr=1e-3)
    by = {}
    for r in rows:
        by.setdefault(r["optimizer"], []).append(r["update_rms"])
    steady, noise, sgd = by["AdamW, steady gradient"], by["AdamW, noise gradient"], by["SGD, noise gradient"]
    assert max(steady) / min(steady) < 1.05 and abs(steady[0] / 1e-3 - 1) < 0.05  # ~η over 6 decades of scale
    assert max(noise) / min(noise) < 1.2
    assert sgd[-1] / sgd[0] > 1e5  # SGD follows the gradient's scale


def test_step2_norm_settles_at_the_steady_state_prediction():
    for s in tour.live_norm_settling():
        assert s["fro_pred"] == pytest.approx((s["lr"] * 64 * 64 / (2 * s["wd"])) ** 0.5)
        assert abs(s["fro"][-1] / s["fro_pred"] - 1) < 0.1, s["name"]
        assert abs(s["fro"][0] / s["fro_pred"] - 1) > 0.15 or s["name"] == "η=0.01, λ=0.5"  # it had somewhere to go


def test_every_step_has_a_drawn_figure_a_formula_and_the_studys_numbers(data):
    steps = tour.steps(data)
    assert [s["n"] for s in steps] == list(range(1, tour.N_STEPS + 1)) and tour.N_STEPS == 8
    for s in steps:
        assert s["formula"] and s["text"] and s["look"], s["n"]
        assert [t for t in s["fig"].data if t.x is not None and len(t.x) > 0], f"step {s['n']} draws nothing"
    s3, s6 = steps[2], steps[5]
    assert s3["collapse"]["top_after"] < s3["collapse"]["top_before"]  # the top of the spectrum collapses
    assert data["summary"]["sentence"] in s6["text"]
    for rule, v in data["summary"]["rules"].items():  # the drifts with their CIs, as the verdict computed them
        assert f"{rule} {v['drift']:+.2f} [{v['drift_ci'][0]:+.2f}, {v['drift_ci'][1]:+.2f}]" in s6["text"]
    assert 0.7 < steps[4]["alpha"] < 1.0  # synthetic-4w: alpha ~ 0.85 (docs/gallery.md)


def test_step3_shows_eta_and_lam_apart_and_step5_uses_the_measured_exponents(data):
    from wdscale.science.law import measure_law

    s3 = tour.step3(data)
    law = measure_law(data["store"].records(), n_boot=50)
    L = s3["law"]
    assert L["class"] == "W1" and L["n"] == law["pooled"]["n"] > 0
    assert L["a"] == pytest.approx(law["classes"]["W1"]["a"], abs=1e-9)
    assert f"η^{L['a']:.2f}" in s3["text"] and f"λ^−{L['b']:.2f}" in s3["text"]
    assert s3["collapse"]["lam_after"] < s3["collapse"]["lam_before"]  # the lam direction collapses too
    panels = [a.text for a in s3["fig"].layout.annotations]
    assert any("along η" in t for t in panels) and any("along λ" in t for t in panels)
    s5 = tour.step5(data)
    b, e = law["pooled"]["b"], s5["alpha"] - 0.5
    assert s5["b"] == pytest.approx(b, abs=1e-9) and s5["beta"] == pytest.approx(e / b, abs=1e-9)
    assert s5["sqrt_b"] == pytest.approx(2 * e, abs=1e-9)
    assert f"λ ∝ d^{e / b:.2f}" in s5["text"] and f"2e = {2 * e:.2f}" in s5["text"]
    assert ("b ≠ a" in s3["text"]) == (abs(L["a"] - L["b"]) > 0.1)  # said exactly where the class's b != a


def test_step3_says_b_differs_from_a_with_the_numbers():
    """A store where lam moves sigma_top more than eta: the sentence names the gap."""
    from wdscale.science.law import measure_law

    data = tour.load()
    law = measure_law(data["store"].records(), n_boot=20)
    for f in law["classes"].values():
        f["a"], f["b"] = 0.2, 0.7
    s3 = tour.step3({**data, "law": law})
    assert "b ≠ a (by 0.50)" in s3["text"] and "λ moves σ_top more" in s3["text"]
    assert "η^0.20" in s3["text"] and "λ^−0.70" in s3["text"]


def test_step7_lists_every_gallery_study_and_claims_nothing_beyond_them(tmp_path, data):
    root = tmp_path / "gallery"
    root.mkdir()
    for name in ("tiny", "synthetic-4w"):  # the multi-epoch regime alone
        shutil.copytree(gallery.gallery_dir() / name, root / name)
    s7 = tour.step7(data, root)
    assert [r["name"] for r in s7["studies"]] == gallery.names(root)
    assert "Only one regime" in s7["text"]  # one regime with a verdict: no claim about the other
    # a new study appears on its own (a stand-in for gallery/tf-lm: the same runs, labelled as the LM regime)
    shutil.copytree(root / "synthetic-4w", root / "tf-lm")
    mf = root / "tf-lm" / "manifest.json"
    m = json.loads(mf.read_text())
    m.update(name="tf-lm", grid={**m["grid"], "model": "transformer"})
    mf.write_text(json.dumps(m))
    s7 = tour.step7(data, root)
    names = [r["name"] for r in s7["studies"]]
    assert "tf-lm" in names and "Only one regime" not in s7["text"]
    lm = next(r for r in s7["studies"] if r["name"] == "tf-lm")
    assert lm["regime"].startswith("language modelling")
    # synthetic-4w's runs: no named rule's drift CI lies inside ±0.25, and the tour says so before the least drift
    lm_line = next(line for line in s7["lines"] if line.startswith("**tf-lm**"))
    assert lm_line.index("No named rule transfers here") < lm_line.index("Least drift: indep")
    assert len(s7["fig"].data) == 2  # one marker series per study with a verdict
    tiny = next(line for line in s7["lines"] if line.startswith("**tiny**"))
    assert "no transfer verdict" in tiny  # 2 lrs: the tour does not rank it


def test_transfer_records_leave_the_proxy_grid_out():
    rec = lambda w, wd, lr: {"status": "done", "model": "synthetic", "steps": 100, "width": w, "wd": wd, "lr": lr}
    proxy = [rec(32, wd, lr) for wd in (1.0, 3.0, 10.0) for lr in (1, 2, 3)]
    transfer = [rec(w, 3.0, lr) for w in (32, 64, 128) for lr in (1, 2, 3)]
    got = tour.transfer_records(proxy + transfer)
    assert {r["wd"] for r in got} == {3.0} and {r["width"] for r in got} == {32, 64, 128}


def test_html_is_one_self_contained_file(tmp_path):
    res = tour.write_html(tmp_path / "tour.html")
    doc = (tmp_path / "tour.html").read_text()
    assert res["figures"] == 8 and doc.count('class="plotly-graph-div"') == 8
    assert doc.count("window.PlotlyConfig") == 1  # plotly.js inlined once, with the first figure
    assert res["network_references"] == 0 and tour.network_references(doc) == []
    assert not re.search(r"<script[^>]+src=", doc) and not re.search(r"<link[^>]+href=[\"']?(https?:)?//", doc)
    assert 3e6 < res["bytes"] < 8e6
    for n in range(1, 9):
        assert f'id="step{n}"' in doc


def test_network_reference_check_finds_a_cdn_script():
    assert tour.network_references('<script src="https://cdn.plot.ly/plotly-2.js"></script>')
    assert tour.network_references("<link rel=stylesheet href='//fonts.example/x.css'>")
    assert not tour.network_references('<svg xmlns="http://www.w3.org/2000/svg"></svg>')


def test_cli_tour_from_a_study_and_from_a_store(tmp_path, capsys, one_thread):
    assert main(["tour", "--out", str(tmp_path / "t.html"), "--study", "synthetic-4w"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"wrote .*t\.html: \d+\.\d\d MB, 8 figures, plotly\.js inlined once, 0 network references", out)
    store = RunStore(tmp_path / "runs")  # a small transfer study stands in for the demo
    run_sweep(expand_grid("synthetic", [32, 64], 32, ["mup", "wd"], [0.004, 0.008, 0.016], [3.0], 20, [0],
                          batch_size=16), store)
    assert main(["tour", "--out", str(tmp_path / "s.html"), "--store", str(tmp_path / "runs")]) == 0
    assert "run store" in capsys.readouterr().out
    empty = RunStore(tmp_path / "empty")
    assert empty.records() == []
    assert main(["tour", "--out", str(tmp_path / "e.html"), "--store", str(tmp_path / "empty")]) == 2
    assert "no transfer study" in capsys.readouterr().err


# -- the page ------------------------------------------------------------------------------------------------
def tour_page(query: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app.py", default_timeout=120)
    at.run()
    at.switch_page("pages/tour.py")
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_walks_every_step_and_keeps_it_in_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    at = tour_page()
    assert at.title[0].value.startswith("1. ") and at.button(key="tour_prev").disabled
    for n in range(2, 9):
        at.button(key="tour_next").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.title[0].value.startswith(f"{n}. ")
        assert at.query_params["step"] in (str(n), [str(n)])  # the URL names the step: a slide can link to it
        assert len(at.get("plotly_chart")) == 1
    assert at.button(key="tour_next").disabled
    at.button(key="tour_prev").click().run()
    assert at.title[0].value.startswith("7. ")
    at.toggle(key="tour_present").set_value(True).run()
    assert not at.exception and "present" in at.query_params
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["height"] == 720 and chart["layout"]["font"]["size"] == 20  # projector-sized


def test_page_deep_link_opens_that_step(tmp_path, monkeypatch):
    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    at = tour_page({"step": "4"})
    assert at.title[0].value.startswith("4. σ_top")
    at = tour_page({"step": "99"})  # clamped, not an error
    assert at.title[0].value.startswith("8. ")
