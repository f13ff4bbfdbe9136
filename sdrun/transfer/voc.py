"""Reading PASCAL VOC: the 20 classes, annotations (XML boxes with `difficult` flags), images
and class masks (palette PNGs with 255 borders; SBD's .mat files), and the detection and
segmentation datasets made of them. Which files make up each split: `voc_splits`.
"""

from __future__ import annotations

import logging
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from sdrun.data.folder import read_rgb
from sdrun.errors import DataError
from sdrun.transfer.miou import IGNORE

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
SEG_CLASSES = 21  # background + the 20 object classes
# PIL allocates what a file's header declares: a PNG of a few KB can declare 12000 x 12000
# pixels (432 MB as RGB, 1.7 GB as a float tensor, per image and worker), and past PIL's own
# limit (~179M pixels) it raises DecompressionBombError. VOC's images and masks are at most
# 500 x 500, so one that declares more than this per side is refused from its header, before
# it is decoded.
MAX_SIDE = 4096


@dataclass(frozen=True)
class Annotation:
    """One image's objects: boxes (M, 4) continuous x1 y1 x2 y2, labels (M,) 0-based class
    indices, difficult (M,) bool; `size` (width, height) as the XML's <size> gives it (None
    when it gives none)."""

    boxes: Tensor
    labels: Tensor
    difficult: Tensor
    size: Optional[tuple[int, int]] = None

    @property
    def outside(self) -> bool:
        """Whether a box reaches past the image its <size> describes (a few VOC files do)."""
        if self.size is None or not len(self.boxes):
            return False
        w, h = self.size
        b = self.boxes
        return bool((b[:, :2] < 0).any() or (b[:, 2] > w).any() or (b[:, 3] > h).any())


