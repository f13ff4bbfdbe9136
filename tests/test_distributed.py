"""torchrun with 2 CPU processes (gloo): one run directory, identical teacher and weights on
both ranks, and training that matches the single-process run on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import read_jsonl, sdrun, tiny

EXTRA = ["schedule.epochs=2", "schedule.cycle_length=1", "dataset.batch_size=32",
         "trainer.device=cpu"]  # fmt: skip


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "sdrun", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(cifar100_root: Path, tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("ddp")
    proc = torchrun(tiny(cifar100_root, *EXTRA), cwd=work)  # the default, timestamped run dir
    assert proc.returncode == 0, proc.stderr[-4000:]
    (ddp_dir,) = [p.parent for p in (work / "outputs").glob("*/*/metrics.jsonl")]
    single = work / "single"
    proc = sdrun(*tiny(cifar100_root, *EXTRA, f"hydra.run.dir={single}"), cwd=work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ddp_dir, single


def test_both_ranks_share_one_run_dir_with_one_metrics_file(runs):
    ddp_dir, _ = runs
    assert len(list(ddp_dir.parent.iterdir())) == 1, "ranks made separate run dirs"
    assert [r["epoch"] for r in read_jsonl(ddp_dir / "metrics.jsonl")] == [1, 2]
    summary = json.loads((ddp_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["complete"]


def test_teacher_and_final_weights_are_identical_on_both_ranks(runs):
    ddp_dir, _ = runs
    log = (ddp_dir / "sdrun.log").read_text()
    # the runner compares fingerprints across ranks and fails the run if they differ
    assert "identical on 2 process(es)" in log
    last = torch.load(ddp_dir / "checkpoints" / "last.pt", weights_only=False)
    cycle1 = torch.load(ddp_dir / "checkpoints" / "cycle1.pt", weights_only=False)
    for name, value in cycle1["model"].items():
        assert torch.equal(last["teacher"][name], value), name


def test_training_matches_the_single_process_run_on_the_same_global_batch(runs):
    ddp, single = (read_jsonl(d / "metrics.jsonl") for d in runs)
    for a, b in zip(ddp, single):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=0.05)
        assert abs(a["student/top1"] - b["student/top1"]) <= 10.0
    # the whole test set is evaluated, not one rank's shard
    assert ddp[-1]["teacher/top1"] is not None
