"""Datasets as whole in-memory splits, and the device-resident loader that batches them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

from sdrun.batches import INDICES, SHUFFLED, Batch, Composition, Partners
from sdrun.config import DATASETS, DatasetConfig
from sdrun.data.base import ImageSet
from sdrun.data.cifar import load_cifar
from sdrun.data.cifar_writer import write_cifar
from sdrun.data.fake import make_fake
from sdrun.data.folder import FolderLoader, open_folders
from sdrun.data.holdout import check_holdout, split_folder, split_image_set
from sdrun.data.loader import DeviceLoader, hflip, normalize, random_crop
from sdrun.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "INDICES",
    "Batch",
    "Partners",
    "SHUFFLED",
    "Batches",
    "Composition",
    "DataBundle",
    "DeviceLoader",
    "FolderLoader",
    "ImageSet",
    "build_data",
    "build_loaders",
    "hflip",
    "load_cifar",
    "make_fake",
    "normalize",
    "open_folders",
    "random_crop",
    "write_cifar",
]


def build_data(cfg: DatasetConfig, *, seed: int) -> ImageSet:
    """The dataset `cfg` names, cut to limit_train / limit_test. `seed` only drives `fake`."""
    if cfg.name in ("cifar100", "cifar10"):
        data = load_cifar(Path(cfg.root).expanduser(), cfg.name, cfg.download)
    elif cfg.name == "fake":
        data = make_fake(cfg.num_train, cfg.num_test, cfg.num_classes, cfg.image_size, seed)
    else:
        raise ConfigError(
            f"dataset.name={cfg.name!r} is not one of {', '.join(DATASETS)}; pick one of those"
        )
    return data.limit(cfg.limit_train, cfg.limit_test)


class Batches(Protocol):
    """What the training loop needs from a loader: batches on the device, per epoch."""

    def __len__(self) -> int: ...

    @property
    def num_samples(self) -> int: ...

    @property
    def dataset_size(self) -> int:
        """Samples of the split it was built on (training: what the indices run over)."""
        ...

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches from batch `start` on (a resumed epoch skips the earlier ones
        without building them): images and labels, and for training what the loader's
        `Composition` adds (sdrun/batches.py)."""
        ...


@dataclass
class DataBundle:
    train: Batches
    test: Batches
    num_classes: int
    val: Optional[Batches] = None  # the held-out training images (dataset.val_split > 0)


def build_loaders(
    cfg: DatasetConfig,
    *,
    seed: int,
    device: torch.device,
    channels_last: bool,
    rank: int = 0,
    world_size: int = 1,
    composition: Composition = SHUFFLED,
) -> DataBundle:
    """Train, test (and validation) loaders for `cfg` on `device` (this rank's shard of each).
    The training batches hold what `composition` asks for (the method's, sdrun/methods/).

    Both batch sizes are global: each of `world_size` ranks takes its share. `batch_size`
    must divide (it defines the training); `eval_batch_size` is rounded down (it changes no
    result, only memory and speed), at least 1. The test and validation loaders are built
    alike (`eval_loader`), with the per-process eval batch of `_per_process`.
    """
    if cfg.batch_size % world_size:
        raise ConfigError(
            f"dataset.batch_size={cfg.batch_size} is not divisible by the {world_size} processes; "
            f"use a multiple of {world_size} (it is the global batch, split over processes)"
        )
    batches = _per_process(cfg, world_size)
    if cfg.name == "imagenet":
        return _folder_loaders(cfg, batches, seed, device, channels_last, rank, world_size,
                               composition)  # fmt: skip
    data = build_data(cfg, seed=seed)
    held: Optional[tuple[Tensor, Tensor]] = None
    if cfg.val_split:
        check_holdout(cfg.val_split, len(data.train_y), cfg.batch_size, world_size)
        data, val_x, val_y = split_image_set(data, cfg.val_split)
        held = (val_x, val_y)
    warn_one_class(cfg, data.train_y.unique().numel(), data.test_y.unique().numel())
    common = dict(
        mean=data.mean,
        std=data.std,
        device=device,
        channels_last=channels_last,
        rank=rank,
        world_size=world_size,
    )
    train = DeviceLoader(data.train_x, data.train_y, batches.train, train=True, seed=seed,
                         composition=composition, **common)  # fmt: skip

    def eval_loader(images: Tensor, labels: Tensor) -> DeviceLoader:
        return DeviceLoader(images, labels, batches.eval, train=False, **common)

    val = None if held is None else eval_loader(*held)
    return DataBundle(train, eval_loader(data.test_x, data.test_y), data.num_classes, val)


def warn_one_class(cfg: DatasetConfig, train_classes: int, test_classes: int) -> None:
    """A split of one class trains nothing worth a number: a net that always answers that class
    scores 100 % on such a test set. Allowed (a smoke test may want it), but never silently."""
    for split, count in (("training", train_classes), ("test", test_classes)):
        if count == 1:
            log.warning(
                "dataset %s (root %s): the %s images are all of one class, so top-1 on them is "
                "meaningless (100 %% for a net that always answers that class); check the "
                "labels or dataset.limit_%s",
                cfg.name, cfg.root, split, "train" if split == "training" else "test",
            )  # fmt: skip


@dataclass(frozen=True)
class _BatchSizes:
    train: int
    eval: int


def _per_process(cfg: DatasetConfig, world_size: int) -> _BatchSizes:
    """One process's share of the global `batch_size` and `eval_batch_size`."""
    return _BatchSizes(cfg.batch_size // world_size, max(cfg.eval_batch_size // world_size, 1))


def _folder_loaders(
    cfg: DatasetConfig,
    batches: _BatchSizes,
    seed: int,
    device: torch.device,
    channels_last: bool,
    rank: int,
    world_size: int,
    composition: Composition,
) -> DataBundle:
    """Image folders are too big for memory: decoded per batch by DataLoader workers."""
    splits = open_folders(
        Path(cfg.root).expanduser(),
        image_size=cfg.image_size,
        eval_resize=cfg.eval_resize,
        limit_train=cfg.limit_train,
        limit_test=cfg.limit_test,
    )
    common = dict(
        seed=seed,
        device=device,
        num_workers=cfg.num_workers,
        channels_last=channels_last,
        rank=rank,
        world_size=world_size,
    )
    train_set, held = splits.train, None
    if cfg.val_split:
        check_holdout(cfg.val_split, len(train_set), cfg.batch_size, world_size)
        train_set, held = split_folder(splits.train, splits.val, cfg.val_split)

    def eval_loader(dataset: Dataset) -> FolderLoader:
        return FolderLoader(dataset, batches.eval, train=False, **common)

    warn_one_class(cfg, splits.num_classes, splits.num_classes)
    train = FolderLoader(train_set, batches.train, train=True, composition=composition, **common)
    val = None if held is None else eval_loader(held)
    return DataBundle(train, eval_loader(splits.val), splits.num_classes, val)
