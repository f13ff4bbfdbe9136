"""Which cluster job this process is, and the signal that job gets before it is stopped.

SLURM starts a requeued job (a preemption, a node failure, submitit's requeue at the time
limit) under the same job id, with `SLURM_RESTART_COUNT` raised; a task of a job array is
`<array job id>_<task id>`, as submitit names it. submitit's local executor runs a job's
command again itself when the job requeues, under the same job id and with no restart count.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Optional

# submitit's name for the notice signal (its JobEnvironment reads the same variable)
NOTICE_ENV = "SUBMITIT_PREEMPT_SIGNAL"


def current_job() -> Optional[str]:
    """`slurm:<job id>` or `local:<host>:<job id>` (submitit's local executor); None outside
    a job."""
    env = os.environ
    if env.get("SUBMITIT_EXECUTOR") == "local" and env.get("SUBMITIT_LOCAL_JOB_ID"):
        return f"local:{socket.gethostname()}:{env['SUBMITIT_LOCAL_JOB_ID']}"
    job = env.get("SLURM_JOB_ID")
    if not job:
        return None
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return f"slurm:{array}_{task}" if array and task else f"slurm:{job}"


def restarted(job: str) -> bool:
    """Whether this start of `job` is a restart of it. A local job runs its command again
    only when it requeues; a SLURM job's batch script may start sdrun more than once, so
    SLURM's restart count decides there."""
    if job.startswith("local:"):
        return True
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
    except ValueError:
        return False


def notice_signal() -> Optional[int]:
    """The signal a submitit job gets before its time limit or a preemption (SIGUSR2 unless
    SUBMITIT_PREEMPT_SIGNAL names another), inside a submitit job; None elsewhere, where
    that signal keeps its default meaning."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    sig = getattr(signal, f"SIG{os.environ.get(NOTICE_ENV, 'USR2')}", None)
    return int(sig) if sig is not None else None
