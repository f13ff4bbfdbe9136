"""Augmentation and batching for the two tasks, with torchvision's v2 transforms.

Detection: a horizontal flip (boxes follow); resizing is the detector's own
(GeneralizedRCNNTransform: shorter side `image_size`, longer side at most `max_size`).
Segmentation (DeepLab): scale the image by a random factor in `scale_range` (mask by nearest
neighbour), pad to the crop size (image 0, mask 255: ignored), take a random square crop of
`image_size`, flip. Training crops are stacked (padded to the largest, mask 255); evaluation
images stay whole and unpadded, a list of them per batch (`collate_whole`): the segmenter sees
each alone, as with batch 1 (torchvision's reference), so the score depends neither on the
evaluation batch nor on the process count.

Randomness comes from torch's RNG, which the loader seeds per sample from (seed, epoch,
index) (`sdrun.data.folder.SeededSamples`): a resumed run replays the same crops.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from sdrun.transfer.miou import IGNORE


class DetectionTrain:
    def __init__(self) -> None:
        self.flip = v2.RandomHorizontalFlip()

    def __call__(self, image: Tensor, target: dict[str, Tensor]) -> tuple[Tensor, dict]:
        h, w = image.shape[-2:]
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
        image, out = self.flip(tv_tensors.Image(image), {**target, "boxes": boxes})
        return image.as_subclass(Tensor), {**out, "boxes": out["boxes"].as_subclass(Tensor)}


class SegmentationTrain:
    def __init__(self, crop: int, scale_range: tuple[float, float]) -> None:
        self.low, self.high = scale_range
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}
        self.crop = v2.RandomCrop(crop, pad_if_needed=True, fill=fill)
        self.flip = v2.RandomHorizontalFlip()

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
        scale = self.low + (self.high - self.low) * float(torch.rand(()))
        h, w = image.shape[-2:]
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        image, mask = TF.resize(image, size, antialias=True), TF.resize(mask, size)  # mask: nearest
        image, mask = self.flip(*self.crop(image, mask))
        return image.as_subclass(Tensor), mask.as_subclass(Tensor)


def collate_detection(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[list, list]:
    """Images of different sizes stay a list (the detector resizes and batches them)."""
    return [image for image, _ in batch], [target for _, target in batch]


def collate_segmentation(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Stack, padding every image to the largest of the batch (image 0, mask IGNORE)."""
    h = max(image.shape[-2] for image, _ in batch)
    w = max(image.shape[-1] for image, _ in batch)
    images = [F.pad(i, (0, w - i.shape[-1], 0, h - i.shape[-2])) for i, _ in batch]
    masks = [F.pad(m, (0, w - m.shape[-1], 0, h - m.shape[-2]), value=IGNORE) for _, m in batch]
    return torch.stack(images), torch.stack(masks)


def collate_whole(batch: list[tuple[Tensor, Tensor]]) -> tuple[list[Tensor], list[Tensor]]:
    """Evaluation images and masks as lists, never padded: padding an image to a batch's
    largest changes what ASPP's image pooling and the border convolutions see, and with it
    the prediction (see segmentation.evaluate)."""
    return [image for image, _ in batch], [mask for _, mask in batch]
