"""Faults and bad input: a full disk, a flipped bit, two processes on one run folder, settings
that are NaN or nonsense, Hydra's type errors, malformed checkpoints, labels that are not
integers. Each stops in one line before training, keeps what was there, or is said."""

from __future__ import annotations

import logging
import math
import pickle
import resource
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import read_jsonl, sdrun_here, tiny, tiny_config, train, write_tiny_cifar

from sdrun.config import OptimConfig, TrainerConfig, validate
from sdrun.data import build_loaders, load_cifar
from sdrun.errors import CheckpointError, ConfigError, DataError
from sdrun.methods import default_settings
from sdrun.runfolder import run_lock
from sdrun.runfolder.checkpoint import LAST, PREV, save_last
from sdrun.runfolder.run_folder import opened
from sdrun.runfolder.run_state import load_for_resume

NAN, INF = math.nan, math.inf


def one_line(stderr: str, prog: str = "sdrun") -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------------ a full disk (item 12)


@contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """No file of this process may grow past `nbytes` (as `ulimit -f`): writes fail with
    EFBIG as on a full disk. SIGXFSZ, which would kill the process, is ignored meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_full_disk_keeps_the_previous_checkpoint_and_no_temporary_file(tmp_path: Path):
    save_last({"epoch": 1}, tmp_path)
    save_last({"epoch": 2}, tmp_path)
    with file_size_limit(64 * 1024), pytest.raises(CheckpointError) as err:
        save_last({"epoch": 3, "weights": torch.zeros(100_000)}, tmp_path)  # 400 kB
    assert "\n" not in str(err.value) and "File too large" in str(err.value)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [LAST, PREV]  # no .last.pt.tmp
    assert torch.load(folder / LAST, weights_only=True) == {"epoch": 2}
    assert torch.load(folder / PREV, weights_only=True) == {"epoch": 1}


def test_a_full_disk_during_a_run_stops_it_with_one_line(cifar100_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    with file_size_limit(512 * 1024):  # a ResNet-20 checkpoint is ~2 MB; the logs are small
        args = tiny(cifar100_root, "dataset.limit_train=32", "dataset.limit_test=64")
        proc = sdrun_here(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "could not write" in one_line(proc.stderr)
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["heartbeat.json"]  # no tmp
    assert "could not write" in (run_dir / "sdrun.log").read_text()


# ------------------------------------------------------------------ a flipped bit (item 13)


def flip_a_bit_in_a_tensor(path: Path) -> None:
    """Flip one bit in the middle of the largest tensor record of a torch zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2] ^= 0x08
    path.write_bytes(bytes(raw))


