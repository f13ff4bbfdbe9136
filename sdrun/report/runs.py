"""Finding and reading run and sweep directories.

A run is a directory holding `.hydra/config.yaml`; `load_run` says why one is not complete
when it is not, and `link_teachers` follows each kd run to its teacher run to name its method
(`born-again-g<k>`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from sdrun.checkpoint import run_dir_of
from sdrun.config import flatten

CONFIG = Path(".hydra") / "config.yaml"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
MULTIRUN = "multirun.yaml"
# Folders inside a run that never hold runs: not worth walking (checkpoints can be large).
NOT_RUNS = {"checkpoints", "wandb", ".hydra", "report"}

# Config keys that define what a run computes (the seed aside). Paths and loader settings
# do not change the result, and a kd run's teacher path differs for every seed of a chain.
DEFINING = ("dataset.", "model.", "schedule.", "distill.", "optim.")
NOT_DEFINING = {
    "dataset.root",
    "dataset.download",
    "dataset.eval_batch_size",
    "dataset.num_workers",
    "distill.teacher_checkpoint",
}


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flattened: "distill.temperature" -> 2.0
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    problem: Optional[str] = None  # why it is not a complete run; None when complete
    method: str = "?"
    teacher: Optional[Run] = None

    @property
    def complete(self) -> bool:
        return self.problem is None

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset.name", "?"))

    @property
    def model(self) -> str:
        return str(self.config.get("model.name", "?"))

    @property
    def seed(self) -> Any:
        """The seed runs are paired on: a born-again chain's root seed (its generations train
        with seeds of their own), else the run's seed."""
        root = self.config.get("root_seed")
        return self.config.get("seed") if root is None else root

    @property
    def generation(self) -> Optional[int]:
        """1 for a run from scratch, teacher's + 1 for kd; None if the chain is broken."""
        if self.config.get("distill.name") != "kd":
            return 1
        parent = None if self.teacher is None else self.teacher.generation
        return None if parent is None else parent + 1

    def signature(self) -> dict[str, Any]:
        """Everything this run computed, except the seed."""
        sig = {
            k: v for k, v in self.config.items() if k.startswith(DEFINING) and k not in NOT_DEFINING
        }
        if self.teacher is not None:
            sig["teacher"] = self.teacher.method  # kd from an SD run is not kd from a baseline
        return sig

    def wall_s(self) -> Optional[float]:
        value = self.summary.get("time/wall_s", self.summary.get("time/train_s"))
        return None if value is None else float(value)

    def gpu_s(self) -> Optional[float]:
        """GPU time (wall x GPUs); None on the CPU."""
        wall = self.wall_s()
        if wall is None or str(self.summary.get("device", "cpu")).lower().startswith("cpu"):
            return None
        return wall * int(self.summary.get("processes", 1))  # one GPU per process

    def wall_s_with_teachers(self) -> Optional[float]:
        """What the result really cost: this run plus every run that trained its teachers."""
        own = self.wall_s()
        if self.config.get("distill.name") != "kd":
            return own
        if self.teacher is None or own is None or not self.teacher.complete:
            return None
        before = self.teacher.wall_s_with_teachers()
        return None if before is None else own + before


def find_dirs(paths: Iterable[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """(run dirs, sweep dirs, orphans): orphans hold run files but no `.hydra/config.yaml`."""
    runs, sweeps, orphans = set(), set(), set()
    for root in paths:
        for folder, subdirs, files in os.walk(root):
            here = Path(folder)
            if (here / CONFIG).is_file():
                runs.add(here.resolve())
                subdirs.clear()  # a run holds no other runs
                continue
            if MULTIRUN in files:
                sweeps.add(here.resolve())
            elif METRICS in files or SUMMARY in files:
                orphans.add(here.resolve())
            subdirs[:] = sorted(d for d in subdirs if d not in NOT_RUNS)
    return sorted(runs), sorted(sweeps), sorted(orphans)


def load_run(path: Path) -> Run:
    """Read a run directory; a run that cannot be averaged gets a `problem` saying why."""
    try:
        config = flatten(yaml.safe_load((path / CONFIG).read_text()) or {})
    except (OSError, yaml.YAMLError) as err:
        return Run(path, {}, {}, [], problem=f"unreadable {CONFIG}: {err}")
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
    if run.summary.get("complete") is not True:
        run.problem = f"incomplete: {SUMMARY} says complete={run.summary.get('complete')}; {done}"
    elif run.summary.get("student/top1") is None:
        run.problem = f"{SUMMARY} has no student/top1"
    elif cut:
        run.problem = f"{METRICS} has {cut} unreadable line(s): the file was damaged"
    return run


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, number of unreadable lines): a kill can cut the last line short."""
    if not path.is_file():
        return [], 0
    records, cut = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            cut += 1
    return records, cut


def teacher_dir(run: Run) -> Optional[Path]:
    """The run directory of a kd run's teacher, if it can be found."""
    given = run.config.get("distill.teacher_checkpoint")
    if not given:
        return None
    path = Path(str(given)).expanduser()
    if path.is_dir():
        return path.resolve() if (path / CONFIG).is_file() else None
    return run_dir_of(path) if path.is_file() else None


def method_of(run: Run) -> str:
    distill, schedule = run.config.get("distill.name"), run.config.get("schedule.name")
    if distill == "sd":
        return "sd" if schedule == "sd" else f"sd-{schedule}"
    if distill == "none":
        return "cyclic" if schedule == "sd" else str(schedule)
    if distill == "kd":
        generation = run.generation
        return "kd" if generation is None else f"born-again-g{generation}"
    return str(distill)


def link_teachers(runs: list[Run]) -> None:
    """Attach each kd run's teacher run (read from disk if it was not scanned), then label."""
    by_path = {run.path: run for run in runs}

    def resolve(run: Run, seen: frozenset[Path]) -> None:
        if run.config.get("distill.name") == "kd" and run.teacher is None:
            found = teacher_dir(run)
            if found is not None and found not in seen:
                if found not in by_path:
                    by_path[found] = load_run(found)
                run.teacher = by_path[found]
                resolve(run.teacher, seen | {run.path})
        run.method = method_of(run)

    for run in runs:
        resolve(run, frozenset())


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
