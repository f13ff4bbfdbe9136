"""Average precision under the PASCAL VOC protocol (Everingham et al., IJCV 2010), as pure
functions on CPU tensors.

Written here because no well-kept library computes it exactly: torchmetrics and pycocotools
implement the COCO protocol (101 recall points, crowd regions instead of `difficult`). The
rules, per class, at IoU > 0.5:

- detections are taken in descending score order (ties keep their given order); each is
  matched to the ground-truth box of its image it overlaps most (difficult boxes included);
- overlap above the threshold with a *difficult* box: the detection is ignored (neither a
  true nor a false positive); with a box not yet matched: a true positive, and the box is
  used up; with a box already matched (a duplicate detection): a false positive;
- anything else is a false positive; positives are the non-difficult boxes only;
- AP is the VOC2007 11-point interpolated precision (mean over recall thresholds 0, 0.1,
  ..., 1 of the best precision at recall >= t, the thresholds being `np.arange(0, 1.1, 0.1)`
  as in the public evaluators, see `ELEVEN_POINTS`), or the VOC2010+ all-point area under the
  precision envelope; mAP is the mean over the classes that have a non-difficult box (a class
  without detections has AP 0).

Boxes are continuous (x1, y1, x2, y2) coordinates, areas without the devkit's "+1": the VOC
reader turns the 1-based inclusive pixel boxes of the XML into such coordinates (x1 - 1,
y1 - 1, x2, y2), for which plain IoU equals the devkit's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

IOU_THRESHOLD = 0.5
# The 11 recall thresholds exactly as py-faster-rcnn's voc_eval.py (`use_07_metric`) and the
# Detectron2 / mmdetection VOC evaluators copied from it compute them: np.arange(0, 1.1, 0.1)
# gives 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001, so a recall of exactly
# 0.3, 0.6 or 0.7 does not reach those thresholds there; k / 10 would count it and give a
# different AP than the numbers this one is compared with.
ELEVEN_POINTS: tuple[float, ...] = tuple(float(t) for t in np.arange(0.0, 1.1, 0.1))


@dataclass(frozen=True)
class Detections:
    """One image's detections: boxes (N, 4), scores (N,), labels (N,) (class indices)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


@dataclass(frozen=True)
class Truth:
    """One image's ground truth: boxes (M, 4), labels (M,), difficult (M,) bool."""

    boxes: Tensor
    labels: Tensor
    difficult: Tensor


@dataclass(frozen=True)
class VOCResult:
    ap_11point: list[float]  # per class; NaN for a class without a non-difficult box
    ap_allpoint: list[float]

    @property
    def map_11point(self) -> float:
        return nanmean(self.ap_11point)

    @property
    def map_allpoint(self) -> float:
        return nanmean(self.ap_allpoint)


def nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def per_class(names: Sequence[str], values: Sequence[float]) -> dict[str, Optional[float]]:
    """Per-class scores in percent, by name; None (JSON null) where a class has no score."""
    return {n: None if math.isnan(v) else 100.0 * v for n, v in zip(names, values)}


def match_class(
    detections: Sequence[Detections],
    truths: Sequence[Truth],
    label: int,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[list[bool], int]:
    """True/false positive flags of class `label`'s scored detections in descending score
    order (ignored ones left out), and the number of positives (non-difficult boxes)."""
    order: list[tuple[float, int, int, float]] = []  # score, image, best gt box, its IoU
    positives = 0
    for image, (det, truth) in enumerate(zip(detections, truths)):
        keep = det.labels == label
        scores, boxes = det.scores[keep].double(), det.boxes[keep].double()
        gt = truth.labels == label
        positives += int((~truth.difficult[gt]).sum())
        gt_boxes = truth.boxes[gt].double()
        if len(gt_boxes) and len(boxes):
            best_iou, best = box_iou(boxes, gt_boxes).max(dim=1)
        else:
            best_iou = torch.zeros(len(boxes), dtype=torch.float64)
            best = torch.full((len(boxes),), -1)
        gt_index = gt.nonzero().flatten()  # back to the image's box index, for `difficult`
        for s, i, j in zip(scores.tolist(), best_iou.tolist(), best.tolist()):
            order.append((s, image, int(gt_index[j]) if j >= 0 else -1, i))
    order.sort(key=lambda d: -d[0])  # stable: equal scores keep their given order
    used: set[tuple[int, int]] = set()
    flags: list[bool] = []
    for _, image, j, iou in order:
        if iou <= iou_threshold:  # the protocol's test is "overlap > threshold"
            flags.append(False)
        elif bool(truths[image].difficult[j]):
            continue  # matched a difficult box: ignored
        elif (image, j) in used:
            flags.append(False)  # a duplicate of a box already found
        else:
            used.add((image, j))
            flags.append(True)
    return flags, positives


def precision_recall(flags: Sequence[bool], positives: int) -> tuple[list[float], list[float]]:
    """Cumulative precision and recall after each detection of a ranked list."""
    precision, recall = [], []
    tp = 0
    for k, hit in enumerate(flags, start=1):
        tp += hit
        precision.append(tp / k)
        recall.append(tp / positives if positives else 0.0)
    return precision, recall


def ap_11point(precision: Sequence[float], recall: Sequence[float]) -> float:
    """VOC2007: mean over the `ELEVEN_POINTS` t of the best precision at recall >= t (0 if
    none)."""
    total = 0.0
    for t in ELEVEN_POINTS:
        total += max((p for p, r in zip(precision, recall) if r >= t), default=0.0)
    return total / 11


def ap_allpoint(precision: Sequence[float], recall: Sequence[float]) -> float:
    """VOC2010+: the area under the precision envelope (precision made non-increasing)."""
    mrec = [0.0, *recall, 1.0]
    mpre = [0.0, *precision, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1))


def voc_ap(
    detections: Sequence[Detections],
    truths: Sequence[Truth],
    num_classes: int,
    iou_threshold: float = IOU_THRESHOLD,
) -> VOCResult:
    """Per-class AP (11-point and all-point) over images given in the same order in both lists."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists for {len(truths)} images")
    ap11, apall = [], []
    for label in range(num_classes):
        flags, positives = match_class(detections, truths, label, iou_threshold)
        if positives == 0:
            ap11.append(math.nan)
            apall.append(math.nan)
            continue
        precision, recall = precision_recall(flags, positives)
        ap11.append(ap_11point(precision, recall))
        apall.append(ap_allpoint(precision, recall))
    return VOCResult(ap11, apall)
