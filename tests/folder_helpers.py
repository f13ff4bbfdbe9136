"""Test helpers: a tiny image-folder dataset (ILSVRC2012 layout) whose images can be told
apart after crops and flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdrun.data.folder import IMAGENET_MEAN, IMAGENET_STD

RED_STEP = 5  # image number i is red = RED_STEP * i everywhere


def write_image_folder(
    root: Path,
    num_classes: int = 3,
    n_train: int = 8,
    n_val: int = 4,
    size: tuple[int, int] = (40, 48),
) -> Path:
    """Write root/train/class_k/*.png and root/val/class_k/*.jpg (n per class); returns root.

    Image number i (numbered over train, then val) is red = 5 * i everywhere, so it can be
    recognised in any crop; green ramps left to right, so crops and flips change pixels; blue
    marks the class. Train images are PNG (lossless, to read the number back), val JPEG.
    """
    width, height = size
    ramp = np.linspace(0, 250, width, dtype=np.float64).round().astype(np.uint8)
    number = 0
    for split, n, ext in (("train", n_train, "png"), ("val", n_val, "jpg")):
        for k in range(num_classes):
            folder = root / split / f"class_{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                pixels = np.empty((height, width, 3), dtype=np.uint8)
                pixels[..., 0] = RED_STEP * number
                pixels[..., 1] = ramp
                pixels[..., 2] = 60 * k
                Image.fromarray(pixels).save(folder / f"img_{j:02d}.{ext}", quality=95)
                number += 1
    return root


def image_numbers(x: torch.Tensor) -> list[int]:
    """The image numbers of a normalized (B, 3, H, W) batch written by write_image_folder."""
    red = x[:, 0].float() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return (red.mean(dim=(1, 2)) * 255 / RED_STEP).round().long().tolist()
