"""Helpers of the transfer tests: running sdrun-transfer in this process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from sdrun.transfer.cli import main

# A run of a couple of seconds: 64 px images, 4 of them, 2 epochs of 2 steps, a small head.
TINY = [
    "dataset.download=false", "dataset.image_size=64", "dataset.max_size=96",
    "dataset.batch_size=2", "dataset.eval_batch_size=4", "dataset.limit_train=4",
    "dataset.limit_test=4", "dataset.num_workers=0", "schedule.epochs=2",
    "schedule.warmup_iters=2", "task.fpn_channels=32", "task.rois_per_image=64", "logger=none",
    "trainer.deterministic=true",
]  # fmt: skip


def transfer(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """`sdrun-transfer ARGS` in this process; its exit code (0 when it returns)."""
    monkeypatch.setattr(sys, "argv", ["sdrun-transfer", *args])
    try:
        main()
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's CPU thread count set to `n` for a while (sums in another order otherwise)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
