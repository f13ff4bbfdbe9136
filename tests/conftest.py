"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import sdrun_here, tiny, write_tiny_cifar


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
