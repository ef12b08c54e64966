"""The package's rooms import one way: no cycles, and the arrows of docs/architecture.md hold.

Every ``import embedforge...`` counts, at module level or inside a function (a lazy import is
still a dependency); only ``if TYPE_CHECKING:`` blocks are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """``module -> embedforge modules it imports`` for every module under src/embedforge."""
    modules = {_module(p): p for p in (SRC / "embedforge").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between rooms: ``embedforge.<package>`` or a top-level module."""

    def room(m: str) -> str:
        return ".".join(m.split(".")[:2])

    rooms: dict[str, set[str]] = {}
    for m, deps in graph.items():
        rooms.setdefault(room(m), set()).update(room(d) for d in deps if room(d) != room(m))
    return rooms


def test_no_import_cycle_between_rooms():
    """e.g. export -> pipeline -> export (via export.model_card) was one, found by this test."""
    cycle = find_cycle(room_graph(import_graph()))
    assert cycle is None, " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


#: rooms (packages or modules) and the rooms they must never import
FORBIDDEN = {
    "embedforge.losses": ["embedforge.models", "embedforge.train", "embedforge.pipeline"],
    "embedforge.eval": ["embedforge.train", "embedforge.pipeline", "embedforge.runs"],
    "embedforge.data": ["embedforge.generate", "embedforge.train", "embedforge.pipeline"],
    "embedforge.generate": ["embedforge.train", "embedforge.pipeline", "embedforge.export"],
    "embedforge.export": ["embedforge.train", "embedforge.pipeline", "embedforge.generate"],
    "embedforge.serve": [
        "embedforge.train",
        "embedforge.pipeline",
        "embedforge.generate",
        "embedforge.data",
    ],
    "embedforge.runs": ["embedforge.train", "embedforge.pipeline", "embedforge.export"],
    "embedforge.train": ["embedforge.pipeline", "embedforge.export", "embedforge.generate"],
    "embedforge.judge": ["embedforge.train", "embedforge.pipeline", "embedforge.export"],
}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_import_one_way(room):
    graph = import_graph()
    inside = [m for m in graph if m == room or m.startswith(room + ".")]
    bad = [
        f"{m} imports {d}"
        for m in inside
        for d in graph[m]
        for f in FORBIDDEN[room]
        if d == f or d.startswith(f + ".")
    ]
    assert not bad, bad