def clip_to_image(boxes: Tensor, labels: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Boxes clipped to the image, and those left with no area dropped: a box past the border
    would otherwise become negative coordinates when the image is flipped, and torchvision's
    detector refuses a box without area."""
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep]


def read_image(path: str) -> Tensor:
    """uint8 (3, H, W) RGB, or a DataError naming the file (sdrun's image-folder reader); one
    larger than `MAX_SIDE` per side is refused before it is decoded."""
    try:
        with _opened(path) as img:
            _check_size(img)
    except (OSError, ValueError, SyntaxError) as err:
        raise _unreadable("image", path, err) from None
    return pil_to_tensor(read_rgb(path))


@contextmanager
def _opened(path: str) -> Iterator[Image.Image]:
    """`path` opened by PIL, which reads only its header; PIL's own size guard (a warning, or
    DecompressionBombError past twice its limit) becomes the ValueError `_check_size` raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise ValueError(f"it declares more than {MAX_SIDE} pixels per side") from None
    with img:
        yield img


def _check_size(img: Image.Image) -> None:
    width, height = img.size
    if max(width, height) > MAX_SIDE:
        raise ValueError(
            f"it declares {width}x{height}, more than {MAX_SIDE} pixels per side (VOC's are "
            "at most 500x500)"
        )


def _unreadable(what: str, path: str, err: Exception) -> DataError:
    reason = " ".join(str(err).split())[:200]
    return DataError(f"cannot read {what} {path}: {reason}; replace it from the VOC archive")


def parse_annotation(path: str) -> Annotation:
    """A VOC XML file's objects. The XML's boxes are 1-based inclusive pixel indices; they
    become continuous coordinates (x1 - 1, y1 - 1, x2, y2), so plain IoU is the devkit's."""
    try:
        root = ET.parse(path).getroot()
        boxes, labels, difficult = [], [], []
        for obj in root.iter("object"):
            name = obj.findtext("name", "").strip()
            if name not in VOC_CLASSES:
                raise ValueError(f"unknown class {name!r}")
            box = obj.find("bndbox")
            if box is None:
                raise ValueError("an object without <bndbox>")
            x1, y1, x2, y2 = (float(box.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))
            if not (x2 >= x1 and y2 >= y1):
                raise ValueError(f"an empty box {x1, y1, x2, y2}")
            boxes.append([x1 - 1, y1 - 1, x2, y2])
            labels.append(VOC_CLASSES.index(name))
            difficult.append(obj.findtext("difficult", "0").strip() == "1")
        size = _size(root)
    except (ET.ParseError, ValueError) as err:
        raise DataError(
            f"malformed annotation {path} ({err}); replace it from the VOC archive"
        ) from None
    return Annotation(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(difficult, dtype=torch.bool),
        size,
    )


def _size(root: ET.Element) -> Optional[tuple[int, int]]:
    """The XML's <size> as (width, height); None when absent or not positive (boxes are then
    checked against the decoded image only)."""
    try:
        w, h = (int(float(root.findtext(f"size/{k}", ""))) for k in ("width", "height"))
    except ValueError:
        return None
    return (w, h) if w > 0 and h > 0 else None


def read_mask(path: str, size: tuple[int, int]) -> Tensor:
    """A VOC class mask (palette or grey PNG) as uint8 (H, W); labels past the classes -> 255."""
    try:
        with _opened(path) as img:
            _check_size(img)  # before decoding
            if img.mode not in ("P", "L"):
                raise ValueError(f"mode {img.mode}, not a palette or grey PNG")
            mask = np.array(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as err:
        raise _unreadable("mask", path, err) from None
    if mask.shape != size:
        raise DataError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{size[1]}x{size[0]}; replace it from the VOC archive"
        )
    mask[mask >= SEG_CLASSES] = IGNORE
    return torch.from_numpy(mask)


def read_sbd_mask(path: str, size: tuple[int, int]) -> Tensor:
    """An SBD class mask (.mat, read by torchvision's SBDataset through scipy)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(
            "SBD masks are .mat files: pip install scipy, or set dataset.sbd=false"
        ) from None
    try:
        mask = np.asarray(loadmat(path)["GTcls"][0]["Segmentation"][0], dtype=np.uint8)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise DataError(f"cannot read SBD mask {path} ({type(err).__name__}); replace it") from None
    if mask.shape != size:
        raise DataError(f"SBD mask {path} does not match its image's size; replace it")
    mask = mask.copy()
    mask[mask >= SEG_CLASSES] = IGNORE
    return torch.from_numpy(mask)


class DetectionSet(Dataset):
    """(uint8 image, target) pairs. Training targets hold `boxes` (clipped to the image) and
    `labels` (1-based, 0 is the background) of the non-difficult objects; evaluation targets
    hold the whole annotation as the file gives it, as the VOC devkit scores it (`difficult`
    flags too), and the image's `index` in the split."""

    def __init__(self, images: list[str], annotations: list[Annotation], train: bool,
                 transform: Optional[Callable] = None) -> None:  # fmt: skip
        self.images, self.annotations = images, annotations
        self.train, self.transform = train, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image = read_image(self.images[index])
        ann = self.annotations[index]
        if not self.train:
            return image, {"boxes": ann.boxes, "labels": ann.labels,
                           "difficult": ann.difficult, "index": index}  # fmt: skip
        keep = ~ann.difficult  # difficult objects are for evaluation only
        h, w = image.shape[-2:]  # the decoded image's own size, whatever <size> says
        boxes, labels = clip_to_image(ann.boxes[keep], ann.labels[keep] + 1, w, h)
        target = {"boxes": boxes, "labels": labels}
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


class SegmentationSet(Dataset):
    """(uint8 image, uint8 mask) pairs, transformed together (crop, flip, scale)."""

    def __init__(self, images: list[str], masks: list[str],
                 transform: Optional[Callable] = None) -> None:  # fmt: skip
        self.images, self.masks, self.transform = images, masks, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = read_image(self.images[index])
        size = (image.shape[1], image.shape[2])
        path = self.masks[index]
        mask = read_sbd_mask(path, size) if path.endswith(".mat") else read_mask(path, size)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask
