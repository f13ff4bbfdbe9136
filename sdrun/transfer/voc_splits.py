"""PASCAL VOC splits for fine-tuning: which files each task reads.

- detection: VOC2007 trainval + VOC2012 trainval for training, VOC2007 test for evaluation
  (the "07+12" protocol of Faster R-CNN and its successors); `dataset.years=[2007]` trains on
  VOC2007 trainval alone (the "07" protocol), for those without VOC2012;
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch.utils.data import Dataset
from torchvision.datasets import SBDataset, VOCDetection, VOCSegmentation

from sdrun.errors import DataError
from sdrun.runfolder.distributed import first_on_each_node
from sdrun.transfer.config import DETECTION_YEARS
from sdrun.transfer.voc import Annotation, DetectionSet, SegmentationSet, parse_annotation

log = logging.getLogger(__name__)

DETECTION_TRAIN_SPLIT = "trainval"
DETECTION_TEST = ("2007", "test")
SEGMENTATION_TRAIN = ("2012", "train")
SEGMENTATION_TEST = ("2012", "val")
SPLIT_FOLDERS = {VOCDetection: "Main", VOCSegmentation: "Segmentation"}  # under ImageSets/
SBD_FOLDER = "SBD"  # torchvision SBDataset's layout: img/, cls/, train_noval.txt
SBD_SPLIT = "train_noval"  # SBD train without any VOC2012 val image


def _voc_split(cls: type, root: Path, year: str, split: str, download: bool):
    """torchvision's listing of one VOC split; downloads it (one process per node) only if it
    is missing."""
    folder = root / "VOCdevkit" / f"VOC{year}"
    split_file = folder / "ImageSets" / SPLIT_FOLDERS[cls] / f"{split}.txt"

    def fetch() -> None:
        if not download or split_file.is_file():
            return
        log.info("downloading VOC%s %s into %s (torchvision, checksummed)", year, split, root)
        try:
            cls(str(root), year=year, image_set=split, download=True)
        except Exception as err:  # network, disk and checksum errors all mean the same here
            raise DataError(
                f"could not download VOC{year} {split} into {root} ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:150]}); download it by hand and set "
                "dataset.download=false"
            ) from None

    first_on_each_node(fetch)  # one download per node, the others wait
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


def open_detection(root: Path, *, download: bool,
                   limit_train: Optional[int] = None, limit_test: Optional[int] = None,
                   train_transform: Optional[Callable] = None,
                   years: Sequence[int] = DETECTION_YEARS) -> Splits:  # fmt: skip
    images, annotations = [], []
    train = [(str(year), DETECTION_TRAIN_SPLIT) for year in years]
    for year, split in train:
        found = _voc_split(VOCDetection, root, year, split, download)
        images += found.images
        annotations += found.annotations
    images, annotations = _first(images, limit_train), _first(annotations, limit_train)
    test = _voc_split(VOCDetection, root, *DETECTION_TEST, download)
    test_images = _first(test.images, limit_test)
    test_annotations = _first(test.annotations, limit_test)
    for paths, what in ((images, "training"), (annotations, "training"),
                        (test_images, "test"), (test_annotations, "test")):  # fmt: skip
        _check_files(paths, what)
    parsed = [parse_annotation(p) for p in annotations]
    test_parsed = [parse_annotation(p) for p in test_annotations]
    _warn_outside(annotations, parsed, "training", "clipped to the image for training")
    _warn_outside(test_annotations, test_parsed, "test",
                  "scored as the file gives them, as the VOC devkit does")  # fmt: skip
    names = "+".join(f"voc{y}_{s}" for y, s in train)
    return Splits(
        DetectionSet(images, parsed, True, train_transform),
        DetectionSet(test_images, test_parsed, False),
        names,
    )


def _warn_outside(paths: list[str], parsed: list[Annotation], what: str, done: str) -> None:
    """One warning for the annotations whose boxes reach past their image's <size>."""
    outside = [p for p, a in zip(paths, parsed) if a.outside]
    if outside:
        more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
        log.warning("%s has a box outside its image's <size>%s in the %s split: %s", outside[0],
                    more, what, done)  # fmt: skip


def open_segmentation(root: Path, *, download: bool, sbd: Optional[bool],
                      limit_train: Optional[int] = None, limit_test: Optional[int] = None,
                      train_transform: Optional[Callable] = None) -> Splits:  # fmt: skip
    train = _voc_split(VOCSegmentation, root, *SEGMENTATION_TRAIN, download)
    images, masks = list(train.images), list(train.masks)
    names = f"voc{SEGMENTATION_TRAIN[0]}_{SEGMENTATION_TRAIN[1]}"
    extra = _sbd(root, sbd, download)
    if extra is not None:
        known = {Path(p).stem for p in images}
        pairs = [(i, m) for i, m in zip(extra.images, extra.masks) if Path(i).stem not in known]
        images += [i for i, _ in pairs]
        masks += [m for _, m in pairs]
        names += f"+sbd_{SBD_SPLIT}"
    images, masks = _first(images, limit_train), _first(masks, limit_train)
    test = _voc_split(VOCSegmentation, root, *SEGMENTATION_TEST, download)
    test_images, test_masks = _first(test.images, limit_test), _first(test.masks, limit_test)
    for paths, what in ((images, "training"), (masks, "training"),
                        (test_images, "test"), (test_masks, "test")):  # fmt: skip
        _check_files(paths, what)
    return Splits(
        SegmentationSet(images, masks, train_transform),
        SegmentationSet(test_images, test_masks),
        names,
    )


def _sbd(root: Path, wanted: Optional[bool], download: bool) -> Optional[SBDataset]:
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

    def fetch() -> None:
        if present or not download:
            return
        try:
            SBDataset(str(folder), image_set=SBD_SPLIT, mode="segmentation", download=True)
        except Exception as err:  # network, disk and checksum errors
            raise DataError(
                f"could not download SBD into {folder} ({type(err).__name__}); get "
                f"benchmark.tgz and {SBD_SPLIT}.txt by hand (torchvision SBDataset layout) or "
                "set dataset.sbd=false"
            ) from None

    first_on_each_node(fetch)  # one download per node, the others wait
    if not (folder / f"{SBD_SPLIT}.txt").is_file():
        raise DataError(
            f"dataset.sbd=true but {folder / (SBD_SPLIT + '.txt')} not found; put SBD there "
            "(torchvision SBDataset layout: img/, cls/, train_noval.txt) or set dataset.sbd=null"
        )
    found = SBDataset(str(folder), image_set=SBD_SPLIT, mode="segmentation", download=False)
    log.info("adding SBD's %s masks from %s to VOC2012 train", SBD_SPLIT, folder)
    return found
