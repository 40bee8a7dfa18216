"""Home and Regimes at a glance: the regime finding as a small table on Home, generated text on Regimes escaped as
Markdown, and each study's shared "why inconclusive" reason stated once."""
import ast
import html
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]


def page_functions(page: str, *names: str) -> dict:
    """The named top-level functions of a page (and the module constants they read), without running the page."""
    tree = ast.parse((ROOT / page).read_text())
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and "streamlit" not in ast.unparse(n)
            and "pages" not in ast.unparse(n)]
    keep += [n for n in tree.body if isinstance(n, ast.Assign) and all(
        isinstance(t, ast.Name) and (t.id.isupper() or t.id.startswith("_")) for t in n.targets)]
    keep += [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    ns: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), page, "exec"), ns)
    return ns


def render(md: str) -> str:
    """HTML of CommonMark with GFM's tables and strikethrough: what Streamlit's st.markdown follows."""
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)


def rendered_text(md: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", render(md))).strip()


@pytest.mark.parametrize("text", ["S = sum lr_t*wd < 3 at an optimum", "a_b_c *not bold* **nor this** `x` $y$",
                                  "lr_t*wd_t [link](x) # not a heading | no cell ~strike~"])
def test_md_escape_keeps_generated_text_literal(text):
    esc = page_functions("pages/regimes.py", "md_escape")["md_escape"]
    out = render(esc(text))
    assert not re.search(r"<(em|strong|code|a|s|del|h1|table)\b", out), out
    assert rendered_text(esc(text)) == text
    assert "lr\\_t\\*wd" in esc("S = sum lr_t*wd < 3")


def test_a_reason_shared_by_every_rule_is_stated_once():
    split = page_functions("pages/regimes.py", "split_reasons")["split_reasons"]
    rules = {"fitted": {}, "wd": {}, "indep": {}, "mup": {}}
    why = "; ".join(f"{r}: S = sum lr_t*wd < 3 at an optimum" for r in rules)
    head, reasons = split(f"Inconclusive, best so far: fitted: drifts +0.00. Why inconclusive: {why}; "
                          "wd: an optimum sits on the grid edge; the drift CIs of fitted and wd overlap.", rules)
    assert head == "Inconclusive, best so far: fitted: drifts +0.00."
    assert reasons == ["S = sum lr_t*wd < 3 at an optimum (every rule)", "an optimum sits on the grid edge (wd)",
                       "the drift CIs of fitted and wd overlap"]
    assert split("Best rule: indep: drifts +0.27.", rules) == ("Best rule: indep: drifts +0.27.", [])


@pytest.fixture
def app_at(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture(scope="module")
def studies():
    from wdscale.science import gallery

    s, missing = gallery.reference_regimes()
    if missing:
        pytest.skip(f"reference studies missing: {missing}")
    return s


def test_home_shows_the_regime_finding_as_a_table(app_at, studies):
    (table,) = [m.value for m in app_at.markdown if m.value.startswith("| regime")]
    rows = table.splitlines()[2:]
    assert len(rows) == len(studies) == 3
    for s, row in zip(studies, rows):
        assert f"({s['name']}, {len(s['seeds'])})" in row and f"`{s['best_rule']}`" in row
        for r, v in s["rules"].items():  # every rule's drift with its CI, the study_regime numbers
            assert f"{v['drift']:+.2f} [{v['drift_ci'][0]:+.2f}, {v['drift_ci'][1]:+.2f}]" in row
    assert not any("smallest first" in m.value for m in app_at.markdown)  # the old 90-word paragraph is gone


def test_regimes_escapes_markdown_and_states_shared_reasons_once(app_at, studies):
    app_at.switch_page("pages/regimes.py")
    app_at.run()
    assert not app_at.exception, [e.value for e in app_at.exception]
    texts = {s["name"]: next(m.value for m in app_at.markdown if m.value.startswith(f"**{s['name']}**"))
             for s in studies}
    lm = texts["tf-lm"]
    assert lm.count("S = sum lr\\_t\\*wd \\< 3 at an optimum") == 1, lm  # once, not once per rule
    assert "(every rule)" in lm
    for t in texts.values():
        assert "lr_t*wd" not in t and "<em>" not in render(t)
