"""Several processes (gloo on the CPU). torchrun: one run directory, identical teacher and
weights on both ranks, training that matches the single-process run on the same global batch.
Without a launcher (dist_workers.spawn, or `python -m sdrun` per rank as srun starts it):
evaluation counts every image once, the first CIFAR download happens once, a mid-epoch stop
resumes to the same epoch metrics, a NaN on one rank stops every rank; both batch sizes are
global."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from dist_workers import download_train_stop_resume, free_port, gather_val_images, spawn
from folder_helpers import write_image_folder
from helpers import read_jsonl, sdrun_here, tiny, write_tiny_cifar

from sdrun.config import (
    Config,
    DatasetConfig,
    LoggerConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainerConfig,
)
from sdrun.data import build_loaders, load_cifar
from sdrun.errors import ConfigError, DataError
from sdrun.methods import default_settings

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
    proc = sdrun_here(*tiny(cifar100_root, *EXTRA, f"hydra.run.dir={single}"), cwd=work)
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


# ----------------------------------------------------------------------------- evaluation


def test_evaluation_over_two_processes_counts_every_val_image_once(tmp_path: Path):
    # 3 classes x 3 val images: 9 is not divisible by 2 (a padding sampler repeats one image)
    root = write_image_folder(tmp_path / "images", num_classes=3, n_train=2, n_val=3)
    out = tmp_path / "gathered.json"
    spawn(gather_val_images, 2, root, 6, out)
    gathered = json.loads(out.read_text())
    val_numbers = list(range(3 * 2, 3 * 2 + 3 * 3))  # write_image_folder numbers train first
    assert sorted(gathered["numbers"]) == val_numbers
    assert Counter(gathered["labels"]) == {0: 3, 1: 3, 2: 3}
    assert gathered["eval_batch"] == 3  # dataset.eval_batch_size=6 is global: 3 per process


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_both_batch_sizes_are_global(world_size: int):
    # 50 test images, global eval batch 10: per process 10 // N (rounded down, at least 1)
    cfg = DatasetConfig(name="fake", num_train=48, num_test=50, num_classes=10, image_size=8,
                        batch_size=12, eval_batch_size=10)  # fmt: skip
    shards = [
        build_loaders(
            cfg,
            seed=0,
            device=torch.device("cpu"),
            channels_last=False,
            rank=rank,
            world_size=world_size,
        )
        for rank in range(world_size)
    ]
    for data in shards:
        assert data.train.batch_size == 12 // world_size
        assert data.test.batch_size == 10 // world_size
    labels = [batch.labels for data in shards for batch in data.test.epoch(0)]
    assert sum(len(y) for y in labels) == 50  # every test image, once


def test_a_batch_size_the_processes_do_not_divide_is_refused():
    cfg = DatasetConfig(name="fake", num_train=48, num_test=50, batch_size=10)
    with pytest.raises(ConfigError, match="dataset.batch_size=10 is not divisible by the 3"):
        build_loaders(cfg, seed=0, device=torch.device("cpu"), channels_last=False, world_size=3)


# ------------------------------------------------------------------ download, stop, resume


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class ArchiveServer(SimpleHTTPRequestHandler):
    """Serves a folder; counts the full downloads (torchvision first sends a request with a
    `Method: HEAD` header to follow redirects, which is not one)."""

    downloads: list[str] = []

    def do_GET(self) -> None:
        if self.headers.get("Method") != "HEAD":
            ArchiveServer.downloads.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def cifar_server(tmp_path: Path):
    """A tiny CIFAR-100 as the official archive on a localhost HTTP server, and the torchvision
    class attributes (URL, md5 sums) that point its download there."""
    source = write_tiny_cifar(tmp_path / "source") / "cifar-100-python"
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="cifar-100-python")
    ArchiveServer.downloads = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(ArchiveServer, directory=str(served)))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    attrs = {
        "url": f"http://127.0.0.1:{server.server_address[1]}/{archive.name}",
        "filename": archive.name,
        "tgz_md5": md5(archive),
        "train_list": [["train", md5(source / "train")]],
        "test_list": [["test", md5(source / "test")]],
        "meta": {"filename": "meta", "key": "fine_label_names", "md5": md5(source / "meta")},
    }
    yield attrs
    server.shutdown()
    server.server_close()


def test_download_in_one_process_checks_the_archive_and_every_file(
    cifar_server: dict, tmp_path: Path, monkeypatch
):
    import torchvision.datasets as tvd

    for name, value in cifar_server.items():
        monkeypatch.setattr(tvd.CIFAR100, name, value)
    data = load_cifar(tmp_path / "a", "cifar100", download=True)
    assert data.train_x.shape == (256, 3, 32, 32) and data.num_classes == 100
    load_cifar(tmp_path / "a", "cifar100", download=True)  # the files are there: no download
    assert len(ArchiveServer.downloads) == 1
    # a file that does not match its md5 after unpacking: one line, nothing half-read
    monkeypatch.setattr(tvd.CIFAR100, "test_list", [["test", "0" * 32]])
    with pytest.raises(DataError) as err:
        load_cifar(tmp_path / "b", "cifar100", download=True)
    message = str(err.value)
    assert "\n" not in message and "md5 mismatch in the unpacked test" in message
    assert "dataset.download=false" in message


def test_first_run_downloads_once_and_a_mid_epoch_stop_resumes_to_the_same_metrics(
    cifar_server: dict, tmp_path: Path
):
    cfg = Config(
        dataset=DatasetConfig(name="cifar100", root=str(tmp_path / "data"), download=True,
                              batch_size=32, eval_batch_size=64),  # 8 steps per epoch
        model=ModelConfig(name="resnet20"),
        schedule=ScheduleConfig(epochs=2, cycle_length=1, lr_min=0.001),
        distill=default_settings("sd"),
        optim=OptimConfig(lr=0.05),
        trainer=TrainerConfig(device="cpu", deterministic=True, log_every=2),
        logger=LoggerConfig(name="none"),
    )  # fmt: skip
    for name in ("reference", "stopped"):
        (tmp_path / name).mkdir()
    # SIGTERM to rank 0 only, as it hands out batch 3 of epoch 2: both stop after 4 batches
    spawn(download_train_stop_resume, 2, cifar_server, cfg, tmp_path, (2, 3))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    # the archive was fetched once, by one process; both trained on it
    assert ArchiveServer.downloads == ["/cifar-100-python.tar.gz"]
    for report in ranks:
        assert report["reference"]["complete"] and report["reference"]["processes"] == 2
        assert report["download_error"] == "no network here"  # rank 1 did not wait forever
    assert ranks[0]["reference"]["student/top1"] == ranks[1]["reference"]["student/top1"]

    # the stop: mid-epoch, agreed by rank 1 without a signal of its own
    assert ranks[0]["stop_tally"] == 4
    assert all("in epoch 2 after step 4" in report["stopped"] for report in ranks)
    reference = read_jsonl(tmp_path / "reference" / "metrics.jsonl")
    resumed = read_jsonl(tmp_path / "stopped" / "metrics.jsonl")
    assert [r["epoch"] for r in resumed] == [1, 2]
    # the resumed epoch's training metrics count each process's steps once
    for key in ("train/loss", "train/ce", "train/kd", "train/top1"):
        assert resumed[1][key] == pytest.approx(reference[1][key], rel=1e-5), key
    weights = [torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True)["model"]
               for d in ("reference", "stopped")]  # fmt: skip
    for name, value in weights[0].items():
        assert torch.equal(weights[1][name], value), name


# ----------------------------------------------------------------------------- divergence


def test_a_non_finite_loss_on_one_rank_stops_every_rank_with_one_line(
    cifar100_root: Path, tmp_path: Path
):
    """Each rank a `python -m sdrun` of its own (as srun starts them), so each one's exit code
    and stderr are seen: no launcher kills the rank left waiting."""
    args = tiny(cifar100_root, *EXTRA, "trainer.log_every=2", f"hydra.run.dir={tmp_path / 'run'}")
    # NaN at global step 1 on rank 1 only: the step just before a check (the worst case)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "SDRUN_FAULT_NAN_STEP": "1", "SDRUN_FAULT_NAN_RANK": "1"}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sdrun", *args],
            cwd=tmp_path,
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    deadline = time.monotonic() + 150  # far below any collective's timeout (gloo: 30 min)
    try:
        errors = [p.communicate(timeout=max(deadline - time.monotonic(), 1))[1] for p in procs]
    except subprocess.TimeoutExpired:
        pytest.fail("a rank was still running 150 s later: it hangs in a collective")
    finally:
        for p in procs:
            p.kill()
    for rank, (proc, stderr) in enumerate(zip(procs, errors)):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, f"rank {rank}: {stderr[-3000:]}"
        assert lines[0].startswith("sdrun: error: training diverged") and "epoch 1" in lines[0]
        assert "no epoch finished, so there is no checkpoint" in lines[0]  # none to point to


def test_the_download_barrier_waits_longer_than_a_collectives_default_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """NCCL aborts a collective after 10 minutes: the processes waiting for a download wait on
    a gloo group of their own, with a timeout of hours (one process here; the waiting itself
    is test_download_in_one_process_checks_the_archive_and_every_file's)."""
    import datetime

    import torch.distributed as dist

    from sdrun.runfolder import distributed

    made = []
    new_group = dist.new_group
    monkeypatch.setattr(dist, "new_group", lambda **kw: made.append(kw) or new_group(**kw))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        fetched = []
        distributed.first_on_each_node(lambda: fetched.append(1))
        distributed.first_on_each_node(lambda: fetched.append(1))
    finally:
        distributed.shutdown()
    assert fetched == [1, 1] and len(made) == 1  # one group, made once
    assert made[0]["backend"] == "gloo" and made[0]["timeout"] >= datetime.timedelta(hours=1)
