"""sdrun/ has no import cycle: every import between its modules, those inside functions and
under TYPE_CHECKING included, goes one way (a lazy import hides a cycle, it does not remove it).
`from package import name` counts as an import of the submodule `name` when there is one, else
of the package's __init__."""

from __future__ import annotations

import ast
from pathlib import Path

import sdrun

ROOT = Path(sdrun.__file__).parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = ("sdrun", *path.relative_to(ROOT).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The sdrun modules the module `name` (at `path`) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = {s for s in subs if s in modules}
            if len(targets) < len(subs):
                targets.add(base)
        elif isinstance(node, ast.Import):
            targets = {a.name for a in node.names}
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def test_no_module_of_sdrun_imports_one_that_imports_it():
    modules = module_names()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert "sdrun.report.markdown" in graph["sdrun.report.write"]  # the walk sees the imports
    assert "sdrun.config" in graph["sdrun.methods.registry"]
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