def test_a_flipped_bit_in_last_pt_falls_back_to_prev_pt(sd_run: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(sd_run, run_dir)
    last = run_dir / "checkpoints" / LAST
    expected = torch.load(last, weights_only=True)
    flip_a_bit_in_a_tensor(last)
    torch.load(last, weights_only=True)  # torch itself loads it without a word

    proc = sdrun_here(f"resume={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run_dir / "sdrun.log").read_text()
    assert "CRC" in log and "prev.pt" in log and "epoch 3" in log
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4]
    resumed = torch.load(last, weights_only=True)
    for name, value in expected["model"].items():  # epoch 4 trained again, identically
        assert torch.equal(resumed["model"][name], value), name


# ------------------------------------------------------------------ one process per folder (14)

HOLDER = """import sys
from pathlib import Path
from sdrun.runfolder import run_lock
run_lock.acquire(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_elsewhere(run_dir: Path) -> Iterator[int]:
    """The run folder's lock, held by another process (its pid) until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def locked_elsewhere(run_dir: Path) -> bool:
    """Whether a new process finds the run folder locked."""
    probe = "import sys; from pathlib import Path; from sdrun.runfolder import run_lock\n" \
            "try:\n    run_lock.acquire(Path(sys.argv[1]))\nexcept run_lock.RunFolderBusy:\n" \
            "    sys.exit(3)"  # fmt: skip
    code = subprocess.run([sys.executable, "-c", probe, str(run_dir)]).returncode
    assert code in (0, 3), "the probe itself failed"  # not a lock: an import error, a crash
    return code == 3


def test_a_second_process_on_a_run_folder_stops_naming_the_holder(sd_run: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(sd_run, run_dir)
    before = {p: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
    with held_elsewhere(run_dir) as pid:
        proc = sdrun_here(f"resume={run_dir}", cwd=tmp_path)
        assert proc.returncode == 2
        assert f"pid {pid}" in one_line(proc.stderr)
    # nothing of the holder's folder was touched: no .hydra files, no backup of them
    assert {p: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == before
    assert run_lock.acquire(run_dir)  # the holder was killed: the kernel released its lock
    run_lock.release(run_dir)


def test_multirun_jobs_and_sdrun_transfer_lock_their_folder_too(tmp_path: Path):
    """Both go through run_folder.opened (a multirun job's folder is not locked earlier)."""
    run_dir = tmp_path / "job"
    with held_elsewhere(run_dir) as pid:
        busy = pytest.raises(run_lock.RunFolderBusy, match=f"pid {pid}")
        with busy, opened(TrainerConfig(device="cpu"), 0, None, run_dir, {}):
            pass


def test_a_run_holds_its_folder_while_it_trains(
    cifar100_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from sdrun.runfolder.loggers import MetricsFile

    run_dir, seen = tmp_path / "run", []
    append = MetricsFile.append

    def noting(self: MetricsFile, record: dict) -> None:
        seen.append(locked_elsewhere(run_dir))
        append(self, record)

    monkeypatch.setattr(MetricsFile, "append", noting)
    train(tiny_config(cifar100_root), run_dir)
    assert seen == [True, True]
    assert not locked_elsewhere(run_dir)  # released when the run ended


# ------------------------------------------------------------------ NaN and nonsense (item 15)

BAD_VALUES = [
    ({"optim.lr": NAN}, "optim.lr"),
    ({"optim.lr": INF}, "optim.lr"),
    ({"optim.momentum": NAN}, "optim.momentum"),
    ({"optim.momentum": INF}, "optim.momentum"),
    ({"optim.momentum": 5.0}, "optim.momentum"),
    ({"optim.momentum": 1.0}, "optim.momentum"),
    ({"optim.weight_decay": INF}, "optim.weight_decay"),
    ({"distill.temperature": NAN}, "distill.temperature"),
    ({"distill.temperature": INF}, "distill.temperature"),
    ({"distill.kd_weight": NAN}, "distill.kd_weight"),
    ({"distill.ce_weight": INF}, "distill.ce_weight"),
    ({"schedule.lr_min": NAN}, "schedule.lr_min"),
    ({"schedule.lr_min": 0.5}, "schedule.lr_min"),  # above optim.lr=0.05
    ({"schedule.name": "step", "schedule.gamma": NAN}, "schedule.gamma"),
    ({"optim.nesterov": True, "optim.momentum": 0.0}, "optim.nesterov"),
    ({"seed": 2**64}, "seed"),
    ({"root_seed": -(2**63) - 1}, "root_seed"),
    ({"model.kwargs": {"drop_rate": -1.0}}, "model.kwargs.drop_rate"),
    ({"model.kwargs": {"drop_path_rate": 1.5}}, "model.kwargs.drop_path_rate"),
]


def with_values(cfg, values: dict):
    for dotted, value in values.items():
        *path, key = dotted.split(".")
        node = cfg
        for part in path:
            node = getattr(node, part)
        setattr(node, key, value)
    return cfg


@pytest.mark.parametrize("values,key", BAD_VALUES, ids=[str(v) for v, _ in BAD_VALUES])
def test_nan_inf_and_nonsense_settings_are_refused_naming_the_key(values, key, tmp_path: Path):
    cfg = tiny_config(tmp_path)
    if any(k.startswith("distill.") for k in values):
        cfg.distill = default_settings("sd")  # the keys of sd's settings (cosine: checked first)
    cfg = with_values(cfg, values)
    with pytest.raises(ConfigError, match=key) as err:
        validate(cfg)
    assert "\n" not in str(err.value)


def test_sdrun_transfer_refuses_them_too():
    from sdrun.transfer.config import TransferConfig
    from sdrun.transfer.config import validate as validate_transfer

    with pytest.raises(ConfigError, match="optim.lr"):
        validate_transfer(TransferConfig(backbone="timm:resnet18", optim=OptimConfig(lr=NAN)))
    with pytest.raises(ConfigError, match="seed"):
        validate_transfer(TransferConfig(backbone="timm:resnet18", seed=2**70))


# ------------------------------------------------------------------ one line, not many (16)

BAD_COMMAND_LINES = [
    (["optim.lr=nan"], "optim.lr"),
    (["optim.momentum=5"], "optim.momentum"),
    ([f"seed={2**70}"], "seed"),
    (["+model.kwargs.drop_rate=-1"], "model.kwargs.drop_rate"),
    (["optim.nesterov=true", "optim.momentum=0"], "optim.nesterov"),
    (["dataset.batch_size=abc"], "dataset.batch_size"),
    (["dataset.batch_size=1.5"], "dataset.batch_size"),
    (["schedule.warmup_epochs=0.5"], "schedule.warmup_epochs"),
    (["distill.temprature=2"], "distill.temprature"),  # Hydra's own errors, shortened too
    (["seed=[1"], "seed=[1"),
]


@pytest.mark.parametrize("overrides,key", BAD_COMMAND_LINES,
                         ids=[" ".join(o) for o, _ in BAD_COMMAND_LINES])  # fmt: skip
def test_bad_settings_on_the_command_line_fail_in_one_line(cifar100_root, tmp_path, overrides, key):
    run_dir = tmp_path / "outputs" / "run"
    proc = sdrun_here(*tiny(cifar100_root, *overrides, f"hydra.run.dir={run_dir}"), cwd=tmp_path)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert key in line
    if "=" in overrides[0] and key.startswith(("dataset.", "schedule.")):
        assert "int" in line  # the type the schema wants
    assert not (tmp_path / "outputs").exists()


def deep(levels: int) -> dict:
    tree: dict = {}
    for _ in range(levels):
        tree = {"a": tree}
    return tree


MALFORMED = {
    "no progress": lambda p: p.pop("progress"),
    "rng a string": lambda p: p.update(rng="python"),
    "config a list": lambda p: p.update(config=[1, 2]),
    "method state a list": lambda p: p.update(method=[1, 2]),
    "progress with an unknown entry": lambda p: p["progress"].update(add_time=1),
    "deeply nested": lambda p: p["config"].update(deep=deep(5000)),
}


@pytest.mark.parametrize("damage", MALFORMED)
def test_a_malformed_checkpoint_given_to_resume_is_one_line(sd_run, tmp_path, damage):
    payload = torch.load(sd_run / "checkpoints" / LAST, weights_only=True)
    MALFORMED[damage](payload)
    path = tmp_path / "x.pt"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # pickling 5000 levels needs it; loading does not
    try:
        torch.save(payload, path)
    finally:
        sys.setrecursionlimit(limit)
    config = payload["config"] if isinstance(payload["config"], dict) else {}
    with pytest.raises(CheckpointError) as err:
        load_for_resume(str(path), config)  # the run's own config: only the damage differs
    assert "\n" not in str(err.value) and "malformed" in str(err.value)


def test_a_checkpoint_that_does_not_fit_the_run_is_one_line(sd_run, cifar100_root, tmp_path):
    """Past the structure checks (right types), wrong contents: an RNG state of the wrong
    size, through the CLI."""
    payload = torch.load(sd_run / "checkpoints" / LAST, weights_only=True)
    payload["rng"]["torch"] = torch.zeros(3, dtype=torch.uint8)
    path = tmp_path / "x.pt"
    torch.save(payload, path)
    run_dir = tmp_path / "run"
    proc = sdrun_here(*tiny(cifar100_root, f"resume={path}", f"hydra.run.dir={run_dir}"),
                      cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "does not fit" in one_line(proc.stderr)


def test_a_refused_multirun_job_keeps_its_folder_with_the_reason(cifar100_root, tmp_path):
    """A single run refused before training leaves no folder (test_cli.py); a multirun's job
    keeps its folder, so the sweep's record is complete, and its sdrun.log says why."""
    sweep_dir = tmp_path / "sweep"
    proc = sdrun_here("-m", *tiny(cifar100_root, "optim.lr=nan"), f"hydra.sweep.dir={sweep_dir}",
                      "hydra.sweep.subdir=${hydra.job.num}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "optim.lr" in one_line(proc.stderr)
    assert "optim.lr=nan must be > 0" in (sweep_dir / "0" / "sdrun.log").read_text()


# ------------------------------------------------------------------ CIFAR labels (item 17)


def rewrite_labels(root: Path, labels: list, name: str = "data_batch_1") -> Path:
    """Replace the first labels of one CIFAR-10 file."""
    path = root / "cifar-10-batches-py" / name
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"labels"] = labels + batch[b"labels"][len(labels) :]
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=4)
    return path


@pytest.mark.parametrize("bad", [3.7, "3"], ids=["float", "string"])
def test_cifar_labels_that_are_not_integers_are_refused_naming_the_file(tmp_path: Path, bad):
    root = write_tiny_cifar(tmp_path, "cifar10", n_train=50, n_test=10)
    path = rewrite_labels(root, [bad])
    with pytest.raises(DataError, match="labels must be integers") as err:
        load_cifar(root, "cifar10", download=False)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_cifar_labels_stored_as_whole_floats_are_read(tmp_path: Path):
    root = write_tiny_cifar(tmp_path, "cifar10", n_train=50, n_test=10)
    rewrite_labels(root, [3.0, 7.0])
    assert load_cifar(root, "cifar10", download=False).train_y[:2].tolist() == [3, 7]


def test_a_one_class_training_set_is_warned_about(tmp_path: Path, caplog):
    root = write_tiny_cifar(tmp_path, "cifar10", n_train=50, n_test=10)
    for i in range(1, 6):
        rewrite_labels(root, [4] * 10, f"data_batch_{i}")
    cfg = tiny_config(root).dataset
    cfg.name, cfg.limit_train, cfg.limit_test = "cifar10", None, None
    with caplog.at_level(logging.WARNING):
        build_loaders(cfg, seed=0, device=torch.device("cpu"), channels_last=False)
    (warning,) = [r.getMessage() for r in caplog.records if "one class" in r.getMessage()]
    assert "training" in warning


@pytest.mark.parametrize("override", ["dataset.batch_size=abc", "schedule.epochs=1.5"])
def test_sdrun_transfer_composition_errors_are_one_line(monkeypatch, capsys, tmp_path, override):
    """sdrun-transfer launches through the same code as sdrun (cli.launch): a value of the wrong
    type is one line naming the key, not Hydra's report."""
    from transfer_helpers import transfer

    run_dir = tmp_path / "run"
    code = transfer(monkeypatch, "backbone=scratch:resnet20", override, f"hydra.run.dir={run_dir}")
    assert code == 2
    line = one_line(capsys.readouterr().err, prog="sdrun-transfer")
    assert override.split("=")[0] in line and "type int" in line
    assert not run_dir.exists()


def test_a_checkpoint_of_an_older_sdrun_resumes_at_the_defaults_of_keys_added_since(
    cifar100_root, tmp_path
):
    """A run saved by an sdrun without `distill.eps` (a method's key added since) computed
    what its default computes: it resumes at that value, and is refused at any other."""
    run_dir = tmp_path / "run"
    cfg = tiny_config(cifar100_root, distill=default_settings("ls"))
    train(cfg, run_dir)
    last = run_dir / "checkpoints" / LAST
    payload = torch.load(last, weights_only=True)
    del payload["config"]["distill"]["eps"]  # what an older sdrun saved
    save_last(payload, run_dir)
    cfg.resume = str(run_dir)
    assert train(cfg, run_dir)["epochs"] == 2  # resumed (at the end: nothing left to train)
    cfg.distill.eps = 0.2
    with pytest.raises(CheckpointError, match=r"distill.eps=0.2 but .* trained with None"):
        train(cfg, run_dir)
