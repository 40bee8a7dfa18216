"""The measured law on the pages: Regimes shows sigma_top ~ eta^a lam^-b per study and class (``law.law_rows``) and
the one sentence of where sqrt(eta/lam) holds (``law.where_law_holds``); Home says "≈ √(η/λ)" only of a study whose
measured a and b are both near 1/2 and gives the measured exponents otherwise."""
import re

import pytest

from wdscale.science import gallery

from wdscale.science import law

MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~$])")


def esc(text: str) -> str:  # pages/regimes.py's md_escape
    return MD_SPECIAL.sub(r"\\\1", text)


def fit(a, b, n=24):
    return {"quantity": "top", "a": a, "a_ci": [a - 0.05, a + 0.05], "b": b, "b_ci": [b - 0.05, b + 0.05], "n": n,
            "widths": [32], "identifiable": True, "min_S": 3.0,
            "fro": {"a": a - 0.1, "a_ci": [0, 1], "b": b + 0.1, "b_ci": [0, 1], "n": n}, "bulk": None}


def planted(a, b, name, n=24):
    lw = {"scope": "proxy", "min_S": 3.0, "n_runs": n, "n_used": n, "has_spectra": True,
          "classes": {"attn q": fit(a - 0.02, b + 0.02, n), "mlp up": fit(a + 0.02, b - 0.02, n)},
          "pooled": fit(a, b, n), "regime": "planted", "over_time": [], "snapshots": 1}
    lw["sentence"] = law.law_sentence(lw, name)
    return lw


