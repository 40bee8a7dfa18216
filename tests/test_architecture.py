"""The house rules of wdscale's imports, read from the source (function-level imports counted)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "wdscale"


def _imports(path: Path, package_modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports anywhere in its body (top or function level)."""
    deps = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level == 1:
                deps |= {n.module.split(".")[0]} if n.module else {a.name for a in n.names}
            elif n.module and n.module.split(".")[0] == "wdscale":
                parts = n.module.split(".")
                deps |= {parts[1]} if len(parts) > 1 else {a.name for a in n.names}
        elif isinstance(n, ast.Import):
            deps |= {a.name.split(".")[1] for a in n.names if a.name.startswith("wdscale.")}
    return {d for d in deps if d in package_modules and d != path.stem}


def graph() -> dict[str, set[str]]:
    mods = {p.stem for p in PKG.glob("*.py")}
    return {p.stem: _imports(p, mods) for p in PKG.glob("*.py")}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_run_one_way():
    g = graph()
    # the leaf: a RunConfig needs only the rule table (and corpus and model-file hashes)
    assert g["config"] <= {"rules", "data", "modelfile"}
    assert g["modelfile"] <= {"errors"}
    assert not g["own"] & {"sweep", "store", "jobs", "cli", "demo", "verdict", "analysis"}  # a trainer, below them
    assert g["rules"] == set()
    for model in ("synthetic", "transformer", "ensemble"):
        assert not g[model] & {"train", "sweep", "store", "jobs", "cli", "demo", "verdict", "analysis"}, model
    assert not g["plots"] & {"train", "store", "sweep", "jobs"}  # plots take data, return figures
    for lib in PKG.glob("*.py"):  # the library never imports streamlit
        assert "streamlit" not in {a.name.split(".")[0] for n in ast.walk(ast.parse(lib.read_text()))
                                   if isinstance(n, ast.Import) for a in n.names}, lib.name
        assert not any(isinstance(n, ast.ImportFrom) and (n.module or "").startswith("streamlit")
                       for n in ast.walk(ast.parse(lib.read_text()))), lib.name


def test_pages_import_no_other_page():
    for page in (ROOT / "pages").glob("*.py"):
        if page.name == "_ui.py":
            continue
        for n in ast.walk(ast.parse(page.read_text())):
            if isinstance(n, ast.ImportFrom) and n.module == "pages":
                assert {a.name for a in n.names} <= {"_ui"}, page.name
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("pages."):
                assert n.module == "pages._ui", page.name
