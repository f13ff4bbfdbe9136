"""The validation split (`dataset.val_split=N`): N training images held out, the same ones in
every run, so that choices made on them (a hyperparameter search, the epoch to keep) never
look at the test set.

The N images follow `class_balanced_order` under a fixed seed (not the run's): as close to
N / classes per class as the data allows, never a class's last training image, and identical
across the seeds and settings of a comparison (`held_out`). The same function splits
in-memory sets (CIFAR, fake) and image folders.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from sdrun.data.base import ImageSet
from sdrun.data.folder import class_balanced_order
from sdrun.errors import ConfigError

# Fixed, so that every run of a sweep or a seed comparison holds out the same images.
VAL_SEED = 0


def holdout_indices(labels: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(train, val) indices into `labels`, both in ascending order (the loaders shuffle training
    themselves): val is `held_out`, train the rest."""
    val = held_out(labels, n)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val.sort().values


def held_out(labels: Tensor, n: int) -> Tensor:
    """The `n` held-out indices: `class_balanced_order` without each class's last image (every
    class keeps at least one training image), taken round by round; the round that only partly
    fits goes to classes in a fixed random order, not to the lowest class ids. With classes of
    equal size and `n` a multiple of their number, this is the first `n` of the order as before.
    Raises ConfigError when `n` would take a class's last training image."""
    order = class_balanced_order(labels.tolist(), seed=VAL_SEED)
    ordered = labels[order]
    counts = torch.bincount(labels)
    by_class = torch.sort(ordered, stable=True).indices  # the order's positions, class by class
    rank = torch.empty_like(ordered)
    rank[by_class] = (
        torch.arange(len(ordered)) - (torch.cumsum(counts, 0) - counts)[ordered[by_class]]
    )
    spare = rank < counts[ordered] - 1  # a class's last image in the order stays in training
    order, ordered, rank = order[spare], ordered[spare], rank[spare]
    if n > len(order):
        raise ConfigError(
            f"dataset.val_split={n} would hold out the last training image of some classes: "
            f"at most {len(order)} can be held out while every class keeps one; lower "
            f"dataset.val_split to {len(order)} or train on more images (dataset.limit_train)"
        )
    if n == 0:
        return order[:0]
    last = rank[n - 1]  # the round that may fit only partly
    full = order[rank < last]
    pool, pool_classes = order[rank == last], ordered[rank == last]
    g = torch.Generator().manual_seed(VAL_SEED)
    priority = torch.randperm(len(counts), generator=g)[pool_classes]
    chosen = pool[torch.argsort(priority)][: n - len(full)]
    return torch.cat([full, chosen])


def check_holdout(n: int, num_train: int, batch_size: int, world_size: int = 1) -> None:
    """A validation split must leave at least one (global) batch to train on."""
    if n >= num_train:
        raise ConfigError(
            f"dataset.val_split={n} holds out the whole training set ({num_train} images); "
            f"set dataset.val_split below {num_train}"
        )
    left = num_train - n
    if left // world_size < batch_size // world_size:
        raise ConfigError(
            f"dataset.val_split={n} leaves {left} training images, fewer than one batch "
            f"(dataset.batch_size={batch_size}); lower dataset.val_split or dataset.batch_size"
        )


def split_image_set(data: ImageSet, n: int) -> tuple[ImageSet, Tensor, Tensor]:
    """(`data` without the held-out images, their images, their labels)."""
    train, val = holdout_indices(data.train_y, n)
    rest = dataclasses.replace(data, train_x=data.train_x[train], train_y=data.train_y[train])
    return rest, data.train_x[val], data.train_y[val]


def _base_and_indices(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """An image folder, or a Subset of one (dataset.limit_train), as (folder, indices)."""
    if isinstance(dataset, Subset):
        return dataset.dataset, list(dataset.indices)
    return dataset, list(range(len(dataset)))  # type: ignore[arg-type]


def split_folder(train: Dataset, eval_like: Dataset, n: int) -> tuple[Dataset, Dataset]:
    """(training images left, held-out images) of an image-folder training split.

    The held-out images are read with the eval transform of `eval_like` (the val split): a
    shallow copy of the folder with that transform, so the folder is not listed twice.
    """
    base, indices = _base_and_indices(train)
    labels = torch.as_tensor([base.targets[i] for i in indices])  # type: ignore[attr-defined]
    keep, held = holdout_indices(labels, n)
    evaluated = copy.copy(base)
    evaluated.transform = _base_and_indices(eval_like)[0].transform  # type: ignore[attr-defined]
    return (
        Subset(base, [indices[i] for i in keep.tolist()]),
        Subset(evaluated, [indices[i] for i in held.tolist()]),
    )
