"""A requeued cluster job continues its run: the requeue is a resume.

A requeued job runs the command that started the run again, without `resume=`. Each session
of a run names its cluster job in the run's heartbeat (run_state.Session); a start that is
that same job restarted (cluster_job.restarted) continues from the folder's checkpoint.
Anything else is refused as before (checkpoint.guard_run_dir): a second command into a used
folder, another job, or the same job's script starting sdrun a second time.

At the time limit (or a preemption) submitit's notice signal stops the run after its step
with a checkpoint (interrupt.StopRequest); `hand_over` then gives the signal to the handler
that had it before sdrun's, submitit's, which requeues the job.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Optional

from sdrun.runfolder import cluster_job
from sdrun.runfolder.checkpoint import CHECKPOINT_DIR, LAST
from sdrun.runfolder.run_state import HEARTBEAT, read_heartbeat


def continues(run_dir: Path) -> bool:
    """Whether this process is the restart of the job whose session last trained `run_dir`,
    and the folder holds its checkpoint."""
    job = cluster_job.current_job()
    if job is None or not cluster_job.restarted(job):
        return False
    if not (run_dir / CHECKPOINT_DIR / LAST).is_file():
        return False
    beat = read_heartbeat(run_dir / CHECKPOINT_DIR / HEARTBEAT)
    return beat is not None and beat.get("job") == job


def continued(run_dir: Path) -> Optional[str]:
    """`run_dir` as the `resume=` a requeued job implies (None: not a requeue of its job)."""
    return str(run_dir) if continues(run_dir) else None


def hand_over(notice: Optional[int], resume_hint: str) -> None:
    """After a stop on the cluster's notice, the handler that had the signal before sdrun's
    (submitit's) requeues the job and exits. When it refuses (too many time limits), one line
    says how to continue by hand."""
    handler = signal.getsignal(notice) if notice is not None else None
    if not callable(handler):
        return
    from submitit.core.utils import UncompletedJobError

    try:
        handler(notice, None)
    except UncompletedJobError as err:
        print(f"sdrun: the job is not requeued ({err}); {resume_hint}", file=sys.stderr)