@pytest.fixture
def app(tmp_path, monkeypatch):
    """The app on an empty store with gallery_laws replaced by ``app.laws`` (set before the first run)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    box = {}
    monkeypatch.setattr(gallery, "gallery_laws", lambda *a, **k: box["laws"])
    st.cache_data.clear()  # the pages cache gallery_laws' answer: a planted law must not leak between tests
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.laws = box
    yield at
    st.cache_data.clear()


def home_text(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_home_does_not_claim_the_sqrt_law_where_b_is_far_from_a(app):
    app.laws["laws"] = {"tf-bent": planted(0.20, 0.70, "tf-bent")}
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    text = home_text(app)
    assert "≈ √(η/λ)" not in text and "\\approx \\sqrt{\\eta/\\lambda}" not in text
    assert "\\sigma_{top} \\approx" not in "\n".join(x.value for x in app.get("latex"))
    # the measured exponents instead, with their CIs
    assert "tf-bent: σ_top ∝ η^0.20·λ^−0.70 (a 0.20 [0.15, 0.25], b 0.70 [0.65, 0.75], 24 runs)" in text
    assert "σ_top is not √(η/λ) in tf-bent" in text


def test_home_says_sqrt_law_only_of_the_study_where_it_holds(app):
    app.laws["laws"] = {"synth-ok": planted(0.52, 0.45, "synth-ok"), "tf-bent": planted(0.22, 0.66, "tf-bent")}
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    text = home_text(app)
    (line,) = [x for x in text.splitlines() if "≈ √(η/λ)" in x]
    claim = line[line.index("≈ √(η/λ)"):]
    assert claim.startswith("≈ √(η/λ) in synth-ok (a 0.52 [0.47, 0.57], b 0.45 [0.40, 0.50], 24 runs); not in "
                            "tf-bent: σ_top ∝ η^0.22·λ^−0.66")
    assert claim.count("≈") == 1  # said once, of synth-ok only


def test_home_with_no_measured_law_says_so(app):
    app.laws["laws"] = {}
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    text = home_text(app)
    assert "≈ √(η/λ)" not in text and "the law is untested" in text


def test_regimes_shows_the_law_table_and_sentence(app):
    # planted under two reference studies' names (the page keeps the laws of the studies picked: all by default)
    laws = {"synthetic-4w": planted(0.52, 0.45, "synthetic-4w"), "tf-lm": planted(0.22, 0.66, "tf-lm")}
    app.laws["laws"] = laws
    app.switch_page("pages/regimes.py")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    if not set(laws) <= {s["name"] for s in gallery.reference_regimes()[0]}:
        pytest.skip("reference studies missing")
    assert any("σ_top ∝ η^a·λ^−b, measured" in h.value for h in app.subheader)
    sentence = law.where_law_holds(laws)
    assert sentence.startswith("σ_top ∝ √(η/λ) holds") and "but not in tf-lm (a 0.22, b 0.66)" in sentence
    assert f"**{esc(sentence)}**" in [m.value for m in app.markdown]
    (table,) = [d.value for d in app.dataframe if "a (σ_top ∝ η^a)" in d.value.columns]
    assert list(table["study"]) == ["synthetic-4w"] * 3 + ["tf-lm"] * 3
    assert list(table["class"]) == ["attn q", "mlp up", "pooled"] * 2
    pooled = table[table["class"] == "pooled"]
    assert list(pooled["a (σ_top ∝ η^a)"]) == ["0.52", "0.22"] and list(pooled["b (σ_top ∝ λ^−b)"]) == ["0.45", "0.66"]
    assert list(pooled["a 95% CI"]) == ["[0.47, 0.57]", "[0.17, 0.27]"]
    assert list(pooled["b 95% CI"]) == ["[0.40, 0.50]", "[0.61, 0.71]"]
    assert set(table["runs"]) == {24} and set(table["S filter"]) == {"S ≥ 3"}
    assert list(pooled["√(η/λ) law"]) == ["holds", "no"]
    captions = [c.value for c in app.caption]
    assert esc(laws["tf-lm"]["sentence"]) in captions


@pytest.fixture(scope="module")
def real_laws():
    laws = gallery.gallery_laws(n_boot=300)
    if len(laws) < 3:
        pytest.skip("reference studies missing")
    return laws


def test_regimes_shows_the_reference_studies_law(tmp_path, monkeypatch, real_laws):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    monkeypatch.setattr(gallery, "gallery_laws", lambda *a, **k: real_laws)
    st.cache_data.clear()
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.switch_page("pages/regimes.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    sentence = law.where_law_holds(real_laws)
    assert f"**{esc(sentence)}**" in [m.value for m in at.markdown]
    assert "holds" in sentence and "but not in" in sentence  # synthetic-4w holds, the Transformers do not
    (table,) = [d.value for d in at.dataframe if "a (σ_top ∝ η^a)" in d.value.columns]
    rows = law.law_rows(real_laws)
    assert len(table) == len(rows)
    for col in ("class", "a (σ_top ∝ η^a)", "a 95% CI", "b (σ_top ∝ λ^−b)", "b 95% CI", "runs", "S filter"):
        assert list(table[col]) == [r[col] for r in rows], col
    assert set(table["S filter"]) == {"S ≥ 3"}
    captions = [c.value for c in at.caption]
    for lw in real_laws.values():
        assert esc(lw["sentence"]) in captions
    st.cache_data.clear()


def test_tour_step4_says_what_the_study_measured(tmp_path, monkeypatch):
    """Step 4's formula is the paper's sqrt(eta/lam); the page adds the study's measured a, b under it."""
    from streamlit.testing.v1 import AppTest

    from wdscale.show import tour

    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    at = AppTest.from_file("../pages/tour.py", default_timeout=180)
    at.query_params["step"] = "4"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    for study in ("synthetic-4w", "tf-lm"):
        if study not in gallery.names():
            continue
        at.selectbox(key="tour_source_pick").set_value(study).run()
        assert not at.exception, [e.value for e in at.exception]
        p = tour.study_law(tour.load(study=study, gallery_root=str(gallery.gallery_dir())))["pooled"]
        (cap,) = [c.value for c in at.caption if "Fan et al.'s √(η/λ) law" in c.value]
        assert f"σ_top ∝ η^{p['a']:.2f}·λ^−{p['b']:.2f}" in cap
        assert ("the law holds here" in cap) == bool(law.holds(p))
        if study == "tf-lm":
            assert "not √(η/λ)" in cap
