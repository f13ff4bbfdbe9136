"""Finding and reading run and sweep directories.

A run is a directory holding `.hydra/config.yaml`; `load_run` says why one is not complete
when it is not, and `link_teachers` follows each kd run to its teacher run to name its method
(`born-again-g<k>`) and to know what taught it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from sdrun.config import effective_cycles, flatten
from sdrun.methods import FILE, find_method, method_label
from sdrun.report import costs
from sdrun.report.identity import runtime_of, settings_read
from sdrun.report.run_files import SUMMARY, bad_number, read_metrics, safe_yaml
from sdrun.runfolder.checkpoint import LAST, run_dir_of

CONFIG = Path(".hydra") / "config.yaml"
HYDRA = Path(".hydra") / "hydra.yaml"
METRICS = "metrics.jsonl"
MULTIRUN = "multirun.yaml"
# Folders inside a run that never hold runs: not worth walking (checkpoints can be large).
NOT_RUNS = {"checkpoints", "wandb", ".hydra", "report"}


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flattened: "distill.temperature" -> 2.0
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    problem: Optional[str] = None  # why the run itself is not complete; None when it is
    method: str = "?"
    teacher: Optional[Run] = None
    teacher_problem: Optional[str] = None  # a kd run's teacher is missing or incomplete

    @property
    def complete(self) -> bool:
        return self.problem is None and self.teacher_problem is None

    @property
    def diverged(self) -> bool:
        """Stopped on a non-finite loss: an outcome of its method, counted in its row."""
        return self.summary.get("diverged") is True and self.teacher_problem is None

    @property
    def reason(self) -> Optional[str]:
        """Why the run is not averaged; None when it is."""
        return self.problem or self.teacher_problem

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset.name", "?"))

    @property
    def model(self) -> str:
        return str(self.config.get("model.name", "?"))

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def root_seed(self) -> Any:
        """The seed runs are paired on: a born-again chain's root seed (its generation 1's),
        the run's own seed for anything else or when an older sdrun did not record it."""
        for value in (self.summary.get("root_seed"), self.config.get("root_seed")):
            if value is not None:
                return value
        return self.seed

    @property
    def generation(self) -> Optional[int]:
        """1 for a run from scratch, teacher's + 1 for kd; None if the chain is broken."""
        if not taught_by_file(self):
            return 1
        parent = None if self.teacher is None else self.teacher.generation
        return None if parent is None else parent + 1

    def signature(self) -> dict[str, Any]:
        """What this run computed, except the seed (see sdrun/report/identity.py)."""
        sig = {**settings_read(self.config, self.summary), **runtime_of(self.config, self.summary)}
        if taught_by_file(self):
            sig.update(teacher_identity(self))
        return sig

    def wall_s(self) -> Optional[float]:
        return costs.wall_s(self.summary)

    def process_s(self) -> Optional[float]:
        return costs.process_s(self.summary)

    def lost_process_s(self) -> Optional[float]:
        return costs.lost_process_s(self.summary)

    def process_s_with_teachers(self) -> Optional[float]:
        """What the result cost: this run's process-seconds, work lost to stops included,
        plus those of every run that trained its teachers."""
        own = costs.total_process_s(self.summary)
        if not taught_by_file(self) or own is None:
            return own
        if self.teacher is None or not self.teacher.complete:
            return None
        before = self.teacher.process_s_with_teachers()
        return None if before is None else own + before


def teacher_identity(run: Run) -> dict[str, Any]:
    """A kd run's teacher as part of its identity: the teacher run's own identity under
    `teacher.`, or the teacher file when it is not an sdrun run directory."""
    found = teacher_path(run)
    if run.teacher is not None:
        inner = {"method": run.teacher.method, **run.teacher.signature()}
        # which of its checkpoints taught: the final model, or e.g. an earlier cycle's snapshot
        inner["checkpoint"] = found.name if found is not None and found.is_file() else LAST
        return {f"teacher.{k}": v for k, v in inner.items()}
    return {"teacher.file": str(found) if found is not None else "not found"}


