"""The package's import layering, checked statically (`ast`) on every module under talkinghead/.

Layers, low to high (a module may import from its own layer or lower ones only)::

    base      talkinghead/__init__.py, errors.py, fileio.py, weights.py, config.py
    data      talkinghead/data/
    nn        talkinghead/nn/
    metrics   talkinghead/metrics/
    training  talkinghead/training/, talkinghead/generation.py
    methods   talkinghead/methods/
    bench     talkinghead/bench/
    cli       talkinghead/cli.py

Rules, over every import of a talkinghead module (``import`` and ``from`` imports, module-level
or inside functions, relative imports resolved):

(a) no import of a higher layer;
(b) no import cycle between modules;
(c) no method package imports another (``methods/<a>`` never imports ``methods/<b>``); only
    ``talkinghead/methods/registry.py`` may import every method package, and nothing inside a
    method package imports the registry;
(d) no ``from talkinghead.X import _private``;
(e) no ``importlib.import_module`` / ``__import__`` of a string (or f-string) starting with
    "talkinghead": project modules are imported by name, so these checks see them.

The checker functions are tested on synthetic sources first (`test_checker_*`), so a broken
checker fails here instead of passing everything.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "talkinghead"

#: layer name -> rank (low to high)
LAYERS = {"base": 0, "data": 1, "nn": 2, "metrics": 3, "training": 4, "methods": 5, "bench": 6, "cli": 7}
BASE_MODULES = {"errors", "fileio", "weights", "config", "progress"}
REGISTRY = f"{PACKAGE}.methods.registry"


# ---------------------------------------------------------------------------------------------
# the checker
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One module: its dotted name, whether it is a package (``__init__.py``), its file and text."""

    name: str
    is_package: bool
    path: str
    text: str


@dataclass(frozen=True)
class Import:
    """``source`` imports talkinghead module ``target`` at ``path:line``; ``names``: what a ``from``
    import takes from it (empty for ``import target``)."""

    source: str
    target: str
    path: str
    line: int
    names: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class DynamicImport:
    """An ``importlib.import_module`` / ``__import__`` call naming a talkinghead module."""

    source: str
    path: str
    line: int
    call: str


def read_package(root: Path = ROOT, package: str = PACKAGE) -> list[Source]:
    """Every .py file under ``root/package`` as a `Source`."""
    sources = []
    for file in sorted((root / package).rglob("*.py")):
        rel = file.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        sources.append(Source(".".join(parts), is_package, str(file.relative_to(root)), file.read_text()))
    return sources


def layer_of(module: str) -> str | None:
    """The layer of a talkinghead module (by its path), None when it has none."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1 or parts[1] in BASE_MODULES:
        return "base"
    if parts[1] in ("data", "nn", "metrics", "training", "methods", "bench"):
        return parts[1]
    if parts[1] == "generation":
        return "training"
    if parts[1] == "cli":
        return "cli"
    return None


def method_package(module: str) -> str | None:
    """``talkinghead.methods.<x>...`` -> "<x>", the method it belongs to; None outside the methods,
    for the methods package itself and for the registry."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == [PACKAGE, "methods"] and module != REGISTRY:
        return parts[2]
    return None


