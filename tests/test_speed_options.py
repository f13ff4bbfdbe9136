"""The speed options train the same run as the plain loop: a teacher whose logits are predicted
for the whole epoch first (trainer.teacher_precompute), and torch.compile (trainer.compile)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import read_jsonl, sdrun_here, tiny

COMPARED = ("train/loss", "train/ce", "train/kd", "student/top1", "teacher/top1")


def run(cifar100_root: Path, tmp_path: Path, *overrides: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    run_dir = tmp_path / "run"
    proc = sdrun_here(*tiny(cifar100_root, *overrides, f"hydra.run.dir={run_dir}"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def assert_same_training(run_dir: Path, reference: Path, rel: float) -> None:
    got, expected = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(reference / "metrics.jsonl")
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        for key in COMPARED:
            if e[key] is None:
                assert g[key] is None, (g["epoch"], key)
            else:
                assert g[key] == pytest.approx(e[key], rel=rel, abs=rel), (g["epoch"], key)
    a = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(reference / "checkpoints" / "last.pt", weights_only=False)["model"]
    for name, value in b.items():
        if value.is_floating_point():
            assert torch.allclose(a[name], value, rtol=rel, atol=rel), name


def test_precomputed_teacher_logits_train_the_same_run(cifar100_root, sd_run, tmp_path):
    # 64 images per teacher forward: two of the run's 32-image batches at a time.
    run_dir = run(cifar100_root, tmp_path, "trainer.teacher_precompute=64")
    assert_same_training(run_dir, sd_run, rel=1e-4)


def test_compiled_run_refreshes_its_compiled_teacher_and_trains_like_eager(cifar100_root, tmp_path):
    """3 cycles of 1 epoch: cycle 3's teacher is cycle 2's snapshot copied into the teacher
    compiled for cycle 2, so its test accuracy must be the student's at the end of cycle 2."""
    three_cycles = ("schedule.epochs=3", "schedule.cycle_length=1")
    eager = run(cifar100_root, tmp_path / "eager", *three_cycles)
    compiled = run(cifar100_root, tmp_path / "compiled", *three_cycles, "trainer.compile=true")
    records = read_jsonl(compiled / "metrics.jsonl")
    for before, after in zip(records, records[1:]):
        assert after["teacher/top1"] == before["student/top1"]
        assert after["teacher/top5"] == before["student/top5"]
    # Inductor fuses and reorders float arithmetic, so the runs agree closely, not bitwise. The
    # small KD term is left out: its teacher is a snapshot of a slightly different student, and
    # at this tiny scale that moves it by up to ~20%.
    for got, expected in zip(records, read_jsonl(eager / "metrics.jsonl")):
        for key in ("train/loss", "train/ce"):
            assert got[key] == pytest.approx(expected[key], rel=1e-2), (got["epoch"], key)
        assert (got["train/kd"] is None) == (expected["train/kd"] is None)
        assert got["train/kd"] is None or got["train/kd"] > 0
