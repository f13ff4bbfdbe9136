"""Datasets as whole in-memory splits, and the device-resident loader that batches them."""

from __future__ import annotations

from pathlib import Path

from sdrun.config import DATASETS, DatasetConfig
from sdrun.data.base import ImageSet
from sdrun.data.cifar import load_cifar, write_cifar
from sdrun.data.fake import make_fake
from sdrun.data.loader import DeviceLoader, hflip, normalize, random_crop
from sdrun.errors import ConfigError

__all__ = [
    "DeviceLoader",
    "ImageSet",
    "build_data",
    "hflip",
    "load_cifar",
    "make_fake",
    "normalize",
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
