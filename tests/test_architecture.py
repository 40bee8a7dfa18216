"""The house rules of wdscale's imports, read from the source (function-level imports counted).

wdscale/ has one sub-package per layer; a folder imports only folders below it (docs/architecture.md):

    core  <  models  <  training  <  science  <  show  <  cli
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "wdscale"
LAYERS = ("core", "models", "training", "science", "show", "cli")


def module_name(path: Path) -> str:
    """wdscale/models/own/load.py -> 'models.own.load'; a package's __init__ is the package."""
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py") if module_name(p) not in ("", "__main__")}


def _resolve(importer: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    """The package modules an ImportFrom names (relative or absolute), dotted under wdscale."""
    if node.level:
        base = importer.split(".") if importer else []
        base = base if is_pkg else base[:-1]
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
    elif node.module and node.module.split(".")[0] == "wdscale":
        mod = ".".join(node.module.split(".")[1:])
    else:
        return []
    return [mod, *(f"{mod}.{a.name}" if mod else a.name for a in node.names)]


def _imports(name: str, path: Path, mods: set[str]) -> set[str]:
    deps = set()
    is_pkg = path.name == "__init__.py"
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            deps |= {m for m in _resolve(name, is_pkg, n) if m in mods}
        elif isinstance(n, ast.Import):
            deps |= {a.name[len("wdscale."):] for a in n.names if a.name.startswith("wdscale.")} & mods
    return {d for d in deps if d != name and not name.startswith(d + ".")}  # a package's own parents are no edge


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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


def upward(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a folder to a folder above it (the root package is no layer: it only hands names on)."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return sorted((a, b) for a, deps in g.items() for b in deps
                  if a.split(".")[0] in rank and b.split(".")[0] in rank
                  and rank[b.split(".")[0]] > rank[a.split(".")[0]])


def test_every_module_lives_in_a_layer():
    stray = [m for m in modules() if m.split(".")[0] not in LAYERS]
    assert stray == [], f"modules outside the layer folders: {stray}"


def test_the_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_folders_import_only_folders_below():
    assert upward(graph()) == []


def test_upward_finder_finds_a_planted_arrow():
    assert upward({"core.rules": {"science.law"}, "science.law": {"core.rules"}}) == [("core.rules", "science.law")]


def test_resolver_reads_relative_imports():
    node = ast.parse("from ..core.rules import RULES").body[0]
    assert _resolve("training.train", False, node)[0] == "core.rules"
    node = ast.parse("from . import load").body[0]
    assert "models.own.load" in _resolve("models.own", True, node)


def test_named_rooms():
    g = graph()
    assert g["core.rules"] == set()  # the rule table needs nothing
    for model in ("models.synthetic", "models.transformer", "models.ensemble"):
        assert all(d.split(".")[0] in ("core", "models") for d in g[model]), model
    assert all(d.split(".")[0] in ("core", "science") for d in g["show.plots"])  # plots take data, return figures


def test_library_never_imports_streamlit():
    for lib in PKG.rglob("*.py"):
        tree = ast.parse(lib.read_text())
        assert "streamlit" not in {a.name.split(".")[0] for n in ast.walk(tree)
                                   if isinstance(n, ast.Import) for a in n.names}, lib.name
        assert not any(isinstance(n, ast.ImportFrom) and (n.module or "").startswith("streamlit")
                       for n in ast.walk(tree)), lib.name


def test_pages_import_no_other_page():
    for page in (ROOT / "pages").glob("*.py"):
        if page.name == "_ui.py":
            continue
        for n in ast.walk(ast.parse(page.read_text())):
            if isinstance(n, ast.ImportFrom) and n.module == "pages":
                assert {a.name for a in n.names} <= {"_ui"}, page.name
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("pages."):
                assert n.module == "pages._ui", page.name
