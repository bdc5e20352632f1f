"""The package's shape: no import cycles (explicit imports, also those inside functions, and
the package __init__ files an import runs first), and no module over ~400 lines."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "grace"
MAX_LINES = 420


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the grace modules it imports (at the top or inside a function)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                           else node.module for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    edges.add(target)
                    edges |= _packages_run_first(target, name, modules)
        graph[name] = edges
    return graph


def _packages_run_first(target: str, importer: str, modules) -> set[str]:
    """Importing ``a.b.c`` first runs ``a/__init__`` and ``a/b/__init__``: the packages above
    ``target`` that do not also hold ``importer`` (those are already being imported)."""
    parts, own = target.split("."), importer.split(".")
    found = set()
    for depth in range(1, len(parts)):
        package = ".".join(parts[:depth])
        if package in modules and parts[:depth] != own[:depth]:
            found.add(package)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    modules = {"g", "g.p", "g.p.m", "g.q"}
    assert _packages_run_first("g.p.m", "g.q", modules) == {"g.p"}  # g.p's __init__ runs first
    assert _packages_run_first("g.p.m", "g.p", modules) == set()  # the importer's own package


def test_no_module_imports_a_module_that_imports_it_back():
    graph = import_graph()
    assert "grace.training.loop" in graph and graph["grace.train"]
    assert cycles(graph) == []


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
