"""A run folder as the report sees it.

A run is a folder holding `.hydra/config.yaml` (found by walk.py); `load_run` reads it through
run_files.py and says why it is not complete when it is not: a file that cannot be read, or
holds what sdrun never writes, is that run's reason, never an exception. A kd run's teacher is
linked by teachers.py, which names its method (`born-again-g<k>`) and knows what taught it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sdrun.config import effective_cycles, flatten
from sdrun.report import costs
from sdrun.report.identity import runtime_of, settings_read
from sdrun.report.method_catalog import FILE, find_method, method_label
from sdrun.report.run_files import (
    CONFIG,
    METRICS,
    READ_ERRORS,
    SUMMARY,
    NotSdrunShape,
    bad_number,
    has_summary,
    not_read,
    read_config,
    read_metrics,
    read_summary,
)
from sdrun.trust.files import UnsafeFile

LAST = "last.pt"  # the final checkpoint (sdrun.runfolder.checkpoint.LAST)


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flattened: "distill.temperature" -> 2.0
    summary: dict[str, Any]
    metrics: Optional[list[dict[str, Any]]] = None  # metrics.jsonl; None: not read
    problem: Optional[str] = None  # why the run itself is not complete; None when it is
    method: str = "?"
    teacher: Optional[Run] = None
    teacher_problem: Optional[str] = None  # a kd run's teacher is missing or incomplete
    teacher_checkpoint: str = LAST  # which checkpoint of the teacher run taught
    teacher_file: Optional[str] = None  # a teacher file outside any run folder
    summary_mtime: float = 0.0  # when summary.json was written: the newest run of a seed wins

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
    if run.teacher is not None:
        inner = {"method": run.teacher.method, **run.teacher.signature()}
        # which of its checkpoints taught: the final model, or e.g. an earlier cycle's snapshot
        inner["checkpoint"] = run.teacher_checkpoint
        return {f"teacher.{k}": v for k, v in inner.items()}
    return {"teacher.file": run.teacher_file or "not found"}


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


def load_run(path: Path) -> Run:
    """Read a run directory; a run that cannot be averaged gets a `problem` saying why. A
    folder that cannot be read at all is a Run with a problem, never an exception: one
    damaged folder does not stop the report of the others."""
    try:
        return _load_run(path)
    except Exception as err:  # noqa: BLE001 - any content, however malformed, is one bad run
        return Run(path, {}, {}, problem=f"unreadable run folder ({type(err).__name__}: {err})")


def _load_run(path: Path) -> Run:
    try:
        tree = read_config(path)
    except READ_ERRORS as err:
        return Run(path, {}, {}, problem=_unreadable(CONFIG, err))
    run = Run(path, effective_cycles(flatten(tree)), {})
    if not has_summary(path):
        done = epochs_done(run)
        what = "no epoch finished" if run.metrics == [] else done
        run.problem = f"incomplete: {what}, no {SUMMARY} (killed, failed or still running)"
        return run
    try:
        summary, run.summary_mtime = read_summary(path)
    except READ_ERRORS as err:
        run.problem = f"{_unreadable(Path(SUMMARY), err)}; {epochs_done(run)}"
        return run
    if not isinstance(summary, dict):
        run.problem = f"{SUMMARY} is a {type(summary).__name__}, not a mapping; {epochs_done(run)}"
        return run
    run.summary = summary
    run.problem = summary_problem(run)
    return run


def _unreadable(name: Path, err: BaseException) -> str:
    """A file's reason: `not read: ...` for one sdrun never writes (a link, a FIFO, too
    large), else what is wrong with its content."""
    if isinstance(err, UnsafeFile):
        return not_read(err)
    if isinstance(err, NotSdrunShape):
        return str(err)
    return f"unreadable {name} ({' '.join(str(err).split())[:300]})"


def summary_problem(run: Run) -> Optional[str]:
    """Why a run with a readable summary is not averaged (None: it is); its metrics.jsonl is
    read only when it is not (to say how many epochs were done)."""
    summary, bad = run.summary, bad_number(run.summary)
    if run.diverged:
        where = f"epoch {summary.get('diverged_epoch', '?')}"
        where += f", step {summary.get('diverged_step', '?')}"
        return f"diverged: the loss became NaN or infinite in {where}; counted in its row"
    if summary.get("complete") is not True:
        return f"incomplete: {SUMMARY} says complete={summary.get('complete')}; {epochs_done(run)}"
    if bad is not None:
        return f"{bad}; not averaged"
    if summary.get("student/top1") is None:
        return f"{SUMMARY} has no student/top1"
    # A complete run's numbers all come from its summary: metrics.jsonl is read only for its
    # curves (--run-plots), not to judge it (most of a large report's time was that parse).
    return None


def run_metrics(run: Run) -> list[dict[str, Any]]:
    """The run's metrics.jsonl records, read once (none when it cannot be read)."""
    if run.metrics is None:
        _read_metrics(run)
    return run.metrics or []


def _read_metrics(run: Run) -> Optional[str]:
    """Read the run's metrics.jsonl into `run.metrics`; why it could not be, or None."""
    try:
        run.metrics, _ = read_metrics(run.path / METRICS)
    except READ_ERRORS as err:
        run.metrics = []
        return f"{METRICS}: {not_read(err)}" if isinstance(err, UnsafeFile) else str(err)
    return None


def epochs_done(run: Run) -> str:
    """`k of N epochs done`, from metrics.jsonl (what is done is not known without it)."""
    why = _read_metrics(run) if run.metrics is None else None
    if why is not None:
        run.metrics = None  # not an empty file: "no epoch finished" would not be true
        return f"epochs done not known ({why})"
    return f"{len(run.metrics or [])} of {run.config.get('schedule.epochs', '?')} epochs done"
