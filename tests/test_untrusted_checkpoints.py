"""Checkpoints from elsewhere. One whose pickle names a function to call on load is refused on
every path that loads one (resume, classic-KD teacher, snapshot ensemble), and its command
never runs. One whose tensors, progress or config no sdrun run writes (a wrong key, a buffer of
another shape, a stride-0 view declaring 4e9 rows, tensors on the meta device, NaN weights, an
epoch off the schedule, a fabricated history) is refused in one line naming the file and the
entry, before training, without allocating what the view declares."""

from __future__ import annotations

import hashlib
import math
import os
import resource
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import sdrun_here, tiny

from sdrun.errors import CheckpointError, UnsafeCheckpoint
from sdrun.runfolder.checkpoint import LAST, load_weights
from sdrun.transfer.backbone import create_features, open_backbone


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


# ------------------------------------------------ tampered tensors, progress and config


def tampered(sd_run: Path, tmp_path: Path, damage: Callable[[dict], object]) -> Path:
    """A copy of the finished tiny run whose last.pt `damage` changed (as someone could)."""
    run = tmp_path / "run"
    shutil.copytree(sd_run, run)
    last = run / "checkpoints" / LAST
    payload = torch.load(last, weights_only=True)
    damage(payload)
    torch.save(payload, last)
    return run


