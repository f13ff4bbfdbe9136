"""Image-folder datasets (the ILSVRC2012 layout, `root/{train,val}/<class>/*.jpg`), decoded in
DataLoader workers and normalized on the device.

Workers decode, crop and flip on the CPU and hand back uint8 tensors; a batch goes to the
device as uint8 (a quarter of the bytes of float32) from pinned memory without blocking, and
is normalized there. Training order comes from a DistributedSampler seeded by (seed, epoch);
each sample's augmentation is seeded by (seed, epoch, index), so a batch does not depend on
the number of workers, on the worker that drew it, or on whether the run was resumed (a
resumed epoch starts the sampler past the images already trained: they are never read).
Evaluation shards the split by striding, so every image counts exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from sdrun.batches import SAME_CLASS_PARTNERS, SHUFFLED, Batch, Composition, Partners
from sdrun.data.loader import normalize
from sdrun.data.partners import ClassMembers, previous_position, same_class_partners
from sdrun.data.sampling import (
    EpochKeys,
    PartneredBatches,
    SeededSamples,
    StridedShard,
    sampler_seed,
)
from sdrun.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Seed of the permutation a limit cuts: fixed, not the run's seed, so `limit_train=N` means
# the same images in every run of a seed sweep.
LIMIT_SEED = 0
LAYOUT = "root/train/<class>/*.jpg and root/val/<class>/*.jpg"


def read_rgb(path: str) -> Image.Image:
    """ImageFolder's loader: the image at `path` as RGB, or a DataError naming the file.

    PIL reads lazily, so a truncated file only fails at `convert`, inside the try.
    """
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    # SyntaxError: some PIL plugins raise it for malformed headers.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split())
        raise DataError(f"cannot read image {path}: {reason}; delete or replace the file") from None


def train_transform(image_size: int) -> v2.Compose:
    # Crop and flip the PIL image before converting: only the crop becomes a tensor.
    return v2.Compose(
        [v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip(), v2.PILToTensor()]
    )


def eval_transform(image_size: int, eval_resize: int) -> v2.Compose:
    return v2.Compose([v2.Resize(eval_resize), v2.CenterCrop(image_size), v2.PILToTensor()])


def open_split(root: Path, split: str, transform: Callable[[Any], Tensor]) -> ImageFolder:
    """ImageFolder over `root/split`, with user-facing errors for a missing or empty folder."""
    path = root / split
    if not path.is_dir():
        raise DataError(
            f"{path} not found: dataset=imagenet expects {LAYOUT}; "
            "set dataset.root to the folder holding train/ and val/"
        )
    try:
        return ImageFolder(str(path), transform=transform, loader=read_rgb)
    except FileNotFoundError as err:  # no class folder, or a class folder with no image
        reason = " ".join(str(err).split())
        raise DataError(f"{path} holds no usable images ({reason}); expected {LAYOUT}") from None


def check_same_classes(train: ImageFolder, val: ImageFolder) -> None:
    """Labels are folder indices, so both splits must list the same class folders."""
    if train.classes == val.classes:
        return
    only_train = sorted(set(train.classes) - set(val.classes))
    only_val = sorted(set(val.classes) - set(train.classes))
    raise DataError(
        f"class folders differ between {train.root} and {val.root} "
        f"(only in train: {_few(only_train)}; only in val: {_few(only_val)}); "
        "give both splits the same class folders"
    )


def _few(names: list[str], shown: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def class_balanced_order(targets: list[int], seed: int = LIMIT_SEED) -> Tensor:
    """A fixed permutation of sample indices whose every prefix is as class-balanced as the
    data allows: round-robin over the classes, each class's samples in a seeded random order.

    A plain random permutation can leave classes out of a short prefix; this one has every
    class in the first `num_classes` samples (when each class has one).
    """
    labels = torch.as_tensor(targets, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    # Group by class, keeping the random order inside each class (stable sort).
    grouped = perm[torch.sort(labels[perm], stable=True).indices]
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(len(labels)) - starts[labels[grouped]]
    key = rank_in_class * (int(labels.max()) + 1) + labels[grouped]
    return grouped[torch.argsort(key)]


def limit(dataset: ImageFolder, n: Optional[int]) -> Dataset:
    """The first `n` samples of `class_balanced_order` (all of them when n is None)."""
    if n is None or n >= len(dataset):
        return dataset
    return Subset(dataset, class_balanced_order(dataset.targets)[:n].tolist())


def folder_labels(dataset: Dataset) -> Tensor:
    """The class index of every sample of an image folder or of a Subset of one, without
    reading an image."""
    if isinstance(dataset, Subset):
        return folder_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.int64)]
    return torch.as_tensor(dataset.targets, dtype=torch.int64)  # type: ignore[attr-defined]


def one_line(err: DataError) -> str:
    """The original message of a DataError, also after a DataLoader worker re-raised it.

    A worker's error comes back with its traceback folded into the message; the last line of
    that traceback is `sdrun.errors.DataError: <original message>`.
    """
    lines = [line for line in str(err).splitlines() if line.strip()]
    prefix = f"{DataError.__module__}.{DataError.__qualname__}: "
    last = lines[-1] if lines else ""
    return last.removeprefix(prefix)


class FolderLoader:
    """Batches of normalized images and int64 labels on `device`, from an image dataset whose
    samples are (uint8 (C, H, W) tensor, class index).

    train=True: each epoch a fresh shuffle from (seed, epoch), only full batches; each rank
    of `world_size` gets an equal, disjoint shard (the remainder is left out that epoch).
    train=False: in order; every sample exactly once over the ranks (strided shards, which
    differ in length by at most one sample when `world_size` does not divide the split).
    `composition` (training only): what a batch holds besides images and labels
    (sdrun/batches.py).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        composition: Composition = SHUFFLED,
    ) -> None:
        if batch_size <= 0 or num_workers < 0 or not 0 <= rank < world_size:
            raise ValueError(
                f"bad batch_size={batch_size}, num_workers={num_workers} "
                f"or rank={rank}/{world_size}"
            )
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.train = train
        self.indexed = train and composition.indices
        self.partners = composition.partners if train else None
        self.dataset_size = len(dataset)  # type: ignore[arg-type]
        self.dtype = dtype
        self.channels_last = channels_last
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        if train:
            inner = DistributedSampler(
                dataset,  # type: ignore[arg-type]
                num_replicas=world_size,
                rank=rank,
                shuffle=True,
                seed=sampler_seed(seed),
                drop_last=True,
            )
        else:
            inner = StridedShard(len(dataset), rank, world_size)  # type: ignore[arg-type]
        shard = len(inner)
        if self.partners is None:
            self.sampler: EpochKeys | PartneredBatches = EpochKeys(inner)
        else:
            self.sampler = PartneredBatches(inner, batch_size, self._partner_keys)
            members = self.partners == SAME_CLASS_PARTNERS
            self._members = ClassMembers(folder_labels(dataset)) if members else None
            self._seed = seed
            self._table: tuple[Optional[int], list[int]] = (None, [])
        if train and shard < batch_size:
            raise ConfigError(
                f"dataset.batch_size={batch_size} is larger than the training set "
                f"({shard} images per rank); lower dataset.batch_size "
                "or raise dataset.limit_train"
            )
        self._batches = shard // batch_size if train else -(-shard // batch_size)
        self._samples = self._batches * batch_size if train else shard
        by_batch = self.partners is not None  # the sampler yields whole batches of keys
        self.loader = DataLoader(
            SeededSamples(dataset, seed, indexed=self.indexed),
            batch_size=1 if by_batch else batch_size,  # 1: DataLoader's "not set" for batch_sampler
            sampler=None if by_batch else self.sampler,
            batch_sampler=self.sampler if by_batch else None,
            num_workers=num_workers,
            # Pinned host memory is what lets the copy to the GPU run asynchronously.
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
            drop_last=train and not by_batch,
            # Its own generator: a DataLoader otherwise draws its workers' base seed from the
            # global RNG at every epoch start, which a mid-epoch resume does at another point
            # of the RNG stream (dropout and the like would then differ from the uninterrupted
            # run). Augmentation is seeded per sample and does not use it.
            generator=torch.Generator().manual_seed(seed),
        )

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self._batches

    @property
    def num_samples(self) -> int:
        """Images this rank yields per epoch (for train, after dropping the partial batch)."""
        return self._samples

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Yield batches (images in `dtype`, int64 labels) on the device for epoch `epoch`, from
        batch `start` on (a resumed epoch: the sampler starts past the earlier batches' images,
        so they are never decoded), and what the composition asks (indices, partners)."""
        if self.partners is None:
            self.sampler.set_epoch(epoch, start * self.batch_size)
        else:
            self.sampler.set_epoch(epoch, start)
        return self._batches_of()

    def _batches_of(self) -> Iterator[Batch]:
        try:
            for batch in self.loader:
                (x, y), index = (batch[0], batch[1]) if self.indexed else (batch, None)
                x = self._finish(x.to(self.device, non_blocking=True))
                y = y.to(self.device, torch.int64, non_blocking=True)
                if index is None:
                    yield Batch(x, y)
                    continue
                index = index.to(self.device, non_blocking=True)
                if self.partners is None:
                    yield Batch(x, y, index)
                else:  # the batch's own samples first, then their partners
                    b = self.batch_size
                    yield Batch(x[:b], y[:b], index[:b], Partners(x[b:], y[b:], index[b:]))
        except DataError as err:
            raise DataError(one_line(err)) from None

    def _partner_keys(self, batches: PartneredBatches, epoch: int, batch: int,
                      keys: list[tuple[int, int]]) -> list[tuple]:  # fmt: skip
        """The keys of a batch's partners: another image of each sample's class, augmented for
        that sample; or the previous batch's samples, augmented a second time."""
        if self._members is not None:
            if self._table[0] != epoch:  # one draw per epoch, for all of its batches
                table = same_class_partners(self._members, self._seed, epoch)
                self._table = (epoch, table.tolist())  # plain ints: read once per sample
            table = self._table[1]
            return [(epoch, table[i], f"partner-of-{i}") for _, i in keys]
        where = previous_position(epoch, batch, batches.batches)
        if where is None:
            return []
        return [(e, i, "second-view") for e, i in batches.batch_keys(*where)]

    def _finish(self, x: Tensor) -> Tensor:
        x = normalize(x, self.mean, self.std, self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


@dataclass
class FolderSplits:
    train: Dataset
    val: Dataset
    num_classes: int


def open_folders(
    root: Path,
    *,
    image_size: int,
    eval_resize: int,
    limit_train: Optional[int] = None,
    limit_test: Optional[int] = None,
) -> FolderSplits:
    """The train and val image folders under `root`, transformed and cut to the limits."""
    train = open_split(root, "train", train_transform(image_size))
    val = open_split(root, "val", eval_transform(image_size, eval_resize))
    check_same_classes(train, val)
    return FolderSplits(limit(train, limit_train), limit(val, limit_test), len(train.classes))
