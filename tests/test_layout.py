"""The shape of the house, checked from the code's own imports and the README's request table.

- Every module the README's "Where each step of a request happens" table names imports, and
  the table covers parse, resolve, check, run and encode for both transports.
- No import circles among the modules of export/, serving/ and clients/ (statements that run
  at import time; imports inside functions are lazy by design and cannot deadlock an import).
- Floors, over every import (lazy ones too): clients import neither export nor serving nor
  TensorFlow; serving.modelserver never imports export (nor the launcher's packages); the
  transports reach the data plane only through ``types.DataPlane``.
- The wire vocabulary (dtype numbers, status codes, version states) is written once.
- No product module in serving/ or clients/ is over 400 lines without a "Size:" paragraph in
  its docstring saying why (export/ has the same check in tests/export/test_export_layout.py).
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("export", "serving", "clients")
MAX_LINES = 400
STEPS = ("parse", "resolve", "check", "run", "encode")


def _product_files(*packages: str) -> list[Path]:
    return sorted(
        p
        for pkg in packages
        for p in (ROOT / pkg).rglob("*.py")
        if not re.search(r"_pb2(_grpc)?\.py$", p.name)
    )


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in _product_files(*PACKAGES)}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, eager_only: bool) -> Iterator[str]:
    """Modules of the house that ``module`` imports. ``from P import m`` names ``P.m`` when
    that is a module (the package's ``__init__`` is not an edge then: importing a submodule
    of a package being initialised is the normal package pattern)."""
    is_package = MODULES.get(module, Path()).name == "__init__.py"

    def visit(node: ast.AST) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if eager_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".")
                    anchor = anchor[: len(anchor) - child.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    yield full if full in MODULES else base
            yield from visit(child)

    yield from visit(tree)


def _graph(eager_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set(_imports(tree, name, eager_only))
    return graph


def _in_house(name: str) -> str | None:
    """The house module an import names (``a.b.c`` -> the longest known prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


# -- the README table ------------------------------------------------------------------------


def _readme_table() -> list[tuple[str, list[str], list[str]]]:
    text = (ROOT / "README.md").read_text()
    start = text.index("#### Where each step of a request happens")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        if not line.startswith("| ") or line.startswith("| step") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 3, line
        step, rest, grpc = cells
        rows.append((step, re.findall(r"`([\w.]+)`", rest), re.findall(r"`([\w.]+)`", grpc)))
    return rows


def test_readme_table_covers_every_step_for_both_transports() -> None:
    rows = _readme_table()
    assert len(rows) >= len(STEPS)
    for step in STEPS:
        matching = [r for r in rows if r[0].split()[0] == step]
        assert matching, f"the README table has no {step!r} row"
        for _, rest, grpc in matching:
            assert rest and grpc, f"{step}: each transport names its module"


@pytest.mark.parametrize(
    "module", sorted({m for _, rest, grpc in _readme_table() for m in rest + grpc})
)
def test_every_module_the_table_names_imports(module: str) -> None:
    assert module in MODULES, f"{module} is not a module of the house"
    assert importlib.import_module(module).__name__ == module


# -- layering ----------------------------------------------------------------------------------


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    edges = {
        m: sorted(t for i in imps if (t := _in_house(i)) and t != m) for m, imps in graph.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    some = sorted(MODULES)[:3]
    assert _cycles({some[0]: {some[1]}, some[1]: {some[2]}, some[2]: {some[0]}}) == [sorted(some)]
    assert _cycles({some[0]: {some[1]}, some[1]: set(), some[2]: set()}) == []


def test_no_import_circles() -> None:
    graph = _graph(eager_only=True)
    assert len(graph) > 60  # the scan saw the house
    assert _cycles(graph) == []


def _offenders(prefix: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    graph = _graph(eager_only=False)
    out = {}
    for module, imports in graph.items():
        if module != prefix and not module.startswith(prefix + "."):
            continue
        bad = sorted(i for i in imports if any(i == f or i.startswith(f + ".") for f in forbidden))
        if bad:
            out[module] = bad
    return out


def test_clients_import_neither_export_nor_serving_nor_tensorflow() -> None:
    assert "clients.wire" in MODULES
    forbidden = ("export", "serving", "tensorflow", "tensorflow_serving", "keras")
    assert _offenders("clients", forbidden) == {}


def test_modelserver_never_imports_export_or_the_launcher() -> None:
    forbidden = ("export", "serving.backends", "serving.config", "serving.rollout", "serving.cli")
    assert _offenders("serving.modelserver", forbidden) == {}


@pytest.mark.parametrize("transport", ["serving.modelserver.rest", "serving.modelserver.grpc_api"])
def test_transports_see_only_the_data_plane_protocol(transport: str) -> None:
    inner = (
        "serving.modelserver.manager",
        "serving.modelserver.servable",
        "serving.modelserver.dataplane",
        "serving.modelserver.batching",
        "serving.modelserver.warmup",
        "tensorflow",  # (tensorflow_serving's generated servicers are fine for gRPC)
    )
    assert _offenders(transport, inner) == {}


def test_floor_check_sees_lazy_imports() -> None:
    # serving.modelserver.server imports grpc_api inside a method; the scan must see it.
    assert "serving.modelserver.grpc_api" in {
        _in_house(i) for i in _graph(eager_only=False)["serving.modelserver.server"]
    }
    assert "serving.modelserver.grpc_api" not in {
        _in_house(i) for i in _graph(eager_only=True)["serving.modelserver.server"]
    }


# -- one vocabulary ----------------------------------------------------------------------------

_VOCABULARY_NAMES = {
    "DT_FLOAT", "DT_STRING", "INVALID_ARGUMENT", "NOT_FOUND", "AVAILABLE", "LOADING",
}  # fmt: skip
_VOCABULARY_WORDS = {
    "float", "int32", "string", "INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "AVAILABLE",
    "LOADING", "START", "END",
}  # fmt: skip


def _vocabulary_definitions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            value = node.value.value
            for target in node.targets:
                named = isinstance(target, ast.Name) and target.id in _VOCABULARY_NAMES
                if named and isinstance(value, int):
                    found.append(f"{target.id} = {value} (line {node.lineno})")
        if isinstance(node, ast.Dict) and len(node.keys) >= 5:
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            words = {v.value for v in node.values if isinstance(v, ast.Constant)}
            if all(isinstance(k, int) for k in keys) and words & _VOCABULARY_WORDS:
                found.append(f"int -> name table (line {node.lineno})")
    return found


def test_the_wire_vocabulary_is_written_once() -> None:
    wire = ROOT / "clients" / "wire.py"
    assert _vocabulary_definitions(wire)  # the check recognises the real tables
    elsewhere = {
        str(p.relative_to(ROOT)): found
        for p in _product_files(*PACKAGES)
        if p != wire and (found := _vocabulary_definitions(p))
    }
    assert elsewhere == {}


# -- module size -------------------------------------------------------------------------------


def test_modules_are_small_or_say_why() -> None:
    too_long = {}
    for path in _product_files("serving", "clients"):
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        lines = len(text.splitlines())
        if lines > MAX_LINES and "Size:" not in doc:
            too_long[str(path.relative_to(ROOT))] = lines
    assert too_long == {}


def test_every_package_says_what_it_owns_and_must_never_import() -> None:
    packages = [
        "serving",
        "serving.modelserver",
        "serving.modelserver.rest",
        "serving.backends",
        "serving.config",
        "clients",
    ]
    for name in packages:
        path = MODULES[name]
        assert path.name == "__init__.py", name
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Owns" in doc and "ust never import" in doc, name