def find_dirs(paths: Iterable[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """(run dirs, sweep dirs, orphans): orphans hold run files but no `.hydra/config.yaml`."""
    runs, sweeps, orphans = set(), set(), set()
    seen: set[Path] = set()  # folders walked, resolved: a link loop is walked once
    for root in paths:
        # Symlinked folders are followed (a results tree often links runs in from scratch).
        for folder, subdirs, files in os.walk(root, followlinks=True):
            here = Path(folder)
            real = here.resolve()
            if real in seen:
                subdirs.clear()
                continue
            seen.add(real)
            if (here / CONFIG).is_file():
                runs.add(real)
                subdirs.clear()  # a run holds no other runs
                continue
            if MULTIRUN in files:
                sweeps.add(real)
            elif METRICS in files or SUMMARY in files:
                orphans.add(real)
            subdirs[:] = sorted(d for d in subdirs if d not in NOT_RUNS)
    return sorted(runs), sorted(sweeps), sorted(orphans)


def load_run(path: Path) -> Run:
    """Read a run directory; a run that cannot be averaged gets a `problem` saying why. A
    folder that cannot be read at all is a Run with a problem, never an exception: one
    damaged folder does not stop the report of the others."""
    try:
        return _load_run(path)
    except Exception as err:  # noqa: BLE001 - any content, however malformed, is one bad run
        return Run(path, {}, {}, [], problem=f"unreadable run folder ({type(err).__name__}: {err})")


def _load_run(path: Path) -> Run:
    try:
        tree = safe_yaml((path / CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        return Run(path, {}, {}, [], problem=f"unreadable {CONFIG}: {err}")
    if not isinstance(tree, dict):
        return Run(path, {}, {}, [], problem=f"{CONFIG} is a {type(tree).__name__}, not a mapping")
    config = effective_cycles(flatten(tree))
    metrics, cut = read_metrics(path / METRICS)
    run = Run(path, config, {}, metrics)
    epochs = config.get("schedule.epochs", "?")
    done = f"{len(metrics)} of {epochs} epochs done"
    if not (path / SUMMARY).exists():
        what = "no epoch finished" if not metrics else done
        run.problem = f"incomplete: {what}, no {SUMMARY} (killed, failed or still running)"
        return run
    try:
        run.summary = json.loads((path / SUMMARY).read_text())
    except (OSError, ValueError) as err:
        run.problem = f"unreadable {SUMMARY} ({err}); {done}"
        return run
    if not isinstance(run.summary, dict):
        kind = type(run.summary).__name__
        run.summary = {}
        run.problem = f"{SUMMARY} is a {kind}, not a mapping; {done}"
        return run
    bad = bad_number(run.summary)
    if run.diverged:
        where = f"epoch {run.summary.get('diverged_epoch', '?')}"
        where += f", step {run.summary.get('diverged_step', '?')}"
        run.problem = f"diverged: the loss became NaN or infinite in {where}; counted in its row"
    elif run.summary.get("complete") is not True:
        run.problem = f"incomplete: {SUMMARY} says complete={run.summary.get('complete')}; {done}"
    elif bad is not None:
        run.problem = f"{bad}; not averaged"
    elif run.summary.get("student/top1") is None:
        run.problem = f"{SUMMARY} has no student/top1"
    elif cut:
        run.problem = f"{METRICS} has {cut} unreadable line(s): the file was damaged"
    return run


def launch_dirs(run_dir: Path) -> list[Path]:
    """Where sdrun was started for this run (Hydra's `hydra.runtime.cwd`, of this session and
    of sessions before a resume): sdrun reads a relative path from there."""
    files = [run_dir / HYDRA, *sorted((run_dir / ".hydra").glob(f"before-resume-*/{HYDRA.name}"))]
    found = []
    for path in files:
        try:
            cwd = (safe_yaml(path.read_text()) or {})["hydra"]["runtime"]["cwd"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            continue
        if cwd and Path(cwd) not in found:
            found.append(Path(cwd))
    return found


def teacher_path(run: Run) -> Optional[Path]:
    """The teacher checkpoint or run directory a kd run names, resolved as sdrun resolved it:
    a relative path against the directory sdrun was started in, then against the student's run
    directory - never against where the report runs."""
    given = run.config.get("distill.teacher_checkpoint")
    if not given:
        return None
    path = Path(str(given)).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    for base in (*launch_dirs(run.path), run.path):
        if (base / path).exists():
            return (base / path).resolve()
    return None


def teacher_dir(run: Run) -> Optional[Path]:
    """The run directory of a kd run's teacher, if it can be found."""
    path = teacher_path(run)
    if path is None:
        return None
    if path.is_dir():
        return path.resolve() if (path / CONFIG).is_file() else None
    return run_dir_of(path)


def taught_by_file(run: Run) -> bool:
    """Whether the run's method learns from a saved model (kd): its teacher run is part of
    its recipe."""
    method = find_method(run.config.get("distill.name"))
    return method is not None and method.teacher == FILE


def method_of(run: Run) -> str:
    label = method_label(run.config.get("distill.name"), run.config.get("schedule.name"))
    if taught_by_file(run) and run.generation is not None:
        return f"born-again-g{run.generation}"  # a chain of students, each the next's teacher
    return label


def link_teachers(runs: list[Run]) -> None:
    """Attach each kd run's teacher run (read from disk if it was not scanned), label it, and
    leave out students whose teacher is missing or incomplete: their recipe is not known."""
    by_path = {run.path: run for run in runs}

    def resolve(run: Run, seen: frozenset[Path]) -> None:
        if taught_by_file(run) and run.teacher is None:
            found = teacher_dir(run)
            if found is not None and found not in seen:
                if found not in by_path:
                    by_path[found] = load_run(found)
                run.teacher = by_path[found]
                resolve(run.teacher, seen | {run.path})
        run.method = method_of(run)

    for run in runs:
        resolve(run, frozenset())
    for run in by_path.values():
        run.teacher_problem = check_teacher(run)


def check_teacher(run: Run) -> Optional[str]:
    """Why a kd run's teacher makes it unusable (missing, or incomplete itself), else None."""
    if not taught_by_file(run):
        return None
    if run.teacher is None:
        if teacher_path(run) is not None:
            return None  # a teacher file outside any run directory: identified by its path
        given = run.config.get("distill.teacher_checkpoint")
        return f"teacher {given} not found: its recipe is unknown; not averaged"
    if run.teacher.problem is not None:
        return f"teacher run {run.teacher.path} not complete ({run.teacher.problem}); not averaged"
    return check_teacher(run.teacher)


def load_runs(paths: Sequence[Path]) -> tuple[list[Run], list[Path], list[str]]:
    """(runs, sweep dirs, messages about folders that are not readable runs)."""
    run_dirs, sweeps, orphans = find_dirs(paths)
    runs = [load_run(path) for path in run_dirs]
    link_teachers(runs)
    notes = [
        f"{path}: has run files but no {CONFIG}: not a run directory sdrun wrote; skipped"
        for path in orphans
    ]
    return runs, sweeps, notes
