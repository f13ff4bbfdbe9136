"""Batches for fine-tuning, decoded by DataLoader workers and moved to the device.

Training reuses sdrun's image-folder sampling: a DistributedSampler shuffled from the run's
seed (each rank an equal, disjoint shard; the remainder left out that epoch) and every sample
augmented under an RNG seeded by (seed, epoch, index), so batches do not depend on workers or
on a resume. Evaluation gives rank r the images r, r + world, r + 2 world, ...: every image
exactly once over the processes (a DistributedSampler would pad with repeats). A training
loader's `composition` (sdrun/batches.py) can add the samples' dataset indices to a
batch: `(*batch, indices)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sdrun.batches import SHUFFLED, Composition
from sdrun.data.folder import one_line
from sdrun.data.sampling import EpochKeys, SeededSamples, StridedShard, sampler_seed
from sdrun.errors import ConfigError, DataError

Batch = Any
Mover = Callable[[Batch, torch.device], Batch]


class TaskLoader:
    def __init__(self, dataset: Dataset, batch_size: int, *, train: bool, collate: Callable,
                 move: Mover, device: torch.device, seed: int = 0, num_workers: int = 0,
                 rank: int = 0, world_size: int = 1,
                 composition: Composition = SHUFFLED) -> None:  # fmt: skip
        if composition.partners is not None:  # classification's pairs have no meaning for boxes
            raise ValueError(f"the task loader yields no partners ({composition.partners})")
        self.device, self.move, self.train = device, move, train
        self.indexed = train and composition.indices
        n = len(dataset)  # type: ignore[arg-type]
        if train:
            self.sampler = EpochKeys(
                DistributedSampler(dataset, num_replicas=world_size, rank=rank,  # type: ignore[arg-type]
                                   shuffle=True, seed=sampler_seed(seed), drop_last=True)
            )  # fmt: skip
            shard = len(self.sampler)
            if shard < batch_size:
                raise ConfigError(
                    f"dataset.batch_size={batch_size * world_size} is larger than the training "
                    f"set ({shard} images per process); lower dataset.batch_size or raise "
                    "dataset.limit_train"
                )
            source: Dataset = SeededSamples(dataset, seed, indexed=self.indexed)
            if self.indexed:
                collate = _with_indices(collate)
            self._batches, self._samples = shard // batch_size, shard // batch_size * batch_size
            sampler = self.sampler
        else:
            self.sampler = None
            source, sampler = dataset, StridedShard(n, rank, world_size)  # each image once
            self._samples = len(sampler)
            self._batches = -(-self._samples // batch_size)
        self.loader = DataLoader(
            source, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=train,
            num_workers=num_workers, collate_fn=collate, pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            # Its own generator: a DataLoader draws a seed from the global RNG each time it
            # starts an epoch, which would shift the detector's sampling RNG after a resume.
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip

    def __len__(self) -> int:
        return self._batches

    @property
    def num_samples(self) -> int:
        return self._samples

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches from batch `start` on (a resumed epoch: the sampler starts past
        the earlier batches' images, so they are never decoded)."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch, start * self.loader.batch_size)
        return self._batches_of()

    def _batches_of(self) -> Iterator[Batch]:
        try:
            for batch in self.loader:
                if self.indexed:
                    batch, index = batch
                    yield (*self.move(batch, self.device), index.to(self.device))
                else:
                    yield self.move(batch, self.device)
        except DataError as err:  # from a worker: its traceback is folded into the message
            raise DataError(one_line(err)) from None


def _with_indices(collate: Callable) -> Callable:
    """The task's collate for (sample, index) items: (its batch, int64 indices)."""

    def both(items: list[tuple[Any, int]]) -> tuple[Batch, torch.Tensor]:
        return collate([sample for sample, _ in items]), torch.tensor([i for _, i in items])

    return both
