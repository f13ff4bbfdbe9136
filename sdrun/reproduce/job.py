"""One sdrun run as a submitit job (SLURM or submitit's local executor).

The job's process runs sdrun's command line itself (no second Python inside the job), so the
run's own stop handler sees the signals SLURM sends the job. submitit's requeue protocol
(`checkpoint`, as `submitit.helpers.Checkpointable` has it) resubmits the same command: sdrun
recognises the requeued job and continues the run from its checkpoint
(sdrun/runfolder/requeue.py), so nothing needs to change in the command.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SdrunJob:
    """`sdrun <argv>` from `cwd`. A run that fails ends the job with sdrun's exit code, so
    SLURM marks it failed and no `afterok` dependent starts."""

    argv: tuple[str, ...]
    cwd: str
    run_dir: str

    def __call__(self) -> None:
        # the line a job's log starts with: which run, on which of the node's GPUs
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "(all)")
        print(f"sdrun job: {self.run_dir}; CUDA_VISIBLE_DEVICES={devices}", flush=True)
        from sdrun.cli import main

        os.chdir(self.cwd)
        sys.argv = ["sdrun", *self.argv]
        main()  # a failure is a SystemExit with sdrun's code: it ends the job's process

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues: this same call (submitit is imported only in a job)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)
