"""Multi-process tests without a launcher: `spawn` starts N processes (torch.multiprocessing,
gloo on the CPU) with the environment torchrun would give them, and calls fn(rank, *args) in
each. The worker functions below run inside those processes; they import sdrun lazily, so a
process pays only for what it uses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn: Callable[..., None], nprocs: int, *args: Any, limit: float = 240) -> None:
    """Run fn(rank, *args) in `nprocs` fresh processes; a failure in any one is raised here
    with its traceback, and a hang fails the test after `limit` seconds."""
    context = mp.start_processes(_entry, args=(nprocs, free_port(), fn, args), nprocs=nprocs,
                                 join=False, start_method="spawn")  # fmt: skip
    deadline = time.monotonic() + limit
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{fn.__name__}: processes still running after {limit} s (a hang)")


def _entry(rank: int, world_size: int, port: int, fn: Callable[..., None], args: tuple) -> None:
    env = dict(RANK=rank, WORLD_SIZE=world_size, LOCAL_RANK=rank, MASTER_ADDR="127.0.0.1",
               MASTER_PORT=port, OMP_NUM_THREADS=1)  # fmt: skip
    os.environ.update({key: str(value) for key, value in env.items()})
    torch.set_num_threads(1)
    from sdrun.runfolder import distributed

    distributed.init("cpu")
    try:
        fn(rank, *args)
    finally:
        distributed.shutdown()


# ----------------------------------------------------------------------------- evaluation


class ImageNumber(nn.Module):
    """Logits that name the image: its number (see folder_helpers.image_numbers) as one column."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from folder_helpers import image_numbers

        return torch.tensor(image_numbers(x), dtype=torch.float32)[:, None]


def gather_val_images(rank: int, root: Path, global_eval_batch: int, out: Path) -> None:
    """Evaluate the image folder's val split as the runner does: each rank predicts its shard
    (`evaluation.predict_test_set`), then the rows are gathered from every rank."""
    from types import SimpleNamespace

    from sdrun.config import DatasetConfig
    from sdrun.data import build_loaders
    from sdrun.runfolder.runtime import Runtime
    from sdrun.training.evaluation import predict_test_set

    world_size = torch.distributed.get_world_size()
    cfg = DatasetConfig(name="imagenet", root=str(root), batch_size=world_size,
                        eval_batch_size=global_eval_batch, image_size=32, eval_resize=36,
                        num_workers=0)  # fmt: skip
    data = build_loaders(cfg, seed=0, device=torch.device("cpu"), channels_last=False,
                         rank=rank, world_size=world_size)  # fmt: skip
    parts = SimpleNamespace(
        test_loader=data.test, runtime=Runtime(torch.device("cpu"), None, False)
    )
    numbers, labels = predict_test_set(parts, ImageNumber())
    if rank == 0:
        out.write_text(json.dumps({"numbers": numbers[:, 0].long().tolist(),
                                   "labels": labels.tolist(),
                                   "eval_batch": data.test.batch_size}))  # fmt: skip


# ------------------------------------------------------------------ download, stop, resume


class SignalAt:
    """A training loader that sends its own process SIGTERM as it hands out batch `batch` of
    epoch `epoch`: a real stop request (the signal handler, the agreement between ranks, the
    checkpoint) at a known step."""

    def __init__(self, loader: Any, epoch: int, batch: int) -> None:
        self.loader, self.at = loader, (epoch, batch)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return self.loader.num_samples

    @property
    def dataset_size(self) -> int:
        return self.loader.dataset_size

    def epoch(self, epoch: int, start: int = 0):
        args = (epoch, start) if start else (epoch,)
        for i, batch in enumerate(self.loader.epoch(*args), start):
            if (epoch, i) == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch


def download_train_stop_resume(
    rank: int, cifar_attrs: dict[str, Any], cfg: Any, out: Path, stop_at: tuple[int, int]
) -> None:
    """Run `cfg` (CIFAR-100, download=true into an empty root) three times in the same 2
    processes: `reference` from scratch (downloading first), `stopped` with rank 0 alone
    signalled mid-epoch, then `stopped` resumed. Each rank writes what the parent checks."""
    import torchvision.datasets as tvd

    from sdrun.errors import DataError
    from sdrun.runfolder.interrupt import RunStopped
    from sdrun.training import parts, runner

    for name, value in cifar_attrs.items():  # torchvision's real download, from a local server
        setattr(tvd.CIFAR100, name, value)
    report: dict[str, Any] = {}

    # A failed download on the process that fetches stops the others too, with its message.
    def fail() -> None:
        raise DataError("no network here")

    try:
        runner.distributed.first_on_each_node(fail)
    except DataError as err:
        report["download_error"] = str(err)

    summary = runner.run(cfg, out / "reference")
    report["reference"] = summary

    stopped = out / "stopped"
    build = parts.build_loaders

    def signalling(*args: Any, **kwargs: Any) -> Any:
        data = build(*args, **kwargs)
        data.train = SignalAt(data.train, *stop_at)
        return data

    if rank == 0:  # rank 1 never sees the signal: it must learn of it from rank 0
        parts.build_loaders = signalling
    try:
        runner.run(cfg, stopped)
    except RunStopped as err:
        report["stopped"] = str(err)
    finally:
        parts.build_loaders = build
    torch.distributed.barrier()  # rank 0 has written the checkpoint
    if rank == 0:
        checkpoint = stopped / "checkpoints" / "last.pt"
        report["stop_tally"] = torch.load(checkpoint, weights_only=True)["epoch_tally"]["batches"]
        shutil.copy(checkpoint, out / "stop.pt")
    torch.distributed.barrier()
    report["resumed"] = runner.run(replace(cfg, resume=str(stopped)), stopped)
    (out / f"rank{rank}.json").write_text(json.dumps(report))


# ----------------------------------------------------------------------------- methods


def train_each(rank: int, runs: dict[str, Any]) -> None:
    """Train each (config, run dir) of `runs` in turn in the same processes: one process group
    for several runs, so a test pays for the processes' start once. Each run checks at its end
    that the weights and the method's state are the same on every process."""
    from sdrun.training import runner

    for cfg, run_dir in runs.values():
        runner.run(cfg, run_dir)