def _resolve_from(source: Source, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` statement reads from."""
    if not node.level:
        return node.module or ""
    base = source.name.split(".") if source.is_package else source.name.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_project(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _string_prefix(node: ast.AST | None) -> str | None:
    """The literal text of a string or the literal start of an f-string, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        first = node.values[0] if node.values else None
        return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
    return None


def _is_dynamic_import(func: ast.AST) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("import_module", "__import__")
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module" or (func.attr == "__import__" and isinstance(func.value, ast.Name)
                                                and func.value.id == "builtins")
    return False


def parse_imports(source: Source, modules: set[str]) -> tuple[list[Import], list[DynamicImport]]:
    """The talkinghead imports of one module (anywhere in it) and its dynamic imports of project modules.

    ``from P import n`` targets module ``P.n`` when that is one of `modules`, else ``P``.
    """
    tree = ast.parse(source.text, filename=source.path)
    imports: list[Import] = []
    dynamic: list[DynamicImport] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_project(alias.name):
                    imports.append(Import(source.name, alias.name, source.path, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(source, node)
            if not _is_project(base):
                continue
            plain: list[str] = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    imports.append(Import(source.name, sub, source.path, node.lineno))
                else:
                    plain.append(alias.name)
            if plain:
                imports.append(Import(source.name, base, source.path, node.lineno, tuple(plain)))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            arguments = list(node.args[:1]) + [k.value for k in node.keywords if k.arg in ("name", "package")]
            if any((_string_prefix(a) or "").startswith(PACKAGE) for a in arguments):
                dynamic.append(DynamicImport(source.name, source.path, node.lineno, ast.unparse(node)))
    return imports, dynamic


def collect(sources: list[Source]) -> tuple[list[Import], list[DynamicImport]]:
    modules = {s.name for s in sources}
    imports: list[Import] = []
    dynamic: list[DynamicImport] = []
    for source in sources:
        found, calls = parse_imports(source, modules)
        imports += found
        dynamic += calls
    return imports, dynamic


def layer_violations(sources: list[Source], imports: list[Import]) -> list[str]:
    """(a): modules without a layer, and imports of a higher layer."""
    problems = [f"{s.path}: module {s.name} has no layer (give it one in tests/test_layers.py's layer_of)"
                for s in sources if layer_of(s.name) is None]
    for imp in imports:
        low, high = layer_of(imp.source), layer_of(imp.target)
        if low is None:
            continue  # reported above
        if high is None:
            problems.append(f"{imp.where}: {imp.source} imports {imp.target}, which has no layer")
        elif LAYERS[high] > LAYERS[low]:
            problems.append(f"{imp.where}: {imp.source} (layer {low}) imports {imp.target} (higher layer {high})")
    return problems


def find_cycles(imports: list[Import]) -> list[list[str]]:
    """(b): one cycle (a list of modules, first == last) per strongly connected component of the
    module import graph that has more than one module."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(start: str) -> None:  # iterative Tarjan
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        if len(component) < 2:
            continue
        start = min(component)
        paths = {start: [start]}  # BFS inside the component back to start: a shortest cycle
        queue = [start]
        cycle = None
        while queue and cycle is None:
            node = queue.pop(0)
            for child in sorted(graph[node] & component):
                if child == start:
                    cycle = paths[node] + [start]
                    break
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    queue.append(child)
        cycles.append(cycle)
    return sorted(cycles)


def cycle_messages(imports: list[Import]) -> list[str]:
    where = {(i.source, i.target): i.where for i in imports}
    return [f"import cycle: {' -> '.join(cycle)} (" + ", ".join(where[a, b] for a, b in zip(cycle, cycle[1:])) + ")"
            for cycle in find_cycles(imports)]


def method_violations(imports: list[Import]) -> list[str]:
    """(c): method packages import neither each other nor the registry; only the registry (and
    the method's own package) imports method packages."""
    problems = []
    for imp in imports:
        source, target = method_package(imp.source), method_package(imp.target)
        top_level = imp.source in (f"{PACKAGE}.methods", REGISTRY)
        if source is not None and imp.target == REGISTRY:
            problems.append(f"{imp.where}: method {source} ({imp.source}) imports the method registry {REGISTRY}")
        elif source is not None and target is not None and source != target:
            problems.append(f"{imp.where}: method {source} ({imp.source}) imports method {target} ({imp.target})")
        elif top_level and target is not None and imp.source != REGISTRY:
            problems.append(f"{imp.where}: {imp.source} imports method {target} ({imp.target}); only {REGISTRY} "
                            f"may import the method packages")
    return problems


def private_violations(imports: list[Import]) -> list[str]:
    """(d): ``from talkinghead.X import _name`` (dunder names such as ``__version__`` are not private)."""
    return [f"{imp.where}: {imp.source} imports private name {name} from {imp.target}"
            for imp in imports for name in imp.names
            if name.startswith("_") and not (name.startswith("__") and name.endswith("__"))]


def dynamic_violations(dynamic: list[DynamicImport]) -> list[str]:
    """(e)."""
    return [f"{d.path}:{d.line}: {d.source} imports a project module dynamically: {d.call} (import it by name)"
            for d in dynamic]


def _report(problems: list[str], what: str) -> str:
    return f"{len(problems)} {what}:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------------------------------------
# the checker on synthetic sources
# ---------------------------------------------------------------------------------------------
def synthetic(files: dict[str, str]) -> list[Source]:
    """Sources from {"talkinghead/x/y.py": text}."""
    sources = []
    for path, text in files.items():
        parts = path[: -len(".py")].split("/")
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        sources.append(Source(".".join(parts), is_package, path, text))
    return sources


FAKE = {
    "talkinghead/__init__.py": "",
    "talkinghead/weights.py": "import json\nfrom talkinghead.errors import Oops\n",
    "talkinghead/errors.py": "class Oops(Exception):\n    pass\n",
    "talkinghead/data/__init__.py": "",
    "talkinghead/data/store.py": "from talkinghead import __version__\nfrom talkinghead.weights import load\n",
    "talkinghead/data/late.py": "def f():\n    from talkinghead.methods.a.model import Net\n    return Net\n",
    "talkinghead/nn/__init__.py": "",
    "talkinghead/nn/net.py": "from ..data import store\nfrom talkinghead.data.store import _cache\n",
    "talkinghead/metrics/__init__.py": "from talkinghead.metrics import lse\n",
    "talkinghead/metrics/lse.py": "from talkinghead.metrics.base import register\n",
    "talkinghead/metrics/base.py": "def register():\n    import talkinghead.metrics.lse\n",
    "talkinghead/methods/__init__.py": "",
    "talkinghead/methods/registry.py": "from talkinghead.methods import a, b\n",
    "talkinghead/methods/a/__init__.py": "from . import model\n",
    "talkinghead/methods/a/model.py": "from ..b.model import Other\nfrom talkinghead.methods.a import helpers\n",
    "talkinghead/methods/a/helpers.py": "from talkinghead.methods.registry import METHODS\n",
    "talkinghead/methods/b/__init__.py": "",
    "talkinghead/methods/b/model.py": (
        "import importlib\nfrom importlib import import_module\n"
        "importlib.import_module('talkinghead.methods.a')\nimport_module(f'talkinghead.methods.{x}')\n"
        "__import__('talkinghead.data')\nimportlib.import_module('json')\nimportlib.import_module(name)\n"
        "importlib.import_module('.model', package='talkinghead.methods.a')\n"
    ),
    "talkinghead/bench/__init__.py": "from talkinghead.methods.registry import METHODS\nfrom talkinghead.cli import main\n",
    "talkinghead/cli.py": "from talkinghead.bench.harness import run\n",
    "talkinghead/extras.py": "",
}


def _fake():
    sources = synthetic(FAKE)
    return sources, *collect(sources)


def test_checker_collects_and_resolves_imports():
    sources, imports, _ = _fake()
    edges = {(i.source, i.target) for i in imports}
    assert ("talkinghead.data.late", "talkinghead.methods.a.model") in edges  # inside a function
    assert ("talkinghead.nn.net", "talkinghead.data.store") in edges  # relative, and a submodule by name
    assert ("talkinghead.methods.a", "talkinghead.methods.a.model") in edges  # `from . import model` in __init__
    assert ("talkinghead.methods.a.model", "talkinghead.methods.b.model") in edges  # `from ..b.model import`
    assert ("talkinghead.methods.registry", "talkinghead.methods.b") in edges
    assert ("talkinghead.weights", "talkinghead.errors") in edges and not any(i.target == "json" for i in imports)
    store = next(i for i in imports if i.source == "talkinghead.data.store" and i.target == "talkinghead")
    assert store.names == ("__version__",) and store.line == 1


def test_checker_layers():
    sources, imports, _ = _fake()
    problems = layer_violations(sources, imports)
    assert any("talkinghead/data/late.py:2" in p and "higher layer methods" in p for p in problems)
    assert any("talkinghead/bench/__init__.py:2" in p and "higher layer cli" in p for p in problems)
    assert any("module talkinghead.extras has no layer" in p for p in problems)
    assert len(problems) == 3, problems  # nn -> data, bench -> methods, cli -> bench are fine
    assert layer_of("talkinghead") == layer_of("talkinghead.config") == "base"
    assert layer_of("talkinghead.generation") == layer_of("talkinghead.training.loop") == "training"
    assert layer_of("talkinghead.methods.registry") == "methods" and layer_of("talkinghead.cli") == "cli"


def test_checker_cycles():
    _, imports, _ = _fake()
    assert find_cycles(imports) == [
        ["talkinghead.methods.a", "talkinghead.methods.a.model", "talkinghead.methods.a.helpers",
         "talkinghead.methods.registry", "talkinghead.methods.a"],  # a method importing the registry
        ["talkinghead.metrics.base", "talkinghead.metrics.lse", "talkinghead.metrics.base"],  # function-local
    ]
    message = cycle_messages(imports)[1]
    assert "talkinghead/metrics/base.py:2" in message and "talkinghead/metrics/lse.py:1" in message
    # __init__ importing its submodule is no cycle; a longer one is found too
    longer = [Import("x", "y", "x.py", 1), Import("y", "z", "y.py", 1), Import("z", "x", "z.py", 1),
              Import("z", "w", "z.py", 2)]
    assert find_cycles(longer) == [["x", "y", "z", "x"]]


def test_checker_methods():
    _, imports, _ = _fake()
    problems = method_violations(imports)
    assert any("talkinghead/methods/a/model.py:1" in p and "imports method b" in p for p in problems)
    assert any("talkinghead/methods/a/helpers.py:1" in p and "registry" in p for p in problems)
    assert len(problems) == 2, problems  # the registry importing a and b, and a importing itself, are fine
    bad_init = synthetic({"talkinghead/methods/__init__.py": "from talkinghead.methods.a import model\n",
                          "talkinghead/methods/a/__init__.py": "", "talkinghead/methods/a/model.py": ""})
    (problem,) = method_violations(collect(bad_init)[0])
    assert "only talkinghead.methods.registry may import" in problem


def test_checker_private_and_dynamic():
    _, imports, dynamic = _fake()
    (private,) = private_violations(imports)
    assert "talkinghead/nn/net.py:2" in private and "_cache" in private
    problems = dynamic_violations(sorted(dynamic, key=lambda d: d.line))
    assert [p.split(":")[1] for p in problems] == ["3", "4", "5", "8"], problems
    assert "import_module(f'talkinghead.methods.{x}')" in problems[1]


# ---------------------------------------------------------------------------------------------
# the package
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def package():
    sources = read_package()
    imports, dynamic = collect(sources)
    return sources, imports, dynamic


def test_the_checker_sees_the_package(package):
    sources, imports, _ = package
    names = {s.name for s in sources}
    assert {"talkinghead", "talkinghead.cli", "talkinghead.metrics.lse", "talkinghead.data.datamodule"} <= names
    edges = {(i.source, i.target) for i in imports}
    assert ("talkinghead.metrics.lse", "talkinghead.nn.syncnet") in edges
    assert len(imports) > 100


RULES = {
    "imports of a higher layer": lambda sources, imports, dynamic: layer_violations(sources, imports),
    "import cycles": lambda sources, imports, dynamic: cycle_messages(imports),
    "imports between method packages": lambda sources, imports, dynamic: method_violations(imports),
    "imports of private names": lambda sources, imports, dynamic: private_violations(imports),
    "dynamic imports of project modules": lambda sources, imports, dynamic: dynamic_violations(dynamic),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_package_keeps_the_rule(package, rule):
    problems = RULES[rule](*package)
    assert not problems, _report(problems, rule)
