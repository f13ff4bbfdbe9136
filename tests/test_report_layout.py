"""sdrun/report/ has no import cycle (issue 28, item 18): every import between its modules,
those inside functions and under TYPE_CHECKING included, goes one way."""

from __future__ import annotations

import ast
from pathlib import Path

import sdrun.report

PACKAGE = Path(sdrun.report.__file__).parent


def imports_of(path: Path) -> set[str]:
    """The sdrun.report modules `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.rsplit(".", 1)[-1] for n in names if n.startswith("sdrun.report.")}
    return found


def test_no_module_of_the_report_imports_one_that_imports_it():
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    graph = {name: imports_of(path) & set(modules) for name, path in modules.items()}
    assert graph["markdown"] and graph["write"]  # the walk sees the imports
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            assert state.get(other) != "open", " -> ".join((*chain, name, other))
            if other not in state:
                visit(other, (*chain, name))
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, ())
