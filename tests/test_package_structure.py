"""The package's shape: the folders import downward only (the layers below), no import cycles
(explicit imports, also those inside functions, and the package __init__ files an import runs
first), no module importing its own package back, every folder saying what it may import, no
module over 420 lines (MAX_LINES), and every module in the README's file map."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "grace"
README = PACKAGE.parents[1] / "README.md"
MAX_LINES = 420

# The stack, top to bottom. A folder (or a module at the top of the package) may import the
# folders of the layers below its own; within a layer only the edges of WITHIN_LAYER (which
# must stay acyclic); upward only the EXCEPTIONS, each a module with its reason. "grace" is the
# package itself (grace/__init__.py: ``from grace import GraceEncoder``, ``__version__``).
LAYERS = (
    ("entry points", {"grace", "__main__", "cli", "demo", "train", "server"}),
    ("encoders, evaluation, explain", {"encoders", "evaluation", "explain"}),
    ("methods", {"grpo", "contrastive", "llm2vec_gen"}),
    ("shared machinery", {"training", "rollout", "data", "config"}),
    ("models", {"models"}),
    ("errors", {"errors"}),
)
WITHIN_LAYER = {
    ("__main__", "cli"): "python -m grace runs the CLI",
    ("cli", "grace"): "grace --version prints the package's __version__",
    ("cli", "demo"): "grace demo",
    ("cli", "server"): "grace serve",
    ("cli", "train"): "grace train",
    ("demo", "train"): "the demo trains GRACE",
    ("server", "grace"): "/info reports the package's __version__",
    ("evaluation", "encoders"): "evaluation scores encoders",
    ("explain", "encoders"): "an explanation reads an encoder's states",
    ("grpo", "contrastive"): "optim.contrastive_weight adds the baselines' InfoNCE to GRACE's loss",
    ("data", "config"): "a record is read for a training mode (config.methods)",
    ("rollout", "data"): "the roles plan rollouts over the data's triplets",
    ("training", "config"): "the loop runs a TrainConfig",
    ("training", "data"): "the loop reads the training data",
}
EXCEPTIONS = {
    ("grace.llm2vec_gen.teacher", "encoders"):
        "a teacher may be any encoder (all-MiniLM-L6-v2, a sentence-transformers folder, a GRACE "
        "model with its rationales): it is loaded through GraceEncoder.from_pretrained",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def module_imports(tree: ast.AST, name: str, modules) -> set[str]:
    """The modules of ``modules`` that module ``name`` (parsed as ``tree``) imports, at the top
    or inside a function. ``from pkg import x`` imports the package ``pkg`` (its __init__ runs)
    as well as a submodule ``x``, so it is an edge to both."""
    edges = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names
                                       if f"{node.module}.{alias.name}" in modules]
        for target in targets:
            if target in modules and target != name:
                edges.add(target)
                edges |= _packages_run_first(target, name, modules)
    return edges


def import_graph() -> dict[str, set[str]]:
    """module -> the grace modules it imports (at the top or inside a function)."""
    modules = _modules()
    return {name: module_imports(ast.parse(path.read_text()), name, modules)
            for name, path in modules.items()}


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
        for w in graph.get(v, ()):
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


def folder_of(module: str) -> str:
    """``grace.rollout.engine`` -> ``rollout``; ``grace.cli`` -> ``cli``; ``grace`` -> ``grace``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _rank(layers=LAYERS) -> dict[str, int]:
    """folder -> its layer's place in the stack (0: the top)."""
    return {folder: i for i, (_, folders) in enumerate(layers) for folder in folders}


def layer_violations(graph, layers=LAYERS, within=WITHIN_LAYER, exceptions=EXCEPTIONS) -> list[str]:
    """Every import edge the layers do not allow, as ``importer -> imported (why)``."""
    rank = _rank(layers)
    found = []
    for module, targets in sorted(graph.items()):
        a = folder_of(module)
        for target in sorted(targets):
            b = folder_of(target)
            if a == b or (module, b) in exceptions:
                continue
            if a not in rank or b not in rank:
                found.append(f"{module} -> {target} ({a if a not in rank else b} has no layer)")
            elif rank[b] < rank[a] or (rank[b] == rank[a] and (a, b) not in within):
                where = "a higher layer" if rank[b] < rank[a] else "its own layer, unlisted"
                found.append(f"{module} -> {target} ({a} may not import {b}: {where})")
    return found


def _may_import(folder: str) -> set[str] | None:
    """The folders named on the "May import:" line of ``folder``'s __init__ docstring."""
    doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text())) or ""
    line = next((line for line in doc.splitlines() if line.startswith("May import:")), None)
    if line is None:
        return None
    return {item.strip() for item in line.split(":", 1)[1].strip().rstrip(".").split(",")}


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    modules = {"g", "g.p", "g.p.m", "g.q"}
    assert _packages_run_first("g.p.m", "g.q", modules) == {"g.p"}  # g.p's __init__ runs first
    assert _packages_run_first("g.p.m", "g.p", modules) == set()  # the importer's own package


