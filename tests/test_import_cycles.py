"""No import cycle runs through the modules that turn the command line into
a running server (``tap``, ``options``, ``settings``, ``assembly``,
``service``, ``twisted_internals``, ``workers.*``).

The imports are read from the source with ``ast``: module-level ones and
those inside functions (a lazy import is still an edge), but not those
under ``if TYPE_CHECKING:``, which never run.  Importing ``a.b`` counts
as an edge to ``a.b`` alone, not to the package ``a`` whose
``__init__`` may re-export ``a.b``'s names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import popframe

pytestmark = pytest.mark.core

ROOT = Path(popframe.__file__).resolve().parent

#: The area this test guards: any cycle that passes through one of these
#: (through any other popframe module on the way) fails it.
GUARDED = ("popframe.tap", "popframe.options", "popframe.settings", "popframe.assembly",
           "popframe.service", "popframe.twisted_internals", "popframe.workers", "popframe.ops",
           "popframe.config")


def module_names() -> dict[str, Path]:
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = ("popframe", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, skipping the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The popframe modules ``name`` imports, wherever in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module
    (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
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


def guarded(name: str) -> bool:
    return any(name == area or name.startswith(area + ".") for area in GUARDED)


def test_no_cycle_runs_through_the_service_modules() -> None:
    through = [c for c in cycles(import_graph()) if any(map(guarded, c))]
    assert through == []


def test_the_graph_is_read_from_the_source() -> None:
    """The edges the layout is built on are seen (so the test above is
    not passing on an empty graph)."""
    graph = import_graph()
    assert "popframe.options" in graph["popframe.tap"]
    assert "popframe.service" in graph["popframe.tap"]  # inside makeService
    assert "popframe.ops.serving" in graph["popframe.service"]
    assert "popframe.assembly" in graph["popframe.ops.serving"]
    assert "popframe.workers" in graph["popframe.service"]
    assert "popframe.ops.serving" in graph["popframe.workers.child"]
    assert "popframe.workers.sockets" in graph["popframe.workers.pool"]
    assert "popframe.options" not in graph["popframe.settings"]  # TYPE_CHECKING only


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "d"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"x": {"y"}, "y": set()}) == []