def refused(run: Path, tmp_path: Path) -> str:
    """`sdrun resume=<run>`'s one line (exit code 2), naming the checkpoint; the checkpoint is
    left as it was (nothing trained or saved)."""
    last = run / "checkpoints" / LAST
    before = hashlib.sha256(last.read_bytes()).hexdigest()
    proc = sdrun_here(f"resume={run}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_line(proc.stderr)
    assert str(last) in line
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before
    return line


def momentum(payload: dict) -> dict:
    return payload["optimizer"]["state"][0]  # conv1.weight's: 16x3x3x3


def stride0(t: torch.Tensor) -> torch.Tensor:
    """`t`'s shape over one stored element: every element is the same memory."""
    return torch.zeros(1, dtype=t.dtype).as_strided(t.shape, [0] * t.dim())


def renamed(state: dict, old: str, new: str) -> None:
    state[new] = state.pop(old)


def faked(payload: dict, top1: float) -> None:
    """A final accuracy, and a best one consistent with it: only metrics.jsonl disagrees."""
    payload["progress"]["history"]["student/top1"] = top1
    payload["progress"].update(best_top1=top1, best_epoch=4)


def at_epoch(payload: dict, epoch: object) -> None:
    payload["epoch"] = payload["progress"]["epoch"] = epoch


# damage -> what the one line says about it
TAMPERED = {
    "a wrong key in teacher": (
        lambda p: renamed(p["teacher"], "conv1.weight", "conv0.weight"),
        "'teacher' lacks 'conv1.weight' and holds 'conv0.weight'",
    ),
    "a momentum buffer of the wrong shape": (
        lambda p: momentum(p).update(momentum_buffer=torch.zeros(3)),
        "'optimizer.state.0.momentum_buffer' is 3 float32, its parameter is 16x3x3x3 float32",
    ),
    "a momentum buffer as a stride-0 view": (
        lambda p: momentum(p).update(momentum_buffer=stride0(momentum(p)["momentum_buffer"])),
        "'optimizer.state.0.momentum_buffer' is a 16x3x3x3 float32 view with strides (0, 0, 0, 0)",
    ),
    "NaN weights": (
        lambda p: p["model"]["conv1.weight"][5, 1, 2].fill_(math.nan),
        "NaN or infinite values in 'model.conv1.weight'",
    ),
    "an infinite value in the teacher": (
        lambda p: p["teacher"]["fc.bias"][7].fill_(math.inf),
        "NaN or infinite values in 'teacher.fc.bias'",
    ),
    "progress.epoch a string": (
        lambda p: p["progress"].update(epoch="1"),
        "progress.epoch='1' is a str, not an int",
    ),
    "a negative epoch": (lambda p: at_epoch(p, -3), "progress.epoch=-3 is not a number of epochs"),
    "an epoch beyond the schedule": (
        lambda p: at_epoch(p, 9),
        "progress.epoch=9 is not a number of epochs done of this run's 4",
    ),
    "a history better than the best": (
        lambda p: p["progress"]["history"].update({"student/top1": 99.0}),
        "student/top1=99.0 beats progress.best_top1",
    ),
    "a history and a best faked together": (
        lambda p: faked(p, 99.0),
        "progress.history['student/top1']=99.0 but metrics.jsonl says",
    ),
    "a config value of another type": (
        lambda p: p["config"]["schedule"].update(epochs=4.0),  # == 4: the run's, as a value
        "config.schedule.epochs=4.0 is a float, not an int",
    ),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_checkpoint_is_one_line_naming_the_entry(sd_run, tmp_path, case):
    damage, said = TAMPERED[case]
    line = refused(tampered(sd_run, tmp_path, damage), tmp_path)
    assert said in line
    assert "optim.lr" not in line  # a checkpoint's NaN is not the method diverging


def method_run(root: Path, work: Path, name: str) -> Path:
    """A finished one-epoch run of `distill=<name>` (one step of 32 images)."""
    run = work / name
    args = [f"dataset.root={root}", "dataset.download=false", "dataset.batch_size=32",
            "dataset.limit_train=32", "dataset.limit_test=32", "model=resnet20",
            f"distill={name}", "schedule=cosine", "schedule.epochs=1",
            "schedule.cycle_length=null", "optim.lr=0.05", "logger=none",
            f"hydra.run.dir={run}"]  # fmt: skip
    proc = sdrun_here(*args, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def pskd_run(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return method_run(cifar100_root, tmp_path_factory.mktemp("pskd"), "pskd")


@pytest.fixture(scope="module")
def dlb_run(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return method_run(cifar100_root, tmp_path_factory.mktemp("dlb"), "dlb")


@pytest.mark.parametrize("table", ["meta", "nan"])
def test_pskd_tables_on_the_meta_device_or_with_nan_are_one_line(pskd_run, tmp_path, table):
    def damage(payload: dict) -> None:
        state = payload["method"]
        if table == "meta":
            state["previous"] = torch.zeros(state["previous"].shape, device="meta")
        else:
            state["latest"][3, 4] = math.nan

    line = refused(tampered(pskd_run, tmp_path, damage), tmp_path)
    said = {"meta": "'method.previous' is a tensor on the meta device",
            "nan": "NaN or infinite values in 'method.latest'"}  # fmt: skip
    assert said[table] in line


@contextmanager
def address_space_headroom(extra: int) -> Iterator[None]:
    """This process may map at most `extra` more bytes than it has mapped now (`ulimit -v`):
    a larger allocation fails instead of taking the machine's memory."""
    status = Path("/proc/self/status").read_text().splitlines()
    mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + extra if hard == resource.RLIM_INFINITY else min(hard, mapped + extra)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_dlb_logits_declared_as_4e9_rows_of_a_few_bytes_are_refused_unallocated(dlb_run, tmp_path):
    """A few KB on disk that declare 4e9 x 100 logits (1.6 TB; 4 GB as much as compared) are
    refused from their metadata, within 1 GiB more memory than the process holds."""
    rows = 4_000_000_000

    def damage(payload: dict) -> None:
        state = payload["method"]
        state["logits"] = torch.zeros(100).as_strided((rows, 100), (0, 1))
        state["index"] = torch.zeros(1, dtype=torch.int64).as_strided((rows,), (0,))

    run = tampered(dlb_run, tmp_path, damage)
    size = (run / "checkpoints" / LAST).stat().st_size
    assert size < (dlb_run / "checkpoints" / LAST).stat().st_size  # less than the real logits
    with address_space_headroom(1 << 30):
        line = refused(run, tmp_path)
    assert "'method.logits' is a 4000000000x100 float32 view with strides (0, 1)" in line


def test_a_teacher_checkpoint_with_nan_weights_is_one_line_about_the_file(
    sd_run: Path, cifar100_root: Path, tmp_path: Path
):
    """Not "training diverged ... lower optim.lr": the teacher's file is at fault."""
    payload = torch.load(sd_run / "checkpoints" / LAST, weights_only=True)
    payload["model"]["fc.weight"][2, 3] = math.nan
    path = tmp_path / "teacher.pt"
    torch.save(payload, path)
    run = tmp_path / "run"
    args = tiny(cifar100_root, "distill=kd", "schedule=cosine", "schedule.cycle_length=null",
                f"distill.teacher_checkpoint={path}", "seed=1", f"hydra.run.dir={run}")  # fmt: skip
    proc = sdrun_here(*args, cwd=tmp_path)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert (
        f"distill.teacher_checkpoint: {path} holds NaN or infinite values in 'model.fc.weight'"
        in line
    )
    assert not (run / "checkpoints").exists()  # refused before any training


def test_a_backbone_with_a_stride_0_weight_is_refused_naming_it(sd_run: Path, tmp_path: Path):
    payload = torch.load(sd_run / "checkpoints" / LAST, weights_only=True)
    payload["model"]["conv1.weight"] = stride0(payload["model"]["conv1.weight"])
    run = tmp_path / "run"
    shutil.copytree(sd_run / ".hydra", run / ".hydra")
    (run / "checkpoints").mkdir()
    torch.save(payload, run / "checkpoints" / LAST)
    with pytest.raises(CheckpointError) as err:
        create_features(open_backbone(str(run)), None, None)
    assert "'model.conv1.weight' is a 16x3x3x3 float32 view with strides (0, 0, 0, 0)" in str(
        err.value
    )