def test_importing_from_a_package_is_an_edge_to_its_init():
    """``from grace.encoders import base`` inside grace.encoders.x runs grace/encoders/__init__:
    the package-level circle a module-level view misses."""
    modules = {"g", "g.p", "g.p.m", "g.p.n"}
    assert module_imports(ast.parse("from g.p import m"), "g.p.n", modules) == {"g.p", "g.p.m"}
    assert module_imports(ast.parse("from g.p.m import f"), "g.p.n", modules) == {"g.p.m"}
    assert module_imports(ast.parse("def f():\n    import g.p.m"), "g.p.n", modules) == {"g.p.m"}
    graph = {"g.p": {"g.p.n"}, "g.p.n": {"g.p", "g.p.m"}, "g.p.m": set()}
    assert cycles(graph) == [["g.p", "g.p.n"]]


def test_the_layer_checker_refuses_an_upward_import():
    layers = (("top", {"a"}), ("middle", {"b", "c"}), ("bottom", {"d"}))
    graph = {"g.a.x": {"g.b.y", "g.d.z"}, "g.b.y": {"g.d.z"}, "g.c.w": set(), "g.d.z": set()}
    assert layer_violations(graph, layers, {}, {}) == []
    upward = {**graph, "g.d.z": {"g.a.x"}}
    assert layer_violations(upward, layers, {}, {}) == [
        "g.d.z -> g.a.x (d may not import a: a higher layer)"]
    assert layer_violations(upward, layers, {}, {("g.d.z", "a"): "a documented reason"}) == []
    sideways = {**graph, "g.b.y": {"g.c.w"}}
    assert layer_violations(sideways, layers, {}, {}) == [
        "g.b.y -> g.c.w (b may not import c: its own layer, unlisted)"]
    assert layer_violations(sideways, layers, {("b", "c"): "listed"}, {}) == []
    assert layer_violations({"g.e.v": {"g.a.x"}}, layers, {}, {}) == ["g.e.v -> g.a.x (e has no layer)"]


def test_every_folder_imports_only_below_its_layer():
    graph = import_graph()
    assert "grace.training.loop" in graph and graph["grace.train"]
    assert layer_violations(graph) == []
    within = {a: {b for x, b in WITHIN_LAYER if x == a} for a, _ in WITHIN_LAYER}
    assert cycles(within) == []
    rank = _rank()
    assert all(rank[a] == rank[b] for a, b in WITHIN_LAYER)
    assert all(rank[b] < rank[folder_of(module)] for module, b in EXCEPTIONS)  # really upward
    used = {(module, folder_of(t)) for module, targets in graph.items() for t in targets}
    assert set(EXCEPTIONS) <= used, "an exception no module needs any more: remove it"


def test_no_module_imports_a_module_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_no_module_imports_its_own_package_back():
    """A module inside grace.encoders imports grace.encoders.base, never ``grace.encoders``
    (``from grace.encoders import base``). The package root is exempt: every module lies inside
    it, and its __init__ imports nothing when it runs (GraceEncoder is loaded on first use)."""
    back = [f"{module} -> {target}" for module, targets in sorted(import_graph().items())
            for target in sorted(targets) if target != "grace" and module.startswith(target + ".")]
    assert back == []


def test_each_folder_says_what_it_may_import_and_keeps_to_it():
    graph = import_graph()
    folders = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    rank = _rank()
    assert set(folders) <= set(rank), "a new folder needs a layer"
    for folder in folders:
        declared = _may_import(folder)
        assert declared is not None, f"{folder}/__init__.py has no 'May import:' line"
        for name in declared:
            assert name in rank, f"{folder}: 'May import: {name}' is no folder"
            assert rank[name] > rank[folder] or (folder, name) in WITHIN_LAYER, \
                f"{folder} says it may import {name}, which the layers do not allow"
        used = {folder_of(t) for module, targets in graph.items() if folder_of(module) == folder
                for t in targets if (module, folder_of(t)) not in EXCEPTIONS} - {folder}
        assert used <= declared, f"{folder} imports {sorted(used - declared)} beyond its 'May import:'"
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        for module, target in EXCEPTIONS:
            if folder_of(module) == folder:  # the folder's docstring names its exception
                assert module.rsplit(".", 1)[1] in doc and f"grace.{target}" in doc


def test_no_module_is_over_420_lines():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_every_module_is_in_the_readme_file_map():
    """The README's file map (the text block that opens with ``src/grace/``, one ``path  # what
    it holds`` a line) lists every module of src/grace by its path, e.g. ``rollout/engine.py``,
    and every folder (a folder's __init__ stands for it); and nothing that is not there."""
    block = re.search(r"```text\n(src/grace/.*?)```", README.read_text(), flags=re.S)
    assert block, "no file map in the README"
    listed = set(re.findall(r"^(\S+\.py|\S+/)\s+# ", block.group(1), flags=re.M)) - {"src/grace/"}
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    folders = {str(p.parent.relative_to(PACKAGE)) + "/" for p in PACKAGE.rglob("__init__.py")} - {"./"}
    wanted = {m for m in modules if not m.endswith("/__init__.py")} | folders
    assert sorted(wanted - listed) == [], "modules missing from the README's file map"
    stale = {entry for entry in listed if not (PACKAGE / entry).exists()}
    assert sorted(stale) == [], "README file map entries that are not in src/grace"
