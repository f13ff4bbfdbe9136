"""Semantic-segmentation scores from a confusion matrix, as pure functions.

Pixels whose label is `IGNORE` (255: VOC's object borders and padding) or any value >=
`num_classes` are left out. The matrix is a plain sum over pixels, so matrices of different
images or processes add up (under torchrun each process sums its shard and they are
all-reduced). IoU of class c = TP / (TP + FP + FN); mIoU is the mean over classes that occur
in the ground truth or the predictions (a class absent from both has no IoU, not IoU 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE = 255


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class."""
    target = target.long()
    valid = (target >= 0) & (target < num_classes)
    index = target[valid] * num_classes + pred[valid].long()
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(matrix: Tensor) -> Tensor:
    """float64 IoU per class; NaN for a class with no pixel in truth or prediction."""
    matrix = matrix.double()
    tp = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(matrix: Tensor) -> float:
    return float(iou_per_class(matrix).nanmean())


def pixel_accuracy(matrix: Tensor) -> float:
    total = matrix.sum()
    return float(matrix.diag().sum().double() / total) if total > 0 else float("nan")
