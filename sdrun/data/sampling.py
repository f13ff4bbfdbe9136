"""Sampling that makes an epoch reproducible and resumable, whatever the number of workers or
processes: per-sample augmentation seeds from (seed, epoch, index), shuffles seeded apart from
the epoch, evaluation shards that hold every sample exactly once, and a resumed epoch that
skips trained samples by index (they are never read or decoded). Shared by the image-folder
and VOC loaders."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


def sample_seed(seed: int, epoch: int, index: int, view: str = "") -> int:
    """A seed for one sample's augmentation; hashed so nearby triples do not collide. `view`
    names another augmentation of the sample (a partner's, sdrun/data/partners.py)."""
    key = f"{seed}:{epoch}:{index}" + (f":{view}" if view else "")
    digest = hashlib.sha256(f"sdrun-folder:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def sampler_seed(seed: int) -> int:
    """DistributedSampler shuffles with `seed + epoch`; hashing the run's seed first keeps
    (seed 1, epoch 0) from replaying the order of (seed 0, epoch 1)."""
    digest = hashlib.sha256(f"sdrun-sampler:{seed}".encode()).digest()
    return int.from_bytes(digest[:7], "little")  # leaves room for `+ epoch` under 2**63


class StridedShard(Sampler[int]):
    """Rank r of w takes samples r, r + w, r + 2w, ... in order: over the ranks every sample
    exactly once. (DistributedSampler would pad the shards to equal length with repeats, so
    some images would count twice; shards here differ by at most one sample.)"""

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, size, world_size)

    def set_epoch(self, epoch: int) -> None:
        pass  # the same order every epoch

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EpochKeys(Sampler[tuple[int, int]]):
    """Yields (epoch, index) in the inner sampler's order, so a worker can seed each sample,
    from position `start` on (a resumed epoch skips what it trained: only indices are skipped).

    The sampler runs in the main process, so this works with persistent workers too.
    """

    def __init__(self, inner: DistributedSampler | StridedShard) -> None:
        self.inner = inner
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, i) for i in itertools.islice(self.inner, self.start, None))

    def __len__(self) -> int:
        return max(len(self.inner) - self.start, 0)


class SeededSamples(Dataset):
    """`dataset[index]` under a CPU RNG seeded by (seed, epoch, index), for (epoch, index) keys
    (or (epoch, index, view): a partner's augmentation); with `indexed`, `(dataset[index],
    index)` (the composition hook's sample indices, sdrun/batches.py).

    fork_rng keeps the caller's RNG untouched (with num_workers=0 that is the main process).
    """

    def __init__(self, dataset: Dataset, seed: int, indexed: bool = False) -> None:
        self.dataset = dataset
        self.seed = seed
        self.indexed = indexed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[Any, ...]) -> Any:
        epoch, index, *view = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index, *view))
            sample = self.dataset[index]
        return (sample, index) if self.indexed else sample


class PartneredBatches(Sampler[list[tuple[Any, ...]]]):
    """Training batches of keys for `SeededSamples`: `batch_size` samples in the inner
    sampler's order, then their partners (sdrun/data/partners.py), from batch `start` on.

    `partners(epoch, batch_index, keys)` gives the partner keys of a batch; it may ask for
    another epoch's batch with `batch_keys` (the previous-batch rule at an epoch's first)."""

    def __init__(
        self,
        inner: DistributedSampler,
        batch_size: int,
        partners: Callable[[PartneredBatches, int, int, list[tuple[int, int]]], list[tuple]],
    ) -> None:
        self.inner = inner
        self.batch_size = batch_size
        self.partners = partners
        self.epoch = 0
        self.start = 0
        self._orders: dict[int, list[int]] = {}  # this process's order of the last epochs asked

    @property
    def batches(self) -> int:
        return len(self.inner) // self.batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def batch_keys(self, epoch: int, batch: int) -> list[tuple[int, int]]:
        """The (epoch, index) keys of batch `batch` of `epoch` on this process."""
        if epoch not in self._orders:
            self.inner.set_epoch(epoch)
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = list(self.inner)
        order = self._orders[epoch][batch * self.batch_size : (batch + 1) * self.batch_size]
        return [(epoch, i) for i in order]

    def __iter__(self) -> Iterator[list[tuple[Any, ...]]]:
        epoch = self.epoch
        for b in range(self.start, self.batches):
            keys = self.batch_keys(epoch, b)
            yield keys + self.partners(self, epoch, b, keys)

    def __len__(self) -> int:
        return max(self.batches - self.start, 0)
