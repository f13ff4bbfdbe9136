"""VOC AP, mIoU and the fine-tuning LR against cases worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sdrun.transfer.miou import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from sdrun.transfer.schedule import FinetunePlan
from sdrun.transfer.voc import parse_annotation
from sdrun.transfer.voc_ap import Detections, Truth, match_class, voc_ap


def dets(*rows: tuple[float, int, list[float]]) -> Detections:
    """(score, label, box) rows."""
    return Detections(
        torch.tensor([r[2] for r in rows], dtype=torch.float32).reshape(-1, 4),
        torch.tensor([r[0] for r in rows]),
        torch.tensor([r[1] for r in rows], dtype=torch.int64),
    )


def truth(*rows: tuple[int, list[float], bool]) -> Truth:
    """(label, box, difficult) rows."""
    return Truth(
        torch.tensor([r[1] for r in rows], dtype=torch.float32).reshape(-1, 4),
        torch.tensor([r[0] for r in rows], dtype=torch.int64),
        torch.tensor([r[2] for r in rows], dtype=torch.bool),
    )


# Image A: class 0 at [0,0,10,10] and a difficult class-0 box at [20,20,30,30]; a class-2
# detection but no class-2 box anywhere. Image B: class 0 at [0,0,10,10], class 1 at
# [30,30,40,40] (never detected).
IMAGE_A = truth((0, [0, 0, 10, 10], False), (0, [20, 20, 30, 30], True))
IMAGE_B = truth((0, [0, 0, 10, 10], False), (1, [30, 30, 40, 40], False))
DETS_A = dets(
    (0.9, 0, [0, 0, 10, 10]),  # TP
    (0.8, 0, [0, 0, 10, 10]),  # the same box again: a duplicate, FP
    (0.7, 0, [20, 20, 30, 30]),  # on the difficult box: ignored
    (0.4, 2, [0, 0, 5, 5]),  # class 2 has no box: no AP for it
)
DETS_B = dets(
    (0.6, 0, [50, 50, 60, 60]),  # nothing there: FP
    (0.5, 0, [0, 0, 10, 9]),  # IoU 0.9: TP
)


def test_difficult_boxes_are_ignored_and_duplicates_are_false_positives():
    flags, positives = match_class([DETS_A, DETS_B], [IMAGE_A, IMAGE_B], label=0)
    assert flags == [True, False, False, True]  # the difficult match is left out
    assert positives == 2  # the difficult box is not a positive


def test_voc_ap_by_hand():
    result = voc_ap([DETS_A, DETS_B], [IMAGE_A, IMAGE_B], num_classes=3)
    # class 0: precision 1, 1/2, 1/3, 1/2 at recall 1/2, 1/2, 1/2, 1.
    # 11-point: t = 0..0.5 -> 1 (6 points), t = 0.6..1 -> 1/2 (5 points): 8.5 / 11.
    assert result.ap_11point[0] == pytest.approx(8.5 / 11)
    # all-point: envelope 1 up to recall 1/2, then 1/2 up to 1: 0.5 + 0.25.
    assert result.ap_allpoint[0] == pytest.approx(0.75)
    assert result.ap_11point[1] == 0.0 and result.ap_allpoint[1] == 0.0  # no detections
    assert math.isnan(result.ap_11point[2])  # no box of class 2: not in the mean
    assert result.map_11point == pytest.approx(8.5 / 11 / 2)
    assert result.map_allpoint == pytest.approx(0.375)


@pytest.mark.parametrize("hits", [3, 6, 7])
def test_11_point_ap_thresholds_are_the_reference_evaluators(hits: int):
    """py-faster-rcnn's voc_eval.py (use_07_metric) takes t in np.arange(0, 1.1, 0.1): its
    0.30000000000000004, 0.6000000000000001 and 0.7000000000000001 are above a recall of
    exactly 0.3, 0.6 or 0.7, which k / 10 would count as reaching them."""
    boxes = [[20.0 * i, 0.0, 20.0 * i + 10, 10.0] for i in range(10)]
    gt = truth(*((0, box, False) for box in boxes))
    found = dets(*((0.9 - 0.01 * i, 0, boxes[i]) for i in range(hits)))  # precision 1
    result = voc_ap([found], [gt], num_classes=1)
    # recall hits / 10 exactly: the thresholds 0, 0.1, ... below it count, the one at it not
    # (t = 0.3 is 0.30000000000000004 there); all-point AP is the area, hits / 10
    assert result.ap_11point[0] == pytest.approx(hits / 11)
    assert result.ap_allpoint[0] == pytest.approx(hits / 10)


def test_overlap_must_exceed_one_half_and_the_best_overlap_decides():
    gt = truth((0, [0, 0, 10, 10], False), (0, [0, 0, 10, 12], True))
    half = dets((0.9, 0, [0, 0, 10, 20]))  # IoU 0.5 with the first box, 0.6 with the difficult
    flags, _ = match_class([half], [gt], label=0)
    assert flags == []  # its best match is the difficult box: ignored, not a TP
    exact_half = dets((0.9, 0, [0, 0, 10, 20]))
    flags, positives = match_class([exact_half], [truth((0, [0, 0, 10, 10], False))], label=0)
    assert flags == [False] and positives == 1  # IoU exactly 0.5 is a miss


def test_only_difficult_boxes_leave_a_class_out_of_the_mean():
    result = voc_ap([dets((0.9, 0, [0, 0, 10, 10]))], [truth((0, [0, 0, 10, 10], True))], 1)
    assert math.isnan(result.ap_11point[0]) and math.isnan(result.map_11point)


def test_xml_boxes_become_continuous_coordinates_with_the_devkit_area(tmp_path: Path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>"
    )
    ann = parse_annotation(str(xml))
    assert ann.boxes.tolist() == [[0.0, 0.0, 10.0, 20.0]]  # area 200 = (10-1+1) x (20-1+1)
    assert ann.labels.tolist() == [11] and ann.difficult.tolist() == [True]  # dog


def test_miou_by_hand_with_void_and_out_of_range_pixels():
    target = torch.tensor([[0, 0, 1, 255], [2, 2, 1, 7]])
    pred = torch.tensor([[0, 1, 1, 2], [2, 0, 1, 0]])
    cm = confusion_matrix(pred, target, num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # 255 and 7 left out
    assert iou_per_class(cm).tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx(0.5)
    assert pixel_accuracy(cm) == pytest.approx(4 / 6)
    # a class in neither truth nor prediction has no IoU and does not pull the mean down
    wide = confusion_matrix(pred, target, num_classes=4)
    assert math.isnan(iou_per_class(wide)[3]) and mean_iou(wide) == pytest.approx(0.5)
    # matrices add up over batches (and processes)
    halves = confusion_matrix(pred[:1], target[:1], 3) + confusion_matrix(pred[1:], target[1:], 3)
    assert torch.equal(halves, cm)


def test_finetune_lr_warmup_step_and_poly():
    step = FinetunePlan("step", epochs=4, steps_per_epoch=10, peak=0.1, warmup_iters=4,
                        milestones=(0.75,), gamma=0.1)  # fmt: skip
    assert [round(step.lr_at(i), 6) for i in range(5)] == [0.02, 0.04, 0.06, 0.08, 0.1]
    assert step.lr_at(29) == pytest.approx(0.1) and step.lr_at(30) == pytest.approx(0.01)
    poly = FinetunePlan("poly", epochs=2, steps_per_epoch=5, peak=0.01, power=0.9)
    assert poly.lr_at(0) == pytest.approx(0.01)
    assert poly.lr_at(5) == pytest.approx(0.01 * 0.5**0.9)
    assert poly.lr_at(9) > 0  # never zero on the last step
