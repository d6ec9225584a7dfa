"""The import layering of ARCHITECTURE.md, read from the source with ``ast``.

Every ``import`` counts: at module level, inside functions (lazy imports) and under
``TYPE_CHECKING``. The library packages form no import cycle; ``solvers`` and ``simulation``
import only ``operators`` (and themselves); nothing imports ``benchmarks`` or ``tests``; and
``pinqi/`` keeps at most 15 modules at its top level.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("operators", "solvers", "simulation", "pinqi")
PROJECT = (*LIBRARY, "benchmarks", "tests")
ALLOWED = {"operators": {"operators"}, "solvers": {"solvers", "operators"},
           "simulation": {"simulation", "operators"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every project name ``path`` imports: ``import X`` gives X, ``from X import y`` gives X.y."""
    name = _module_name(path)
    return _imports_of(path.read_text(), name if path.name == "__init__.py" else name.rpartition(".")[0])


def _imports_of(source: str, package: str) -> set[str]:
    """The project modules ``source`` (a module of ``package``) imports, anywhere in its tree."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PROJECT}


def _graph() -> dict[str, set[str]]:
    files = [p for top in LIBRARY for p in (ROOT / top).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(path):
            # ``from pkg import name``: the module pkg.name if there is one, else pkg itself
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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


def test_no_import_cycle_among_library_modules() -> None:
    graph = _graph()
    assert len(graph) > 50
    assert _cycles(graph) == []


def test_imports_flow_one_way() -> None:
    wrong = []
    for name, edges in _graph().items():
        top = name.split(".")[0]
        for target in edges:
            other = target.split(".")[0]
            if other in ("benchmarks", "tests") or (top in ALLOWED and other not in ALLOWED[top]):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_no_test_outside_tests_benchmarks_imports_benchmarks() -> None:
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")
        if "benchmarks" not in p.relative_to(ROOT / "tests").parts[:1]
        and any(m.split(".")[0] == "benchmarks" for m in _imports(p))
    ]  # fmt: skip
    assert sorted(offenders) == []


def test_pinqi_has_at_most_15_top_level_modules() -> None:
    modules = sorted(p.name for p in (ROOT / "pinqi").glob("*.py"))
    assert len(modules) <= 15, modules


def test_the_checker_sees_lazy_and_type_checking_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .x import y\ndef f():\n    import pinqi.cli\n"
    assert _imports_of(source, "pinqi.w2q") == {"pinqi.w2q.x.y", "pinqi.cli"}
    assert _imports_of("from ..common import trainer", "pinqi.w2q") == {"pinqi.common.trainer"}
