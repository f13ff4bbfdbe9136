"""Everything the report reads from the folders it is given: the walk (walk.py), each run
(runs.py), each kd run's teacher (teachers.py), all inside those folders (scope.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdrun.report.run_files import CONFIG
from sdrun.report.runs import Run, load_run
from sdrun.report.scope import Scope
from sdrun.report.teachers import link_teachers
from sdrun.report.walk import find_dirs


@dataclass
class Scan:
    runs: list[Run]
    sweeps: list[Path]  # folders holding multirun.yaml
    notes: list[str]  # folders that are not runs, entries not followed
    scope: Scope = field(repr=False, default=None)  # type: ignore[assignment]


def scan(paths: Sequence[Path], skip: Collection[Path] = (), context: Sequence[Path] = ()) -> Scan:
    """Read every run under `paths`, the folders as the user gave them (`skip`: the report's
    own folder). The runs under `context` are read too, to identify teachers and backbones,
    but are not among the runs returned (unless they lie under `paths` as well)."""
    roots = [Path(p).resolve() for p in paths]
    found = find_dirs([*roots, *(Path(p).resolve() for p in context)], skip)
    scope = Scope([*paths, *context], load_run)
    runs = [load_run(path) for path in found.runs]
    scope.runs.update({run.path: run for run in runs})
    link_teachers(runs, scope)
    notes = [
        f"{path}: has run files but no {CONFIG}: not a run directory sdrun wrote; skipped"
        for path in found.orphans
    ]
    shown = [run for run in runs if any(run.path.is_relative_to(r) for r in roots)]
    sweeps = [s for s in found.sweeps if any(s.is_relative_to(r) for r in roots)]
    return Scan(shown, sweeps, notes + found.skipped, scope)


def load_runs(paths: Sequence[Path]) -> tuple[list[Run], list[Path], list[str]]:
    """(runs, sweep dirs, notes) under `paths`."""
    found = scan(paths)
    return found.runs, found.sweeps, found.notes
