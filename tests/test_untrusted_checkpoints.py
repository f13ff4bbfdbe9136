"""A checkpoint whose pickle names a function to call on load is refused on every path that
loads one (resume, classic-KD teacher, snapshot ensemble), and its command never runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import sdrun_here, tiny

from sdrun.errors import UnsafeCheckpoint
from sdrun.runfolder.checkpoint import load_weights


class RunsACommand:
    """Unpickling this calls os.system: what a crafted checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted(path: Path, marker: Path) -> Path:
    """A .pt shaped like an sdrun checkpoint, with the payload in one of its values."""
    payload = {"model": {}, "optimizer": {}, "epoch": 0, "config": {}, "x": RunsACommand(marker)}
    torch.save(payload, path)
    return path


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_load_weights_refuses_without_running_it(tmp_path: Path):
    marker = tmp_path / "ran"
    with pytest.raises(UnsafeCheckpoint, match="could run code") as err:
        load_weights(crafted(tmp_path / "x.pt", marker), "distill.teacher_checkpoint")
    assert "system" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_resume_from_a_crafted_file(cifar100_root: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    path = crafted(tmp_path / "last.pt", marker)
    proc = sdrun_here(*tiny(cifar100_root, f"resume={path}"), cwd=tmp_path)
    assert proc.returncode == 2 and "resume: refused" in one_line(proc.stderr)
    assert not marker.exists()


def test_resume_of_a_run_whose_last_checkpoint_was_replaced(sd_run: Path, tmp_path: Path):
    """No fallback to prev.pt: a crafted last.pt is not damage, the user must look at it."""
    run = tmp_path / "run"
    shutil.copytree(sd_run, run)
    marker = tmp_path / "ran"
    crafted(run / "checkpoints" / "last.pt", marker)
    proc = sdrun_here(f"resume={run}", cwd=tmp_path)
    assert proc.returncode == 2 and "refused" in one_line(proc.stderr)
    assert not marker.exists()


def test_teacher_checkpoint_from_a_crafted_file(cifar100_root: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    path = crafted(tmp_path / "teacher.pt", marker)
    run = tmp_path / "run"
    args = tiny(cifar100_root, "distill=kd", "schedule=cosine", "schedule.cycle_length=null",
                f"distill.teacher_checkpoint={path}", f"hydra.run.dir={run}")  # fmt: skip
    proc = sdrun_here(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "distill.teacher_checkpoint: refused" in one_line(proc.stderr)
    assert not marker.exists()
    assert not (run / "checkpoints").exists()  # refused before any training


def test_snapshot_ensemble_refuses_a_crafted_cycle_file(sd_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(sd_run, run)
    marker = tmp_path / "ran"
    crafted(run / "checkpoints" / "cycle1.pt", marker)
    proc = sdrun_here(f"resume={run}", cwd=tmp_path)  # complete: only the summary is redone
    assert proc.returncode == 2 and "refused" in one_line(proc.stderr)
    assert not marker.exists()


def test_a_damaged_pickle_is_damage_and_falls_back_not_a_refusal(tmp_path: Path):
    """A flipped byte that torch's safe loader cannot parse ("Unsupported operand") is a
    damaged last.pt: resume falls back to prev.pt. Only a file naming a callable is refused."""
    import zipfile

    from sdrun.runfolder.checkpoint import LAST, PREV, load_for_resume

    payload = {"model": {"w": torch.arange(3)}, "optimizer": {}, "epoch": 4, "config": {}}
    torch.save(payload, tmp_path / PREV)
    torch.save({**payload, "epoch": 5}, tmp_path / "good.pt")
    with (
        zipfile.ZipFile(tmp_path / "good.pt") as good,
        zipfile.ZipFile(tmp_path / LAST, "w") as last,
    ):
        for name in good.namelist():
            data = bytearray(good.read(name))
            if name.endswith("data.pkl"):
                data[2] = 0x7F  # not a pickle opcode
            last.writestr(name, bytes(data))
    assert load_for_resume(tmp_path / LAST)["epoch"] == 4
