"""Shared fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from helpers import complete, sdrun_here, search_trials, tiny, wandb_env, write_tiny_cifar

# The per-user key that signs run folders (sdrun/trust/signing.py): the suite's own, never the
# user's. Set at import so that every subprocess a test starts inherits it.
os.environ["SDRUN_CONFIG_DIR"] = tempfile.mkdtemp(prefix="sdrun-config-")


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
    proc = sdrun_here(*tiny(cifar100_root, f"hydra.run.dir={run_dir}"), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset.root holding a tiny PASCAL VOC tree (VOCdevkit/VOC2007 and VOC2012: JPEGs,
    XML boxes with difficult objects, palette PNG masks with 255 borders), 8 images a split."""
    from sdrun.transfer.tiny_voc import write_tiny_voc

    return write_tiny_voc(tmp_path_factory.mktemp("voc"))


# One Optuna search (`hparams_search=sd_optuna`, its seeded TPE) of two tiny trials, which the
# search, validation-split and wandb tests all read: 96 training images of which 24 held out
# (the most that leaves each of the 71 classes there an image to train on),
# batch 32 (2 steps per epoch), 2 epochs as `schedule.cycles=2` (a teacher in epoch 2), wandb
# offline with a step log every step and the cycle checkpoints as artifacts. The TPE seed draws
# lr 1e30 for trial 0 (it diverges) and 0.05 for trial 1 (it completes: `val_run`).
SEARCH = ("hparams_search=sd_optuna", "hydra.sweeper.n_trials=2", "schedule.cycles=choice(2)",
          "optim.lr=choice(1e30,0.05)", "dataset.download=false", "dataset.limit_train=96",
          "dataset.val_split=24", "dataset.limit_test=64", "dataset.batch_size=32",
          "dataset.eval_batch_size=64", "model=resnet20", "schedule.epochs=2",
          "schedule.lr_min=0.001", "logger.mode=offline", "logger.log_checkpoints=true",
          "trainer.log_every=1", "hydra.sweep.subdir=${hydra.job.num}")  # fmt: skip


@pytest.fixture(scope="session")
def search(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep directory of the search above."""
    work = tmp_path_factory.mktemp("search")
    args = [*SEARCH, f"dataset.root={cifar100_root}", f"hydra.sweep.dir={work / 'search'}"]
    proc = sdrun_here("-m", *args, cwd=work, env=wandb_env(work))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trial 0 failed" in proc.stdout + proc.stderr  # the diverged trial, not silent
    return work / "search"


@pytest.fixture(scope="session")
def val_run(search: Path) -> Path:
    """The search's complete trial: a run with a validation split, logged to wandb offline."""
    (done,) = [t for t in search_trials(search) if complete(t)]
    return done
