"""The in-memory dataset every source (CIFAR, fake) produces and the loader consumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

Stats = tuple[float, float, float]


@dataclass
class ImageSet:
    """Whole train and test splits as uint8 (N, C, H, W) images and int64 (N,) labels.

    Images stay uint8 until the loader normalizes a batch, so CIFAR fits on a device in
    ~180 MB. `mean` and `std` are per channel, in [0, 1] pixel units.
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    class_names: list[str]
    mean: Stats
    std: Stats

    def __post_init__(self) -> None:
        # Readers validate user files themselves; this only catches programming mistakes.
        for split, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(
                    f"{split}_x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{split}_y must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}"
                )
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError("train and test images differ in shape")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return c, h, w

    def limit(self, n_train: Optional[int] = None, n_test: Optional[int] = None) -> ImageSet:
        """Keep the first `n_train` / `n_test` images (None keeps all); returns a new ImageSet.

        The first n, not a random subset, so a limit means the same images in every run.
        """
        tr = slice(None) if n_train is None else slice(0, n_train)
        te = slice(None) if n_test is None else slice(0, n_test)
        return dataclasses.replace(
            self,
            train_x=self.train_x[tr],
            train_y=self.train_y[tr],
            test_x=self.test_x[te],
            test_y=self.test_y[te],
        )
