"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_tiny_cifar


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset.root holding a tiny CIFAR-100 (256 train, 128 test, 100 classes) to read with
    dataset.download=false."""
    return write_tiny_cifar(tmp_path_factory.mktemp("cifar100"))
