"""The table's runs as SLURM jobs, submitted through submitit.

Every run not yet done is a job: the runs with no unfinished teacher go in one job array, and
generation k of a born-again chain is submitted on its own, with `afterok` on generation
k-1's job (SLURM starts it once that job has succeeded, and cancels it if that job fails:
`kill-on-invalid-dep`), so nothing waits in `make reproduce` itself. Which job each run was
given is kept in OUT/jobs/slurm.json: a later `make reproduce` says where each run is (done,
queued, running, failed with its log) and submits again only what is neither done nor in the
queue. Unless told not to wait, `make reproduce` follows the jobs until the last one ends.

A job at its time limit or preempted is requeued by submitit and continues from its checkpoint
(sdrun/runfolder/requeue.py). Job settings: slurm_settings.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdrun.reproduce.board import Board, failure
from sdrun.reproduce.here import EXIT_INTERRUPTED, Extra
from sdrun.reproduce.job import SdrunJob
from sdrun.reproduce.plan import Job, command, state
from sdrun.reproduce.slurm_settings import LAUNCHER_FILE, executor
from sdrun.trust import files

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING",
          "SUSPENDED", "PREEMPTED", "UNKNOWN", ""}  # fmt: skip
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
EXIT_REFUSED = 2


@dataclass
class Ledger:
    """OUT/jobs/slurm.json: each run's (relative folder) last job id."""

    out: Path
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.out / "jobs" / "slurm.json"

    def load(self) -> Ledger:
        try:
            data = files.read_json(self.path)
        except (OSError, ValueError):
            data = {}
        self.ids = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        return self

    def key(self, job: Job) -> str:
        return str(job.run_dir.relative_to(self.out))

    def save(self) -> None:
        files.ensure_dir(self.path.parent)
        files.write_text(self.path, json.dumps(self.ids, indent=1, sort_keys=True) + "\n")


@dataclass
class Queue:
    """The jobs' states, from sacct through submitit's watcher (one call for all jobs)."""

    folder: Path
    jobs: dict[str, Any] = field(default_factory=dict)

    def watch(self, job_id: str) -> None:
        from submitit.slurm.slurm import SlurmJob

        self.jobs.setdefault(job_id, SlurmJob(folder=self.folder, job_id=job_id))

    def refresh(self) -> None:
        from submitit.slurm.slurm import SlurmJob

        SlurmJob.watcher.update()

    def state(self, job_id: str) -> str:
        info = self.jobs[job_id].watcher.get_info(job_id, mode="cache")
        return (info.get("State") or "UNKNOWN").split()[0]  # "CANCELLED by 1000"

    def phase(self, job_id: str) -> str:
        """queued, running or ended."""
        current = self.state(job_id)
        return "queued" if current in QUEUED else "running" if current in RUNNING else "ended"

    def log(self, job_id: str) -> Path:
        return self.jobs[job_id].paths.stderr


def run_on_slurm(
    jobs: list[Job], extra: Extra, out: Path, options: dict[str, Any], board: Board,
    wait: bool = True, poll_s: float = 60.0,
) -> tuple[int, bool]:  # fmt: skip
    """Submit what is neither done nor queued, then (with `wait`) follow every job to its end.
    Returns 1 if a run failed (else 0), and whether every job has ended."""
    folder = out / "jobs" / "%j"
    ledger, queue = Ledger(out).load(), Queue(folder)
    for job in jobs:
        if job_id := ledger.ids.get(ledger.key(job)):
            queue.watch(job_id)
    queue.refresh()
    active: dict[Path, str] = {}  # run dir -> the job that will end it
    todo: list[Job] = []
    for job in jobs:
        job_id = ledger.ids.get(ledger.key(job))
        if state(job.run_dir) == "done":
            board.say(job, "done, skipped")
        elif job_id is not None and queue.phase(job_id) != "ended":
            board.say(job, f"{queue.phase(job_id)} (job {job_id})")
            active[job.run_dir] = job_id
        else:
            if job_id is not None:  # an earlier job ended without finishing the run
                _failed(board, queue, job, job_id, "; submitted again")
            todo.append(job)
    if todo:
        submitted: dict[Path, str] = {}
        try:
            _submit(todo, extra, executor(folder, options), active, submitted)
        except SubmissionRefused as err:
            board.error(f"error: {err}")
            return EXIT_REFUSED, False
        finally:  # what was submitted is on record, even when sbatch refused a later job
            for job in todo:
                if job.run_dir in submitted:
                    ledger.ids[ledger.key(job)] = submitted[job.run_dir]
                    queue.watch(submitted[job.run_dir])
            ledger.save()
        _say_submitted(todo, submitted, active, board)
        active.update(submitted)
    if not active:
        return 0, True
    if not wait:
        board.note(f"{len(active)} run(s) queued or running; run make reproduce again to see "
                   "where they are (the report is written once all have ended)")  # fmt: skip
        return 0, False
    code = _follow(jobs, active, queue, board, poll_s)
    return code, code != EXIT_INTERRUPTED


