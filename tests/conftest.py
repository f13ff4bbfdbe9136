"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import sdrun, tiny, wandb_env, write_tiny_cifar


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset.root holding a tiny CIFAR-100 (256 train, 128 test, 100 classes) to read with
    dataset.download=false."""
    return write_tiny_cifar(tmp_path_factory.mktemp("cifar100"))


@pytest.fixture(scope="session")
def sd_run(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of one finished tiny SD run (`helpers.tiny`): 2 cycles of 2 epochs."""
    work = tmp_path_factory.mktemp("sd_run")
    run_dir = work / "run"
    proc = sdrun(*tiny(cifar100_root, f"hydra.run.dir={run_dir}"), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


# The validation-split run that the val-split, wandb and report tests read (`val_run`):
# 96 training images of which 32 held out, batch 32 (2 steps per epoch), 2 epochs as
# `schedule.cycles=2`, wandb offline with a step log every step and the cycle checkpoints.
VAL_RUN = ("dataset.limit_train=96", "dataset.val_split=32", "dataset.limit_test=64",
           "schedule.epochs=2", "schedule.cycles=2", "schedule.cycle_length=null",
           "logger=wandb", "logger.mode=offline", "logger.group=val-tests",
           "logger.log_checkpoints=true", "trainer.log_every=1")  # fmt: skip


@pytest.fixture(scope="session")
def val_run(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("val_run")
    run_dir = work / "run"
    args = tiny(cifar100_root, *VAL_RUN, f"hydra.run.dir={run_dir}")
    proc = sdrun(*args, cwd=work, env=wandb_env(work))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir
