"""Random images and labels: smoke runs and benchmarks with nothing to download."""

from __future__ import annotations

import torch

from sdrun.data.base import ImageSet

# The normalisation its runs train with; a backbone pre-trained on it is fine-tuned with the
# same (sdrun.transfer.backbone).
FAKE_MEAN = (0.5, 0.5, 0.5)
FAKE_STD = (0.25, 0.25, 0.25)


def make_fake(
    num_train: int, num_test: int, num_classes: int, image_size: int, seed: int
) -> ImageSet:
    """Uniform uint8 images with uniform labels, the same for the same arguments."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, 256, (n, 3, image_size, image_size), generator=g, dtype=torch.uint8)
        y = torch.randint(0, num_classes, (n,), generator=g, dtype=torch.int64)
        return x, y

    train_x, train_y = split(num_train)
    test_x, test_y = split(num_test)
    return ImageSet(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
        class_names=[f"class_{i}" for i in range(num_classes)],
        mean=FAKE_MEAN,
        std=FAKE_STD,
    )
