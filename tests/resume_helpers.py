"""Test helpers for the training methods' resume tests: a short deterministic run of a method,
the checkpoint it leaves, a comparison of two runs to the bit, and interruptions at an exact
step (a stand-in for SIGKILL, or a real SIGTERM)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import read_jsonl, tiny_config
from test_selfkd import conf_distill, cosine

from sdrun.config import Config, DatasetConfig
from sdrun.methods import find_method

TIMING = ("time/", "img_per_s", "seconds")  # metrics that differ between two equal runs


def method_run(root: Path, name: str, epochs: int, images: int, **changes: Any) -> Config:
    """`distill=<name>` (its conf/distill/<name>.yaml), ResNet-20 on `images` CIFAR images in
    steps of 32, one cosine cycle of `epochs`, deterministic: a resume can match it bitwise."""
    cfg = tiny_config(root, distill=conf_distill(name), schedule=cosine(epochs),
                      dataset=DatasetConfig(root=str(root), download=False, batch_size=32,
                                            eval_batch_size=64, limit_train=images,
                                            limit_test=32),
                      **changes)  # fmt: skip
    cfg.trainer.deterministic = True
    return cfg


def last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def assert_same_run(a: Path, b: Path) -> None:
    """The two runs end with the same weights and method state, bit for bit, and logged the
    same metrics (but for timings)."""
    x, y = last(a), last(b)
    for part in ("model", "method"):
        assert x[part].keys() == y[part].keys(), part
        for name, value in x[part].items():
            other = y[part][name]
            same = torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
            assert same, (part, name)
    rows = [[{k: v for k, v in r.items() if not any(s in k for s in TIMING)}
             for r in read_jsonl(d / "metrics.jsonl")] for d in (a, b)]  # fmt: skip
    assert rows[0] == rows[1]


class Killed(BaseException):
    """Stands for a SIGKILL at one exact point: nothing after it runs."""


def kill() -> None:
    raise Killed


def interrupt_at(monkeypatch: pytest.MonkeyPatch, name: str, step: int,
                 action: Callable[[], None]) -> None:  # fmt: skip
    """Call `action` just before the method's `step`-th training batch (1-based) of the run."""
    cls = find_method(name)
    forward, steps = cls.forward_train, []

    def forward_train(self, *args):
        steps.append(1)
        if len(steps) == step:
            action()
        return forward(self, *args)

    monkeypatch.setattr(cls, "forward_train", forward_train)
