"""SLURM's notice before a time limit (SIGUSR2 in a submitit job) is one of sdrun's stop
signals, and submitit's own handler requeues the job after sdrun's checkpoint. Real signals to
this process; the requeue itself runs end to end in tests/test_reproduce_cluster.py and
tests/test_launcher.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from sdrun.runfolder import requeue
from sdrun.runfolder.interrupt import StopRequest, stopped


@pytest.fixture
def in_submitit_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")


def test_the_notice_stops_the_run_and_never_forces_an_exit(in_submitit_job, tmp_path: Path):
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # SLURM's preemption: SIGTERM, then the notice
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR2)  # a second notice: still no exit at once
        assert stop() and (stop.signum, stop.notice) == (signal.SIGTERM, signal.SIGUSR2)
    err = stopped(stop, tmp_path, "after epoch 1")
    assert str(err) == ("stopped by SIGTERM after epoch 1; checkpoint written; requeueing the "
                        "job to continue from it")  # fmt: skip
    assert (err.notice, err.exit_code) == (signal.SIGUSR2, 128 + signal.SIGTERM)
    assert err.resume_hint == f"continue with: sdrun resume={tmp_path}"


def test_the_notice_alone_stops_the_run(in_submitit_job, tmp_path: Path):
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop() and stop.notice == signal.SIGUSR2
    assert stopped(stop, tmp_path, "after epoch 1").exit_code == 128 + signal.SIGUSR2


def test_outside_a_submitit_job_sdrun_leaves_sigusr2_alone(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    before = signal.getsignal(signal.SIGUSR2)
    with StopRequest() as stop:
        assert signal.getsignal(signal.SIGUSR2) is before
    assert stop.notice is None


def test_a_job_out_of_requeues_says_how_to_continue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """submitit's own handler, past its time-limit requeues (max_num_timeout), refuses: the
    run has its checkpoint, and one line says how to continue it by hand."""
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.slurm.slurm import SlurmJobEnvironment

    from sdrun.reproduce.job import SdrunJob

    monkeypatch.setenv("SLURM_JOB_ID", "41")
    delayed = DelayedSubmission(SdrunJob(("seed=0",), str(tmp_path), str(tmp_path / "run")))
    delayed.set_timeout(timeout_min=0, max_num_timeout=0)  # at its limit, none left
    handler = SignalHandler(SlurmJobEnvironment(), JobPaths(tmp_path, job_id="41"), delayed)
    previous = signal.signal(signal.SIGUSR2, handler.checkpoint_and_try_requeue)
    try:
        requeue.hand_over(signal.SIGUSR2, f"continue with: sdrun resume={tmp_path / 'run'}")
    finally:
        signal.signal(signal.SIGUSR2, previous)
    err = capsys.readouterr().err  # submitit's own log lines, then sdrun's
    assert err.splitlines()[-1] == (
        "sdrun: the job is not requeued (Job not requeued because: timed-out too many times.); "
        f"continue with: sdrun resume={tmp_path / 'run'}"
    )
    assert "Traceback" not in err
