"""The loaders' batch-composition hook (sdrun/batches.py), on each training loader:
the device-resident one (CIFAR, fake data), image folders and VOC's task loader. INDICES adds
each sample's dataset index to exactly the batches SHUFFLED yields, and keeps the resume at a
batch boundary and the sharding over processes; the partner compositions add a `Partners` row
for each sample. The classification loaders' batches are `Batch`es, read by name."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from folder_helpers import image_numbers, write_image_folder
from torch.utils.data import Dataset
from torch.utils.data import default_collate as collate

from sdrun.batches import PREVIOUS_BATCH, SAME_CLASS, Batch
from sdrun.config import DatasetConfig
from sdrun.data import INDICES, SHUFFLED, Composition, DeviceLoader, FolderLoader, build_loaders
from sdrun.data.partners import ClassMembers
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


def fields(batch) -> tuple:
    """(images, labels, indices or None) of a classification `Batch` or a task loader's tuple."""
    if isinstance(batch, Batch):
        return batch.images, batch.labels, batch.indices
    return (*batch, None)[:3]


@pytest.mark.parametrize("make", [device, folder, voc], ids=["device", "folder", "voc"])
def test_indices_come_with_exactly_the_shuffled_batches(make: Callable):
    plain = [fields(b) for b in make(SHUFFLED, 0, 1).epoch(2)]
    indexed = [fields(b) for b in make(INDICES, 0, 1).epoch(2)]
    assert all(b[2] is None for b in plain) and len(plain) == len(indexed) == N // BATCH
    for (x, y, _), (xi, yi, index) in zip(plain, indexed):
        assert torch.equal(x, xi) and torch.equal(y, yi)  # the same images, augmented alike
        assert index.dtype == torch.int64 and torch.equal(index, y)  # each sample's own index
    seen = torch.cat([batch[2] for batch in indexed])
    assert sorted(seen.tolist()) == list(range(N))  # a shuffle: every sample once
    assert seen.tolist() != list(range(N))
    resumed = [fields(b) for b in make(INDICES, 0, 1).epoch(2, start=2)]  # after two batches
    assert [b[2].tolist() for b in resumed] == [b[2].tolist() for b in indexed[2:]]
    shards = [torch.cat([fields(b)[2] for b in make(INDICES, r, 2).epoch(2)]).tolist()
              for r in (0, 1)]  # fmt: skip
    assert len(shards[0]) == len(shards[1]) == N // 2 and not set(shards[0]) & set(shards[1])


def test_build_loaders_passes_the_composition_to_the_training_loader_only():
    cfg = DatasetConfig(name="fake", batch_size=8, num_train=16, num_test=8, num_classes=4,
                        image_size=8)  # fmt: skip
    data = build_loaders(cfg, seed=0, device=torch.device("cpu"), channels_last=False,
                         composition=INDICES)  # fmt: skip
    batch = next(data.train.epoch(0))
    assert batch.indices.shape == batch.labels.shape and next(data.test.epoch(0)).indices is None


# --- partners: SAME_CLASS (cskd) and PREVIOUS_BATCH (dlb) ---

CLASSES = LABELS % 3  # 8 images per class


class Classes(Dataset):
    """24 images of 3 classes (label = index % 3), each sample a little noisier under its
    seeded RNG, so that two augmentations of one image differ."""

    targets = CLASSES.tolist()

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        noise = torch.randint(0, 8, IMAGES[i].shape, dtype=torch.uint8)
        return IMAGES[i] + noise, int(CLASSES[i])


def device_classes(composition: Composition, rank: int, world: int, seed: int = 3):
    return DeviceLoader(IMAGES, CLASSES, BATCH, (0.5,) * 3, (0.2,) * 3, train=True, seed=seed,
                        rank=rank, world_size=world, composition=composition)  # fmt: skip


def folder_classes(composition: Composition, rank: int, world: int, seed: int = 3):
    return FolderLoader(Classes(), BATCH, train=True, seed=seed, rank=rank, world_size=world,
                        composition=composition)  # fmt: skip


PARTNERED = pytest.mark.parametrize("make", [device_classes, folder_classes],
                                    ids=["device", "folder"])  # fmt: skip


@PARTNERED
@pytest.mark.parametrize("composition", [SAME_CLASS, PREVIOUS_BATCH], ids=["pairs", "previous"])
def test_partners_come_on_top_of_exactly_the_shuffled_batches(make: Callable, composition):
    plain = list(make(SHUFFLED, 0, 1).epoch(2))
    partnered = list(make(composition, 0, 1).epoch(2))
    assert len(plain) == len(partnered) == N // BATCH
    for shuffled, batch in zip(plain, partnered):
        assert shuffled.indices is None and shuffled.partners is None
        assert torch.equal(shuffled.images, batch.images)
        assert torch.equal(shuffled.labels, batch.labels)
        assert torch.equal(CLASSES[batch.indices], batch.labels)
        assert torch.equal(CLASSES[batch.partners.indices], batch.partners.labels)
    resumed = list(make(composition, 0, 1).epoch(2, start=3))  # a resume after three batches
    for a, b in zip(resumed, partnered[3:], strict=True):
        assert all(torch.equal(u, v) for u, v in zip((*a[:3], *a.partners), (*b[:3], *b.partners)))


