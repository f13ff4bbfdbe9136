"""The loaders' batch-composition hook (sdrun/data/composition.py), on each training loader:
the device-resident one (CIFAR, fake data), image folders and VOC's task loader. INDICES adds
each sample's dataset index to exactly the batches SHUFFLED yields, and keeps the resume at a
batch boundary and the sharding over processes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.data import Dataset
from torch.utils.data import default_collate as collate

from sdrun.config import DatasetConfig
from sdrun.data import INDICES, SHUFFLED, Composition, DeviceLoader, FolderLoader, build_loaders
from sdrun.transfer.loader import TaskLoader

N, BATCH = 24, 4
IMAGES = torch.randint(0, 256, (N, 3, 8, 8), generator=torch.Generator().manual_seed(0),
                       dtype=torch.uint8)  # fmt: skip
LABELS = torch.arange(N)  # a sample's label is its index: the indices can be checked


class Toy(Dataset):
    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return IMAGES[i], int(LABELS[i])


def device(composition: Composition, rank: int, world: int):
    return DeviceLoader(IMAGES, LABELS, BATCH, (0.5,) * 3, (0.2,) * 3, train=True, seed=3,
                        rank=rank, world_size=world, composition=composition)  # fmt: skip


def folder(composition: Composition, rank: int, world: int):
    return FolderLoader(Toy(), BATCH, train=True, seed=3, rank=rank, world_size=world,
                        composition=composition)  # fmt: skip


def voc(composition: Composition, rank: int, world: int):
    return TaskLoader(Toy(), BATCH, train=True, collate=collate, move=lambda b, d: tuple(b),
                      device=torch.device("cpu"), seed=3, rank=rank, world_size=world,
                      composition=composition)  # fmt: skip


@pytest.mark.parametrize("make", [device, folder, voc], ids=["device", "folder", "voc"])
def test_indices_come_with_exactly_the_shuffled_batches(make: Callable):
    plain = list(make(SHUFFLED, 0, 1).epoch(2))
    indexed = list(make(INDICES, 0, 1).epoch(2))
    assert all(len(batch) == 2 for batch in plain) and len(plain) == len(indexed) == N // BATCH
    for (x, y), (xi, yi, index) in zip(plain, indexed):
        assert torch.equal(x, xi) and torch.equal(y, yi)  # the same images, augmented alike
        assert index.dtype == torch.int64 and torch.equal(index, y)  # each sample's own index
    seen = torch.cat([batch[2] for batch in indexed])
    assert sorted(seen.tolist()) == list(range(N))  # a shuffle: every sample once
    assert seen.tolist() != list(range(N))
    resumed = list(make(INDICES, 0, 1).epoch(2, start=2))  # a resume after two batches
    assert [b[2].tolist() for b in resumed] == [b[2].tolist() for b in indexed[2:]]
    shards = [torch.cat([b[2] for b in make(INDICES, r, 2).epoch(2)]).tolist() for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == N // 2 and not set(shards[0]) & set(shards[1])


def test_build_loaders_passes_the_composition_to_the_training_loader_only():
    cfg = DatasetConfig(name="fake", batch_size=8, num_train=16, num_test=8, num_classes=4,
                        image_size=8)  # fmt: skip
    data = build_loaders(cfg, seed=0, device=torch.device("cpu"), channels_last=False,
                         composition=INDICES)  # fmt: skip
    x, y, index = next(data.train.epoch(0))
    assert index.shape == y.shape and len(next(data.test.epoch(0))) == 2
