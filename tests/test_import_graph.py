"""The import graph of src/sg2ada: no cycles (function-level imports included) and imports that run
one way, cli -> training/tools -> augment/metrics -> data -> legacy -> networks -> ops.

Read with `ast`, nothing is imported. An edge is every `import sg2ada...` / `from sg2ada... import`
(relative ones resolved, at any depth of the file), `from pkg import name` counting as an edge to
`pkg.name` when that is a module, plus every string constant naming a submodule exactly (the lazy
`importlib.import_module` tables of the package `__init__`s).
"""

from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"

# Highest first. A module may import its own group or a group of a lower layer. The groups are the
# first name under sg2ada (a subpackage or a top-level module).
LAYERS = [
    {""},  # the package root: a facade over the commands (train) and legacy.load (load_network)
    {"__main__"},
    {"cli"},
    {"training", "tools"},
    {"augment", "metrics"},
    {"data"},
    {"storage"},  # object stores on fsspec, no TensorFlow: under data (bucket datasets) and training (backups)
    {"legacy"},
    {"presets"},  # builds networks.config objects, so it sits just above networks
    {"networks"},
    {"ops"},
    {"errors", "cache", "version", "images", "console"},  # leaf utilities: usable anywhere, import only each other
]
LEAF_UTILITIES = LAYERS[-1]


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in sorted((SRC / "sg2ada").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _docstring_nodes(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _known(name: str, where: str) -> str:
    assert name in MODULES, f"{where}: imports {name}, which is not a module under src/sg2ada"
    return name


def _edges(module: str, source: str, is_package: bool) -> list[tuple[str, int]]:
    """(imported module, line) for every sg2ada import in `source`, the text of `module`."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    docstrings = _docstring_nodes(tree)
    out = []
    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sg2ada" or alias.name.startswith("sg2ada."):
                    out.append((_known(alias.name, where), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not (base == "sg2ada" or base.startswith("sg2ada.")):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub if sub in MODULES else _known(base, where), node.lineno))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("sg2ada.")
              and node.value in MODULES and id(node) not in docstrings and node.value != module):
            out.append((node.value, node.lineno))
    return sorted(out, key=lambda edge: edge[1])


GRAPH = {m: _edges(m, p.read_text(encoding="utf-8"), p.name == "__init__.py") for m, p in MODULES.items()}


def _group(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _rank(module: str) -> int:
    group = _group(module)
    for i, layer in enumerate(LAYERS):
        if group in layer:
            return i
    raise AssertionError(f"{module}: group {group!r} is in no layer of LAYERS; add it")


def _cycles() -> list[tuple[list[str], list[str]]]:
    """(one cycle, all its modules) per strongly connected component of more than one module (Tarjan)."""
    succ = {m: sorted({t for t, _ in edges if t != m}) for m, edges in GRAPH.items()}
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for m in sorted(succ):
        if m not in index:
            visit(m)
    cycles = []
    for comp in comps:
        # Shortest path back to the component's first module, within the component.
        start, members = comp[0], set(comp)
        prev, frontier = {start: None}, [start]
        while frontier and start not in [w for v in frontier for w in succ[v]]:
            nxt = []
            for v in frontier:
                for w in succ[v]:
                    if w in members and w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in succ[v])
        path = [last]
        while prev[path[-1]] is not None:
            path.append(prev[path[-1]])
        cycles.append(([*reversed(path), start], comp))
    return cycles


def test_edges_of_every_import_form():
    source = '''"""sg2ada.ops is named in a docstring: no edge."""
import sg2ada.errors
from sg2ada import ops, __version__
from . import layers
from ..legacy.restricted import sniff_format
LAZY = {"Generator": "sg2ada.networks.generator", "source": "sg2ada"}
def f():
    from sg2ada.data import make_dataset
'''
    assert _edges("sg2ada.networks.mapping", source, is_package=False) == [
        ("sg2ada.errors", 2), ("sg2ada.ops", 3), ("sg2ada", 3), ("sg2ada.networks.layers", 4),
        ("sg2ada.legacy.restricted", 5), ("sg2ada.networks.generator", 6), ("sg2ada.data", 8)]
    # In a package __init__, "." is the package itself.
    assert _edges("sg2ada.networks", "from . import config\n", is_package=True) == [("sg2ada.networks.config", 1)]


def test_no_import_cycles():
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(
        f"{' -> '.join(cycle)} (its component: {', '.join(comp)})" for cycle, comp in cycles)


def test_imports_follow_the_layers():
    bad = []
    for module, edges in sorted(GRAPH.items()):
        src_group, src_rank = _group(module), _rank(module)
        for target, line in sorted(set(edges), key=lambda e: e[1]):
            tgt_group, tgt_rank = _group(target), _rank(target)
            if tgt_group == src_group or tgt_rank > src_rank:
                continue
            if src_group in LEAF_UTILITIES and tgt_group in LEAF_UTILITIES:
                continue
            bad.append(f"{MODULES[module].relative_to(SRC)}:{line}: {module} imports {target}")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)
