"""The README and docs/ stay true: every code block marked runnable runs, the README's figures match what the code
and the reference studies give, its set-up commands are the ones .ci/run runs, and its links resolve.

Convention: a fenced ```bash or ```python block whose line before is ``<!-- runnable -->`` (GitHub and mkdocs both
hide the comment).  Bash blocks run under ``bash -e -o pipefail``, python blocks in this interpreter, each in a
temporary folder holding a link to ``gallery/``, with this venv first on PATH: a renamed flag or function fails."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- runnable -->"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|python)\s*$")


def runnable_blocks(path: Path) -> list[tuple[str, int, str]]:
    """(language, line number, code) of every block marked runnable; a mark not followed by a fence is an error."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        m = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        assert m, f"{path.name}:{i + 1}: {MARK} must sit on the line before a ```bash or ```python fence"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
        out.append((m.group(1), i + 2, "\n".join(lines[i + 2:end]) + "\n"))
    return out


BLOCKS = [(p, *b) for p in DOCS for b in runnable_blocks(p)]


def test_there_are_runnable_blocks_in_the_readme_and_the_docs():
    where = {p.name for p, *_ in BLOCKS}
    assert "README.md" in where and len(where) >= 4, where
    assert len(BLOCKS) >= 8, len(BLOCKS)
    assert {lang for _, lang, _, _ in BLOCKS} == {"bash", "python"}


def run_block(lang: str, code: str, where: Path) -> subprocess.CompletedProcess:
    (where / "gallery").symlink_to(ROOT / "gallery")
    (where / "examples").symlink_to(ROOT / "examples")  # the model files of docs/own-model.md
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "WDSCALE_DATA": str(where / "runs"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = ["bash", "-e", "-o", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("path,lang,line,code", BLOCKS, ids=[f"{p.name}:{n}" for p, _, n, _ in BLOCKS])
def test_runnable_block_runs(path, lang, line, code, tmp_path):
    p = run_block(lang, code, tmp_path)
    assert p.returncode == 0, f"{path.name}:{line} ({lang}) exited {p.returncode}:\n{code}\n{p.stderr[-3000:]}"


def test_a_renamed_flag_or_name_fails_its_block(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    assert run_block("bash", "wdscale rules --rule wd --width 256 --base-widht 64 --lr 1e-2 --wd 0.1\n",
                     tmp_path / "a").returncode != 0
    assert run_block("python", "from wdscale import param_group\n", tmp_path / "b").returncode != 0


# ---------------------------------------------------------------------------------------------------------------
# The README
# ---------------------------------------------------------------------------------------------------------------
README = (ROOT / "README.md").read_text()
INSTALL = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -r "
           "requirements-dev.txt && pip install -e . && streamlit run app.py")
TEST = ". .venv/bin/activate && python -m pytest -q"


def test_readme_is_short_and_its_first_screen_has_what_it_should():
    lines = README.splitlines()
    assert len(lines) <= 150, len(lines)
    first = "\n".join(lines[:20])
    assert "docs/screenshots/home" in first and (ROOT / "docs/screenshots/home_top.png").is_file()
    assert INSTALL in lines and TEST in lines and lines.index(INSTALL) < lines.index(TEST) < 20
    assert "## What you will see in two minutes" in README and "## Your own model" in README


def test_ci_runs_exactly_the_readmes_set_up_and_test_commands():
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert TEST in ci  # the test command, verbatim, on a line of its own
    setup = INSTALL.removesuffix(" && streamlit run app.py")
    assert any(line.replace(" -q", "") == setup for line in ci), "the README's install is not what .ci/run runs"
    assert setup.index("pip install torch==2.13.0") < setup.index("requirements-dev.txt")
    assert any("mkdocs build --strict" in line for line in ci)


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)\)|src=\"([^\"]+)\"", README):
        t = next(x for x in target if x)
        if not t.startswith("http"):
            assert (ROOT / t).exists(), f"README links to {t}, which does not exist"


def test_readme_demo_figures_are_the_presets():
    from wdscale.models.presets import PRESETS

    d = PRESETS["synthetic"]
    assert f"{len(d['proxy_lrs'])} × {len(d['proxy_wds'])} grid at d₀ = {d['base_width']} ({len(d['seeds'])} seeds)" \
        in README
    assert "widths " + "/".join(map(str, d["widths"])) in README
    assert ", ".join(f"`{r}`" for r in d["rules"][:-1]) + f" and\n  `{d['rules'][-1]}`" in README or \
        ", ".join(f"`{r}`" for r in d["rules"][:-1]) + f" and `{d['rules'][-1]}`" in README
    assert f"{len(d['lr_octaves'])} learning rates" in README and f"{d['steps']} steps" in README


def test_readme_regime_table_is_what_the_reference_studies_give():
    from wdscale.science import gallery

    studies, missing = gallery.reference_regimes()
    assert not missing, missing
    rows = [line for line in README.splitlines() if line.startswith("| ") and "(tf-" in line or "(synthetic-" in line]
    assert len(rows) == len(studies) == 3
    for s in studies:
        (row,) = [r for r in rows if f"({s['name']}, {len(s['seeds'])})" in r]
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1].startswith(f"`{s['best_rule']}`"), (s["name"], cells[1])
        assert ("not settled" in cells[1]) == (not s["conclusive"]), (s["name"], cells[1])
        for col, rule in zip(cells[2:], ("mup", "wd", "indep", "fitted")):
            v = s["rules"].get(rule)
            want = "-" if v is None else f"{v['drift']:+.2f} [{v['drift_ci'][0]:+.2f}, {v['drift_ci'][1]:+.2f}]"
            assert col == want, (s["name"], rule, col, want)


def test_corpus_figures_in_the_docs():
    from wdscale.models import presets
    from wdscale.models.data import load_corpus, split

    train, _ = split(load_corpus("stdlib"))
    assert f"{len(train) / 1e6:.1f} MB = {len(train) / 2 ** 20:.1f} MiB" == "7.6 MB = 7.2 MiB"
    read = presets.LM_STEPS * presets.step_bytes("transformer", presets.PRESETS["lm"]["common"])
    assert f"{read / len(train):.2f}" == "0.14" and f"{read / presets.LM_TRAIN_BYTES:.1f}" == "10.4"
    assert "7.6 MB = 7.2 MiB" in (ROOT / "docs/transformer.md").read_text()


# ---------------------------------------------------------------------------------------------------------------
# The docs site and the public API
# ---------------------------------------------------------------------------------------------------------------
def test_every_docs_page_is_in_the_mkdocs_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for p in (ROOT / "docs").glob("*.md"):
        assert f": {p.name}" in nav, f"docs/{p.name} is not in mkdocs.yml's nav"
    assert ": own-model.md" in nav and ": api.md" in nav


def test_public_api_imports_from_the_package_lazily():
    code = ("import sys, wdscale; assert 'torch' not in sys.modules, 'import wdscale pulled in torch'\n"
            "from wdscale import param_groups, classify_model, resolve, Resolved, SpectralMonitor, inspect, RunStore\n"
            "import wdscale.science.inspect, wdscale.core.rules, wdscale.training.monitor\n"
            "assert inspect is wdscale.science.inspect.inspect and param_groups is wdscale.core.rules.param_groups\n"
            "assert SpectralMonitor is wdscale.training.monitor.SpectralMonitor and wdscale.__version__\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
