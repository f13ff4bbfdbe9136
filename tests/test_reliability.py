"""Runs survive kills, signals, damaged checkpoints, divergence and disk faults. Kills and signals
hit real `python -m sdrun` processes; the runs around them go in this process (`sdrun_here`)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import read_jsonl, sdrun_here, tiny, tiny_config, train

from sdrun.errors import CheckpointError
from sdrun.runfolder.checkpoint import LAST, PREV, save_atomic, save_last
from sdrun.runfolder.loggers import MetricsFile
from sdrun.training.engine import StepState, _backward_step

# 3 cycles of 2 epochs, 6 steps per epoch: long enough to be killed at many places.
EXTRA = ["schedule.epochs=6", "schedule.cycle_length=2", "dataset.limit_train=192",
         "trainer.log_every=2"]  # fmt: skip


def start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "sdrun", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, limit: float = 240) -> None:
    """Until metrics.jsonl has `n` lines and a checkpoint exists (an epoch's line is written
    just before its checkpoint: a kill in between leaves the first run nothing to resume)."""
    deadline = time.monotonic() + limit
    checkpoint = path.parent / "checkpoints" / LAST
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n and checkpoint.exists():
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.01)
    pytest.fail(f"{n} epochs not reached in {limit} s")


def final_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / LAST, weights_only=False)


def assert_same_weights(a: dict, b: dict) -> None:
    for key in ("model", "teacher"):
        for name, value in a[key].items():
            assert torch.equal(b[key][name], value), f"{key}.{name}"


@pytest.fixture(scope="module")
def reference(cifar100_root: Path, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must match bit for bit."""
    work = tmp_path_factory.mktemp("reference")
    proc = sdrun_here(*tiny(cifar100_root, *EXTRA, f"hydra.run.dir={work / 'run'}"), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "run"


def test_sigkill_at_random_points_then_resume_gives_bitwise_equal_weights(
    cifar100_root: Path, reference: Path, tmp_path: Path
):
    rng = random.Random(1234)
    run_dir = tmp_path / "run"
    victim = start(tiny(cifar100_root, *EXTRA, f"hydra.run.dir={run_dir}"), tmp_path)
    kills = 0
    for _ in range(2):  # kill, resume, kill again (mid-epoch, in evaluation or while saving)
        done = (
            len(read_jsonl(run_dir / "metrics.jsonl"))
            if (run_dir / "metrics.jsonl").exists()
            else 0
        )
        wait_for_lines(run_dir / "metrics.jsonl", done + 1, victim)
        time.sleep(rng.uniform(0.0, 1.5))
        if victim.poll() is None:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
        victim = start([f"resume={run_dir}"], tmp_path)
    assert victim.wait(timeout=300) == 0, victim.stderr.read()[-3000:]
    assert kills >= 1
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert_same_weights(final_weights(reference), final_weights(run_dir))


def test_sigterm_writes_a_mid_epoch_checkpoint_and_resume_matches(
    cifar100_root: Path, reference: Path, tmp_path: Path
):
    run_dir = tmp_path / "run"
    proc = start(tiny(cifar100_root, *EXTRA, f"hydra.run.dir={run_dir}"), tmp_path)
    wait_for_lines(run_dir / "metrics.jsonl", 2, proc)
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert f"resume={run_dir}" in stderr and "Traceback" not in stderr
    stopped = final_weights(run_dir)
    assert stopped["epoch"] < 6

    proc = sdrun_here(f"resume={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert_same_weights(final_weights(reference), final_weights(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["time/lost_wall_s"] == 0.0  # the stop checkpointed all it had done


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(reference: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    last = run_dir / "checkpoints" / LAST
    expected = torch.load(last, weights_only=False)
    assert torch.load(run_dir / "checkpoints" / PREV, weights_only=False)["epoch"] == 5
    last.write_bytes(last.read_bytes()[:1000])  # a copy cut short

    proc = sdrun_here(f"resume={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run_dir / "sdrun.log").read_text()
    assert "prev.pt" in log and "epoch 5" in log
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert_same_weights(expected, final_weights(run_dir))  # epoch 6 trained again, identically


def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    cifar100_root: Path, tmp_path: Path
):
    run_dir = tmp_path / "run"
    env = {"SDRUN_FAULT_NAN_STEP": "15"}  # epoch 3 (6 steps/epoch): cycle 2
    proc = sdrun_here(
        *tiny(cifar100_root, *EXTRA, f"hydra.run.dir={run_dir}"), cwd=tmp_path, env=env
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "epoch 3" in lines[0] and "cycle 2" in lines[0] and "teacher active" in lines[0]
    assert final_weights(run_dir)["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in final_weights(run_dir)["model"].values())
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 2


def test_an_unwritable_checkpoint_folder_stops_the_run_with_one_line(
    cifar100_root: Path, tmp_path: Path
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file where the checkpoint folder should be")
    proc = sdrun_here(*tiny(cifar100_root, f"hydra.run.dir={run_dir}"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "could not write" in lines[0], proc.stderr


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    save_last({"epoch": 1}, tmp_path)
    save_last({"epoch": 2}, tmp_path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_last({"epoch": 3}, tmp_path)
    monkeypatch.undo()
    folder = tmp_path / "checkpoints"
    assert torch.load(folder / LAST, weights_only=False) == {"epoch": 2}
    assert torch.load(folder / PREV, weights_only=False) == {"epoch": 1}
    assert sorted(p.name for p in folder.iterdir()) == [LAST, PREV]  # no temporary file left


def test_save_atomic_never_leaves_a_partial_file(tmp_path: Path):
    path = tmp_path / "x.pt"
    save_atomic({"a": torch.arange(3)}, path)
    assert torch.equal(torch.load(path)["a"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_fp16_scaler_skips_are_counted_not_failures():
    model = torch.nn.Linear(3, 2)
    state = StepState(torch.optim.SGD(model.parameters(), lr=0.1), torch.amp.GradScaler("cpu"), 0)
    ok = _backward_step(model(torch.randn(4, 3)).sum(), state)
    skipped = _backward_step(model(torch.randn(4, 3)).sum() * float("inf"), state)
    assert ok.item() == 0 and skipped.item() == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


class Killed(BaseException):
    """Stands for a SIGKILL at one exact point: nothing after it runs."""


def test_a_kill_as_an_epoch_is_recorded_loses_no_metrics_line(
    cifar100_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Killed just before epoch 2's metrics line is written: the resumed run still has one
    line per epoch (the line goes first and the checkpoint after it, so a line is never
    lost: at worst the epoch is trained again and its line replaced)."""
    run_dir = tmp_path / "run"
    append = MetricsFile.append

    def killed_at_epoch_2(self: MetricsFile, record: dict) -> None:
        if record["epoch"] == 2:
            raise Killed
        append(self, record)

    monkeypatch.setattr(MetricsFile, "append", killed_at_epoch_2)
    with pytest.raises(Killed):
        train(tiny_config(cifar100_root), run_dir)
    monkeypatch.undo()
    train(tiny_config(cifar100_root, resume=str(run_dir)), run_dir)
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]
