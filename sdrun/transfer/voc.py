"""PASCAL VOC for fine-tuning: which files each task reads, and reading them.

- detection: VOC2007 trainval + VOC2012 trainval for training, VOC2007 test for evaluation
  (the "07+12" protocol of Faster R-CNN and its successors);
- segmentation: VOC2012 train (plus SBD's masks, "trainaug", when present) for training,
  VOC2012 val for evaluation.

torchvision's `VOCDetection` / `VOCSegmentation` (and `SBDataset`) list the files and, with
`dataset.download=true`, download and checksum the archives when a split is missing; with
`download=false` the standard `VOCdevkit/VOC2007`, `VOCdevkit/VOC2012` folders under
`dataset.root` are read as they are. Every listed file is checked to exist, and every
annotation parsed, before training starts: a missing or malformed one is one line naming it.
Images and masks are decoded when used; a broken one stops the run naming the file.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import SBDataset, VOCDetection, VOCSegmentation
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
DETECTION_TRAIN = (("2007", "trainval"), ("2012", "trainval"))
DETECTION_TEST = ("2007", "test")
SEGMENTATION_TRAIN = ("2012", "train")
SEGMENTATION_TEST = ("2012", "val")
SPLIT_FOLDERS = {VOCDetection: "Main", VOCSegmentation: "Segmentation"}  # under ImageSets/
SBD_FOLDER = "SBD"  # torchvision SBDataset's layout: img/, cls/, train_noval.txt
SBD_SPLIT = "train_noval"  # SBD train without any VOC2012 val image


@dataclass(frozen=True)
class Annotation:
    """One image's objects: boxes (M, 4) continuous x1 y1 x2 y2, labels (M,) 0-based class
    indices, difficult (M,) bool."""

    boxes: Tensor
    labels: Tensor
    difficult: Tensor


def read_image(path: str) -> Tensor:
    """uint8 (3, H, W) RGB, or a DataError naming the file (sdrun's image-folder reader)."""
    return pil_to_tensor(read_rgb(path))


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
    except (ET.ParseError, ValueError) as err:
        raise DataError(
            f"malformed annotation {path} ({err}); replace it from the VOC archive"
        ) from None
    return Annotation(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(difficult, dtype=torch.bool),
    )


def read_mask(path: str, size: tuple[int, int]) -> Tensor:
    """A VOC class mask (palette or grey PNG) as uint8 (H, W); labels past the classes -> 255."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise ValueError(f"mode {img.mode}, not a palette or grey PNG")
            mask = np.array(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as err:
        reason = " ".join(str(err).split())[:200]
        raise DataError(
            f"cannot read mask {path}: {reason}; replace it from the VOC archive"
        ) from None
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
    """(uint8 image, target) pairs. Training targets hold `boxes` and `labels` (1-based,
    0 is the background) of the non-difficult objects; evaluation targets hold the whole
    annotation (`difficult` flags too) and the image's `index` in the split."""

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
        target = {"boxes": ann.boxes[keep], "labels": ann.labels[keep] + 1}
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


def _voc_split(cls: type, root: Path, year: str, split: str, download: bool, is_main: bool):
    """torchvision's listing of one VOC split; downloads it (rank 0) only if it is missing."""
    folder = root / "VOCdevkit" / f"VOC{year}"
    split_file = folder / "ImageSets" / SPLIT_FOLDERS[cls] / f"{split}.txt"
    if download and is_main and not split_file.is_file():
        log.info("downloading VOC%s %s into %s (torchvision, checksummed)", year, split, root)
        try:
            cls(str(root), year=year, image_set=split, download=True)
        except Exception as err:  # network, disk and checksum errors all mean the same here
            raise DataError(
                f"could not download VOC{year} {split} into {root} ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:150]}); download it by hand and set "
                "dataset.download=false"
            ) from None
    _barrier()
    if not folder.is_dir():
        raise DataError(
            f"{folder} not found: set dataset.root to the folder holding VOCdevkit/, or "
            "dataset.download=true to fetch it"
        )
    if not split_file.is_file():
        raise DataError(
            f"{split_file} not found: {folder} is not a complete VOC{year} tree; restore it "
            "from the VOC archive (or remove it and set dataset.download=true)"
        )
    return cls(str(root), year=year, image_set=split, download=False)


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _check_files(paths: list[str], what: str) -> None:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(
            f"{missing[0]} not found{more}: the {what} split lists it; restore the file from "
            "the VOC archive"
        )


def _first(items: list, n: Optional[int]) -> list:
    """The first n (a limit means the same images in every run), or all."""
    return items if n is None else items[:n]


@dataclass
class Splits:
    train: Dataset
    test: Dataset
    train_sets: str  # what the training split is made of, e.g. "voc2007_trainval+voc2012_trainval"


def open_detection(root: Path, *, download: bool, is_main: bool = True,
                   limit_train: Optional[int] = None, limit_test: Optional[int] = None,
                   train_transform: Optional[Callable] = None) -> Splits:  # fmt: skip
    images, annotations = [], []
    for year, split in DETECTION_TRAIN:
        found = _voc_split(VOCDetection, root, year, split, download, is_main)
        images += found.images
        annotations += found.annotations
    images, annotations = _first(images, limit_train), _first(annotations, limit_train)
    test = _voc_split(VOCDetection, root, *DETECTION_TEST, download, is_main)
    test_images = _first(test.images, limit_test)
    test_annotations = _first(test.annotations, limit_test)
    for paths, what in ((images, "training"), (annotations, "training"),
                        (test_images, "test"), (test_annotations, "test")):  # fmt: skip
        _check_files(paths, what)
    train = DetectionSet(images, [parse_annotation(p) for p in annotations], True, train_transform)
    test_set = DetectionSet(test_images, [parse_annotation(p) for p in test_annotations], False)
    names = "+".join(f"voc{y}_{s}" for y, s in DETECTION_TRAIN)
    return Splits(train, test_set, names)


def open_segmentation(root: Path, *, download: bool, sbd: Optional[bool], is_main: bool = True,
                      limit_train: Optional[int] = None, limit_test: Optional[int] = None,
                      train_transform: Optional[Callable] = None) -> Splits:  # fmt: skip
    train = _voc_split(VOCSegmentation, root, *SEGMENTATION_TRAIN, download, is_main)
    images, masks = list(train.images), list(train.masks)
    names = f"voc{SEGMENTATION_TRAIN[0]}_{SEGMENTATION_TRAIN[1]}"
    extra = _sbd(root, sbd, download, is_main)
    if extra is not None:
        known = {Path(p).stem for p in images}
        pairs = [(i, m) for i, m in zip(extra.images, extra.masks) if Path(i).stem not in known]
        images += [i for i, _ in pairs]
        masks += [m for _, m in pairs]
        names += f"+sbd_{SBD_SPLIT}"
    images, masks = _first(images, limit_train), _first(masks, limit_train)
    test = _voc_split(VOCSegmentation, root, *SEGMENTATION_TEST, download, is_main)
    test_images, test_masks = _first(test.images, limit_test), _first(test.masks, limit_test)
    for paths, what in ((images, "training"), (masks, "training"),
                        (test_images, "test"), (test_masks, "test")):  # fmt: skip
        _check_files(paths, what)
    return Splits(
        SegmentationSet(images, masks, train_transform),
        SegmentationSet(test_images, test_masks),
        names,
    )


def _sbd(root: Path, wanted: Optional[bool], download: bool, is_main: bool) -> Optional[SBDataset]:
    """SBD's training masks: used when asked (dataset.sbd=true) or, with null, when present."""
    folder = root / SBD_FOLDER
    present = (folder / f"{SBD_SPLIT}.txt").is_file()
    if wanted is False or (wanted is None and not present):
        if wanted is None:
            log.info("no %s: training on VOC2012 train only (dataset.sbd=null)", folder)
        return None
    try:
        import scipy  # noqa: F401  (SBD's masks are .mat files)
    except ImportError:
        raise DataError(
            f"{folder} holds SBD, whose masks are .mat files: pip install scipy, or set "
            "dataset.sbd=false"
        ) from None
    if not present and download and is_main:
        try:
            SBDataset(str(folder), image_set=SBD_SPLIT, mode="segmentation", download=True)
        except Exception as err:  # network, disk and checksum errors
            raise DataError(
                f"could not download SBD into {folder} ({type(err).__name__}); get "
                f"benchmark.tgz and {SBD_SPLIT}.txt by hand (torchvision SBDataset layout) or "
                "set dataset.sbd=false"
            ) from None
    _barrier()
    if not (folder / f"{SBD_SPLIT}.txt").is_file():
        raise DataError(
            f"dataset.sbd=true but {folder / (SBD_SPLIT + '.txt')} not found; put SBD there "
            "(torchvision SBDataset layout: img/, cls/, train_noval.txt) or set dataset.sbd=null"
        )
    return SBDataset(str(folder), image_set=SBD_SPLIT, mode="segmentation", download=False)
