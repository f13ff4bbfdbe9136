"""The table's runs on this machine, a fixed number at a time, each chain's generation k after
generation k-1 has finished (and not at all when it failed).

Two ways to run one: a child process of `make reproduce` (`ProcessStarter`: the CPU, or
everything on the one default device, as before there were launchers), or a job of submitit's
local executor given one GPU of its own (`GpuStarter`: `CUDA_VISIBLE_DEVICES` set per job, so
that runs side by side do not all take `cuda:0`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

from sdrun.reproduce.board import Board, failure
from sdrun.reproduce.plan import Job, command, state
from sdrun.trust import files

EXIT_INTERRUPTED = 130


class Running(Protocol):
    """A started run: `ended()` once it is over; `log`: where its output goes; `why`: how it
    ended, when the run folder says it did not finish."""

    log: Path

    def ended(self) -> bool: ...

    def why(self) -> str: ...


class Starter(Protocol):
    slots: list[str]  # what each run side by side gets: a share of the CPU, or a GPU

    def start(self, job: Job, cmd: list[str], slot: str) -> Running: ...

    def where(self, slot: str) -> str: ...


@dataclass
class _Process:
    proc: subprocess.Popen
    log: Path

    def ended(self) -> bool:
        return self.proc.poll() is not None

    def why(self) -> str:
        return f"exit {self.proc.returncode}"


def run_one(job: Job, cmd: list[str], side_by_side: int) -> int:
    """Run one sdrun to its end (scripts/reproduce_transfer.py's runs); its exit code."""
    return start_one(job, cmd, side_by_side).wait()


def start_one(job: Job, cmd: list[str], side_by_side: int) -> subprocess.Popen:
    """Start one sdrun; side by side with others its output goes to the run's reproduce.log."""
    if side_by_side == 1:
        return subprocess.Popen(cmd)
    # Share the cores: N torch processes with a thread per core each slow each other down
    # severalfold on a CPU. An OMP_NUM_THREADS of the user's own is kept.
    threads = str(max(1, (os.cpu_count() or 1) // side_by_side))
    env = {"OMP_NUM_THREADS": threads, **os.environ}
    job.run_dir.mkdir(parents=True, exist_ok=True)
    with files.open_append(job.run_dir / "reproduce.log") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


@dataclass
class ProcessStarter:
    """`jobs` runs at a time as child processes (one at a time: its output on the terminal)."""

    jobs: int
    slots: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.slots = [f"process {i}" for i in range(self.jobs)]

    def start(self, job: Job, cmd: list[str], slot: str) -> Running:
        log = job.run_dir / ("sdrun.log" if self.jobs == 1 else "reproduce.log")
        return _Process(start_one(job, cmd, self.jobs), log)

    def where(self, slot: str) -> str:
        return ""


@dataclass
class _LocalJob:
    job: object  # a submitit LocalJob
    log: Path

    def ended(self) -> bool:
        return bool(self.job.done())

    def why(self) -> str:
        return "no complete summary.json"  # submitit's local controller exits 0 either way


@dataclass
class GpuStarter:
    """One run per GPU at a time, each a submitit local job that sees only its GPU."""

    gpus: list[str]
    folder: Path  # submitit's job folder (`%j`: one per job)
    cwd: str
    slots: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.slots = list(self.gpus)

    def start(self, job: Job, cmd: list[str], slot: str) -> Running:
        import submitit

        from sdrun.reproduce.job import SdrunJob

        executor = submitit.LocalExecutor(folder=self.folder)
        # submitit sets CUDA_VISIBLE_DEVICES to the first gpus_per_node of visible_gpus;
        # a month's limit: the local executor's default (2 min) would stop every run.
        executor.update_parameters(gpus_per_node=1, visible_gpus=(int(slot),),
                                   timeout_min=30 * 24 * 60)  # fmt: skip
        local = executor.submit(SdrunJob(tuple(cmd[3:]), self.cwd, str(job.run_dir)))
        return _LocalJob(local, local.paths.stderr)

    def where(self, slot: str) -> str:
        return f" (GPU {slot})"


Extra = Callable[[Job], list[str]]  # a run's overrides beyond its preset's


def run_here(
    jobs: list[Job], extra: Extra, starter: Starter, board: Board, poll_s: float = 0.5
) -> int:
    """Run what is not done yet; 1 if a run failed (after it, no new run starts), else 0."""
    todo = []
    finished = set()
    for job in jobs:
        if state(job.run_dir) == "done":
            board.say(job, "done, skipped")
            finished.add(job.run_dir)
        else:
            todo.append(job)
    running: dict[str, tuple[Job, Running, float]] = {}
    failed: list[Job] = []
    try:
        while todo or running:
            started = False if failed else _start_ready(todo, finished, running, starter, board,
                                                        extra)  # fmt: skip
            ended = _collect(running, finished, failed, board)
            if not started and not ended and running:
                time.sleep(poll_s)
            if not running and (failed or not _ready(todo, finished)):
                break  # after a failure no new run starts
    except KeyboardInterrupt:
        _wait_out(running)  # each got the Ctrl-C too: they write their checkpoints
        board.error("interrupted; stopped runs keep their last checkpoint: run make "
                    "reproduce again to continue them")  # fmt: skip
        return EXIT_INTERRUPTED
    if failed:
        board.error("fix the cause and run make reproduce again: finished runs are kept")
        return 1
    return 0


def _ready(todo: list[Job], finished: set[Path]) -> Optional[Job]:
    return next((j for j in todo if j.teacher is None or j.teacher in finished), None)


def _start_ready(
    todo: list[Job],
    finished: set[Path],
    running: dict[str, tuple[Job, Running, float]],
    starter: Starter,
    board: Board,
    extra: Extra,
) -> bool:
    """Start runs whose teacher has finished on the free slots; whether any started."""
    started = False
    for slot in [s for s in starter.slots if s not in running]:
        job = _ready(todo, finished)
        if job is None:
            break
        todo.remove(job)
        how = state(job.run_dir)
        board.say(job, f"{how} -> {job.run_dir}{starter.where(slot)}")
        running[slot] = (job, starter.start(job, command(job, how, extra(job)), slot),
                         time.monotonic())  # fmt: skip
        started = True
    return started


def _collect(
    running: dict[str, tuple[Job, Running, float]],
    finished: set[Path],
    failed: list[Job],
    board: Board,
) -> bool:
    """Take in the runs that ended; whether any did. The run folder says whether it finished."""
    ended = False
    for slot, (job, run, start) in list(running.items()):
        if not run.ended():
            continue
        ended = True
        del running[slot]
        if state(job.run_dir) == "done":
            finished.add(job.run_dir)
            board.say(job, f"finished in {time.monotonic() - start:.0f} s")
        else:
            failed.append(job)
            failure(board, job, run.why(), run.log)
    return ended


def _wait_out(running: dict[str, tuple[Job, Running, float]]) -> None:
    while any(not run.ended() for _, run, _ in running.values()):
        try:
            time.sleep(0.2)
        except KeyboardInterrupt:
            return  # a second Ctrl-C: stop waiting (the runs exit at once on theirs)