class SubmissionRefused(Exception):
    """sbatch refused a job (an unknown partition or account, a limit): its own words."""


def _submit(
    todo: list[Job], extra: Extra, ex: Any, active: dict[Path, str], ids: dict[Path, str]
) -> None:
    """One array of the runs free to start, then each chain's generation after its teacher's
    job; each run's job id goes into `ids` as it is submitted."""
    from submitit.core.utils import FailedJobError

    cwd = os.getcwd()

    def sdrun_job(job: Job) -> SdrunJob:
        cmd = command(job, state(job.run_dir), extra(job))
        return SdrunJob(tuple(cmd[3:]), cwd, str(job.run_dir))

    waiting = {job.run_dir for job in todo} | set(active)
    free = [job for job in todo if job.teacher not in waiting]
    kill_on_failure = {**ex.parameters.get("additional_parameters", {}),
                       "kill-on-invalid-dep": "yes"}  # fmt: skip
    # submitit prints sbatch's complaint before raising it: it is said once, below
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            if free:
                with ex.batch():
                    handles = [ex.submit(sdrun_job(job)) for job in free]
                ids.update((job.run_dir, h.job_id) for job, h in zip(free, handles))
            for job in (j for j in todo if j.teacher in waiting):
                after = ids.get(job.teacher) or active[job.teacher]
                ex.update_parameters(slurm_dependency=f"afterok:{after}",
                                     slurm_additional_parameters=kill_on_failure)  # fmt: skip
                ids[job.run_dir] = ex.submit(sdrun_job(job)).job_id
        except FailedJobError as err:
            said = [line for line in str(err).splitlines() if line.strip()]
            raise SubmissionRefused(
                f"sbatch refused the job: {said[-1] if said else err}; fix the job settings "
                f"(SLURM=... or conf/{LAUNCHER_FILE}) and run make reproduce again"
            ) from None


def _say_submitted(
    todo: list[Job], ids: dict[Path, str], active: dict[Path, str], board: Board
) -> None:
    for job in todo:
        teacher = ids.get(job.teacher) or active.get(job.teacher)
        after = f", after job {teacher}" if teacher else ""
        board.say(job, f"{state(job.run_dir)} -> {job.run_dir}",
                  f"submitted as job {ids[job.run_dir]}{after}")  # fmt: skip


def _failed(board: Board, queue: Queue, job: Job, job_id: str, then: str = "") -> None:
    log = queue.log(job_id)
    started = log.exists()
    why = f"job {job_id} {queue.state(job_id)}" + ("" if started else ", never started")
    failure(board, job, why + then, log if started else None)


def _follow(
    jobs: list[Job], active: dict[Path, str], queue: Queue, board: Board, poll_s: float
) -> int:
    """Say each change of a job's phase until every job has ended; 1 if a run failed."""
    by_dir = {job.run_dir: job for job in jobs}
    shown = {run_dir: queue.phase(job_id) for run_dir, job_id in active.items()}
    failed = 0
    try:
        while active:
            time.sleep(poll_s)
            queue.refresh()
            for run_dir, job_id in list(active.items()):
                phase, job = queue.phase(job_id), by_dir[run_dir]
                if phase == shown[run_dir]:
                    continue
                shown[run_dir] = phase
                if phase != "ended":
                    board.say(job, f"{phase} (job {job_id})")
                    continue
                del active[run_dir]
                if state(run_dir) == "done":
                    board.say(job, f"done (job {job_id})")
                else:
                    failed += 1
                    _failed(board, queue, job, job_id)
    except KeyboardInterrupt:
        board.error("the jobs go on in SLURM; run make reproduce again to see where they are "
                    "(the report is written once all have ended)")  # fmt: skip
        return EXIT_INTERRUPTED
    return 1 if failed else 0
