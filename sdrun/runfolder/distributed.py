"""Multi-process training with torch.distributed, as launched by torchrun.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them sdrun is a single process and
every function here is a no-op. NCCL is used on GPUs, gloo on the CPU. Rank 0 writes every
file; all ranks train on their shard of each global batch (`dataset.batch_size` is global).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sdrun.errors import DataError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    env = os.environ
    return Dist(
        int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    )


def init(device_type: str) -> Dist:
    """Join the process group torchrun set up (once per process)."""
    info = from_env()
    if info.enabled and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return info


def local_device(device: torch.device, info: Dist) -> torch.device:
    return torch.device("cuda", info.local_rank) if device.type == "cuda" else device


def shared_timestamp(fmt: str) -> str:
    """The launch time, the same on every rank (rank 0's), for a shared run directory."""
    stamp = datetime.now().strftime(fmt)
    if not dist.is_initialized():
        return stamp
    box = [stamp]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: nn.Module, info: Dist, device: torch.device, sync_bn: bool) -> nn.Module:
    if not info.enabled:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [info.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sum_(tensor: Tensor) -> Tensor:
    """Sum over ranks (in place, returned for chaining)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sync_state(model: nn.Module) -> None:
    """Give every rank rank 0's weights and buffers: DDP keeps weights in step, but each rank's
    BN running statistics drift from its own shard after DDP's last buffer broadcast."""
    if dist.is_initialized():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def gather_rows(tensor: Tensor) -> Tensor:
    """Concatenate every rank's rows (shards may differ in length by a few rows)."""
    if not dist.is_initialized():
        return tensor
    sizes = [
        torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())
    ]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def gather_equal_rows(tensor: Tensor) -> Tensor:
    """Every rank's rows in rank order, when all ranks hold the same number (a training step's
    shards): one all-gather, no host sync."""
    if not dist.is_initialized():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_initialized() else 0


def fingerprint(state: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name, value in state.items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_identical(state: dict[str, Tensor], what: str) -> str:
    """Raise if `state` differs between ranks (a desynchronised run); returns its fingerprint."""
    mine = fingerprint(state)
    if not dist.is_initialized():
        return mine
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    if len(set(every)) != 1:
        raise RuntimeError(f"{what} differs between ranks: {every}")
    return mine


def any_rank(flag: bool, device: torch.device) -> bool:
    if not dist.is_initialized():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def first_on_each_node(fetch: Callable[[], None]) -> None:
    """Run `fetch` (an idempotent "download what is missing") in one process at a time per
    folder: global rank 0 first, then the first process of each other node (whose disk may be
    its own; on a shared disk it finds the files there), while the others wait. Every rank
    then goes on to read. A failure in `fetch` stops every rank with its message instead of
    leaving the others waiting at the barrier.
    """
    if not dist.is_initialized():
        fetch()
        return
    info = from_env()
    for mine in (info.rank == 0, info.local_rank == 0 and info.rank != 0):
        error: Optional[BaseException] = None
        if mine:
            try:
                fetch()
            except Exception as err:  # shared below, then raised here with its traceback
                error = err
        messages: list[Optional[str]] = [None] * dist.get_world_size()
        # the barrier, on a group that waits as long as a download may take
        dist.all_gather_object(messages, None if error is None else str(error), _waiting_group())
        if error is not None:
            raise error
        failed = next((m for m in messages if m is not None), None)
        if failed is not None:
            raise DataError(failed)


# NCCL's default group aborts a collective after 10 minutes (gloo's after 30): a first
# download of VOC (~2 GB) can take longer, so the other processes wait on a group of their own.
DOWNLOAD_WAIT = timedelta(hours=6)
_wait_group: Optional[dist.ProcessGroup] = None


def _waiting_group() -> dist.ProcessGroup:
    """A gloo group with a long timeout (made by every rank at its first use: a collective)."""
    global _wait_group
    if _wait_group is None:
        _wait_group = dist.new_group(backend="gloo", timeout=DOWNLOAD_WAIT)
    return _wait_group


def shutdown() -> None:
    global _wait_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _wait_group = None
