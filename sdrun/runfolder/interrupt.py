"""Graceful stops: SIGTERM (what SLURM sends before killing a job) and Ctrl-C (SIGINT).

The first signal asks the training loop to stop after the current step, write a checkpoint
and exit with a message saying how to resume; a second one exits at once (the checkpoint on
disk is always a complete one, since checkpoints are written atomically).

Inside a submitit job, the notice SLURM sends before the time limit or a preemption (SIGUSR2,
cluster_job.notice_signal) stops the run the same way, then the job is requeued and continues
from the checkpoint (requeue.py). submitit's own handler would requeue at once, losing the
epoch in progress, or at the time limit raise an error. The notice never forces an exit: it
may come after a SIGTERM that is already being handled.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Optional

from sdrun.errors import SdrunError
from sdrun.runfolder.cluster_job import notice_signal

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(SdrunError):
    """The run stopped on a signal after writing a checkpoint; resume continues it."""

    def __init__(
        self, message: str, signum: int, notice: Optional[int] = None, resume_hint: str = ""
    ) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
        self.notice = notice  # the cluster's notice came: the job is to be requeued
        self.resume_hint = resume_hint


class StopAsked(RunStopped):
    """The run stopped itself as on a signal, after writing a checkpoint, for a reason of its
    own (`StopRequest.ask`: a search pruning its trial, sdrun/sweeps/pruning.py)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0)
        self.exit_code = 0


class StopRequest:
    """Context manager that turns the first SIGTERM/SIGINT (or a submitit job's notice) into a
    flag the loop polls."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.asked: Optional[str] = None  # why the run asked itself to stop (`ask`)
        self.notice: Optional[int] = None
        self._notice_signal = notice_signal()
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.signum is not None or self.asked is not None

    def ask(self, reason: str) -> None:
        """Stop as on a signal (at the loop's next check, with a checkpoint), for `reason`."""
        self.asked = reason

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == self._notice_signal:
            self.notice = signum
            if self.signum is not None:
                return
        elif self.signum is not None:
            print(f"sdrun: {signal.Signals(signum).name} again: exiting now", file=sys.stderr)
            os._exit(128 + signum)
        self.signum = signum
        log.warning("%s: stopping after this step and writing a checkpoint "
                    "(send it again to exit at once)", signal.Signals(signum).name)  # fmt: skip

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            notice = () if self._notice_signal is None else (self._notice_signal,)
            for sig in (*SIGNALS, *notice):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def stopped(stop: StopRequest, run_dir: Path, where: str, command: str = "sdrun") -> RunStopped:
    """The error a run stopped by a signal ends with: what stopped it, where, how to resume."""
    if stop.signum is None and stop.asked is not None:
        return StopAsked(f"{stop.asked}; stopped {where}, checkpoint written")
    # Under DDP a process the signal did not reach stops because another one got it.
    signum = stop.signum or signal.SIGTERM
    name = signal.Signals(signum).name
    hint = f"continue with: {command} resume={run_dir}"
    if stop.notice is not None:  # requeue.hand_over follows
        return RunStopped(f"stopped by {name} {where}; checkpoint written; requeueing the job "
                          "to continue from it", signum, stop.notice, hint)  # fmt: skip
    return RunStopped(f"stopped by {name} {where}; checkpoint written; {hint}", signum)