@PARTNERED
def test_each_image_gets_another_image_of_its_class_drawn_anew_each_epoch(make: Callable):
    draws: dict[int, set[int]] = {i: set() for i in range(N)}
    for epoch in range(1, 9):
        for x, y, index, (px, py, pindex) in make(SAME_CLASS, 0, 1).epoch(epoch):
            assert torch.equal(py, y) and not bool((pindex == index).any())
            assert px.shape == x.shape and not torch.equal(px, x)
            for i, j in zip(index.tolist(), pindex.tolist()):
                draws[i].add(j)
    # 8 epochs of 7 candidates each: every image met several partners, all of its class
    assert all(len(got) >= 3 and {j % 3 for j in got} == {i % 3} for i, got in draws.items())


def test_the_same_class_draw_splits_the_unit_interval_evenly_over_the_other_members():
    members = ClassMembers(torch.tensor([0, 1, 0, 0, 1, 2]))  # class 0: 0, 2, 3; class 2 alone
    for u, want in ((0.0, [2, 4, 0, 0, 1, 5]), (0.49, [2, 4, 0, 0, 1, 5]),
                    (0.5, [3, 4, 3, 2, 1, 5]), (0.99, [3, 4, 3, 2, 1, 5])):  # fmt: skip
        got = members.partners(torch.full((6,), u, dtype=torch.float64))
        assert got.tolist() == want, u  # never itself, except the only member of its class


@PARTNERED
def test_each_batch_repeats_the_previous_one_under_a_second_augmentation(make: Callable):
    epochs = [list(make(PREVIOUS_BATCH, 0, 1).epoch(e)) for e in (1, 2)]
    first = epochs[0][0].partners
    assert first.images.shape[0] == first.labels.shape[0] == first.indices.shape[0] == 0
    batches = epochs[0] + epochs[1]
    for before, batch in zip(batches, batches[1:]):
        repeated = batch.partners
        assert torch.equal(repeated.indices, before.indices)
        assert torch.equal(repeated.labels, before.labels)
        assert not torch.equal(repeated.images, before.images)  # the same images, augmented anew
    # the resume of epoch 2 from its first batch repeats epoch 1's last, as uninterrupted
    again, want = next(make(PREVIOUS_BATCH, 0, 1).epoch(2)), epochs[1][0]
    assert all(torch.equal(u, v) for u, v in zip((*again[:3], *again.partners),
                                                (*want[:3], *want.partners)))  # fmt: skip


@PARTNERED
@pytest.mark.parametrize("composition", [SAME_CLASS, PREVIOUS_BATCH], ids=["pairs", "previous"])
def test_two_processes_share_each_epoch_without_losing_or_repeating_an_image(
    make: Callable, composition
):
    shards = [list(make(composition, r, 2).epoch(2)) for r in (0, 1)]
    own = [torch.cat([b.indices for b in shard]).tolist() for shard in shards]
    assert len(own[0]) == len(own[1]) == N // 2 and sorted(own[0] + own[1]) == list(range(N))
    if composition == PREVIOUS_BATCH:  # each process repeats its own previous batch
        for shard in shards:
            assert all(torch.equal(b.partners.indices, a.indices) for a, b in zip(shard, shard[1:]))


def test_partners_are_drawn_from_the_training_part_of_a_validation_split():
    cfg = DatasetConfig(name="fake", batch_size=8, num_train=48, num_test=8, num_classes=3,
                        image_size=8, val_split=12)  # fmt: skip
    data = build_loaders(cfg, seed=0, device=torch.device("cpu"), channels_last=False,
                         composition=SAME_CLASS)  # fmt: skip
    assert data.train.dataset_size == 36
    for batch in data.train.epoch(1):
        assert torch.equal(batch.partners.labels, batch.labels)
        assert int(batch.partners.indices.max()) < 36


def test_the_task_loader_yields_no_partners():
    with pytest.raises(ValueError, match="yields no partners"):
        voc(SAME_CLASS, 0, 1)


@pytest.mark.parametrize("composition", [SAME_CLASS, PREVIOUS_BATCH], ids=["pairs", "previous"])
def test_an_image_folders_partners_are_the_decoded_training_images_never_held_out_ones(
    tmp_path, composition
):
    root = write_image_folder(tmp_path / "folders", num_classes=3, n_train=8, n_val=2)
    cfg = DatasetConfig(name="imagenet", root=str(root), batch_size=6, eval_batch_size=6,
                        image_size=24, eval_resize=24, num_workers=0, val_split=6)  # fmt: skip
    data = build_loaders(cfg, seed=1, device=torch.device("cpu"), channels_last=False,
                         composition=composition)  # fmt: skip
    number = data.train.loader.dataset.dataset.indices  # split position -> image number
    held = {n for batch in data.val.epoch(0) for n in image_numbers(batch.images)}
    partners = set()
    for epoch in (1, 2):
        for x, y, index, (px, py, pindex) in data.train.epoch(epoch):
            assert image_numbers(x) == [number[i] for i in index.tolist()]
            assert image_numbers(px) == [number[i] for i in pindex.tolist()]
            assert [n // 8 for n in image_numbers(px)] == py.tolist()  # train: 8 per class
            assert py.tolist() == y.tolist() or composition == PREVIOUS_BATCH
            partners.update(image_numbers(px))
    assert len(held) == 6 and partners and not partners & held
