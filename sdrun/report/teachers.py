"""A kd run's teacher: which run (and which of its checkpoints) taught it.

`distill.teacher_checkpoint` is resolved as sdrun resolved it: an absolute path as it is, a
relative one against the directory sdrun was started in (Hydra's `hydra.runtime.cwd`, of this
session and of the sessions before a resume), then against the student's own run folder; never
against where the report runs. The report reads the teacher only inside the folders it was
given (scope.py); a teacher elsewhere is named, not read, and its student is not averaged: its
recipe is unknown there.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sdrun.report.run_files import HYDRA, READ_ERRORS, inside, read_mapping_yaml
from sdrun.report.runs import LAST, Run, load_run, method_of, taught_by_file
from sdrun.report.scope import Scope

CHECKPOINTS = "checkpoints"
BEFORE_RESUME = "before-resume-"  # .hydra/before-resume-*/: an earlier session's Hydra files


@dataclass
class Teacher:
    run: Optional[Run] = None  # the teacher run, when it is one
    checkpoint: str = LAST  # which of its checkpoints
    file: Optional[str] = None  # a teacher file in no run folder (identified by its path)
    problem: Optional[str] = None  # why the teacher is unknown


def launch_dirs(run: Run) -> list[Path]:
    """Where sdrun was started for this run (this session's and earlier sessions')."""
    files = [HYDRA]
    with contextlib.suppress(OSError), os.scandir(run.path / HYDRA.parent) as earlier:
        names = [e.name for e in earlier if e.name.startswith(BEFORE_RESUME)]
        files += [HYDRA.parent / name / HYDRA.name for name in names]  # a link: inside() refuses
    found = []
    for name in sorted(files):
        try:
            cwd = read_mapping_yaml(inside(run.path, name))["hydra"]["runtime"]["cwd"]
        except (*READ_ERRORS, KeyError, TypeError):
            continue
        if isinstance(cwd, str) and os.path.isabs(cwd) and Path(cwd) not in found:
            found.append(Path(cwd))
    return found


def find_teacher(run: Run, scope: Scope) -> Teacher:
    """The teacher `run` names, looked for inside the scope only."""
    given = str(run.config.get("distill.teacher_checkpoint") or "")
    if not given:
        return Teacher(problem="no distill.teacher_checkpoint: its recipe is unknown")
    path = Path(given).expanduser()
    candidates = [path] if path.is_absolute() else [b / path for b in (*launch_dirs(run), run.path)]
    outside = True
    for candidate in candidates:
        where = scope.within(candidate)
        if where is None:
            continue
        outside = False
        found = _teacher_at(where, scope)
        if found is not None:
            return found
    if outside:
        where = "outside the folders given to sdrun-report, which reads nothing else"
        return Teacher(problem=f"teacher {given} is {where}: its recipe is unknown (give its "
                       "folder too)")  # fmt: skip
    return Teacher(problem=f"teacher {given} not found: its recipe is unknown")


def _teacher_at(path: Path, scope: Scope) -> Optional[Teacher]:
    """What is at `path` (inside the scope): a run folder, a checkpoint of one, or a file."""
    found = scope.run_at(path)
    if found is not None:
        return Teacher(found)
    if path.parent.name == CHECKPOINTS:
        owner = scope.run_at(path.parent.parent)
        if owner is not None:
            return Teacher(owner, checkpoint=path.name) if _is_file(path, scope) else None
    return Teacher(file=str(path)) if _is_file(path, scope) else None


def _is_file(path: Path, scope: Scope) -> bool:
    """Whether `path` is a regular file reached from its root through real folders only (in
    an open scope: any file)."""
    if scope.open:
        return path.is_file()
    root = scope.root_of(path)
    if root is None:
        return False
    try:
        return stat.S_ISREG(os.lstat(inside(root, path.relative_to(root))).st_mode)
    except OSError:
        return False


def link_teachers(runs: list[Run], scope: Optional[Scope] = None) -> None:
    """Attach each kd run's teacher run, label every run, and leave out students whose teacher
    is unknown or incomplete: their recipe is not known. Without a scope, any run folder a
    path names is read (sdrun-transfer naming a checkpoint's method, not the report)."""
    scope = Scope(None, load_run) if scope is None else scope
    for run in runs:
        scope.runs.setdefault(run.path, run)
    teachers: dict[Path, Teacher] = {}

    def resolve(run: Run, chain: tuple[Path, ...]) -> None:
        if not taught_by_file(run) or run.path in teachers:
            return
        found = find_teacher(run, scope)
        if found.run is not None and found.run.path in (*chain, run.path):
            found = Teacher(problem=f"its teacher chain loops back to {found.run.path}")
        teachers[run.path] = found
        run.teacher, run.teacher_checkpoint, run.teacher_file = (
            found.run,
            found.checkpoint,
            found.file,
        )
        if found.run is not None:
            resolve(found.run, (*chain, run.path))

    for run in list(scope.runs.values()):
        resolve(run, ())
    for run in scope.runs.values():
        run.method = method_of(run)
        run.teacher_problem = check_teacher(run, teachers)


def check_teacher(run: Run, teachers: dict[Path, Teacher]) -> Optional[str]:
    """Why a kd run's teacher makes it unusable (unknown, or incomplete itself), else None."""
    if not taught_by_file(run):
        return None
    found = teachers.get(run.path)
    if found is None or found.problem is not None:
        why = "its teacher was not looked for" if found is None else found.problem
        return f"{why}; not averaged"
    if found.run is None:
        return None  # a teacher file outside any run directory: identified by its path
    if found.run.problem is not None:
        return f"teacher run {found.run.path} not complete ({found.run.problem}); not averaged"
    return check_teacher(found.run, teachers)
