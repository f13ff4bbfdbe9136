"""Evaluating a run's models: the student every epoch (test set, and the validation split when
there is one), any model over a split gathered from every process, and the snapshot ensemble."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from torch import Tensor, nn

from sdrun.data import Batches
from sdrun.runfolder import distributed
from sdrun.training.engine import EpochResult, predict
from sdrun.training.ensemble import cycle_snapshots, snapshot_ensemble
from sdrun.training.frozen_teacher import TeacherState
from sdrun.training.metrics import accuracy, agreement, mean_kl
from sdrun.training.parts import Parts


def predict_split(parts: Parts, model: nn.Module, loader: Batches) -> tuple[Tensor, Tensor]:
    """Logits and labels of a whole split: each rank predicts its shard, then they share."""
    logits, labels = predict(model, loader.epoch(0), parts.runtime)
    return distributed.gather_rows(logits), distributed.gather_rows(labels)


def predict_test_set(parts: Parts, model: nn.Module) -> tuple[Tensor, Tensor]:
    return predict_split(parts, model, parts.test_loader)


def val_accuracy(parts: Parts, model: nn.Module) -> Optional[dict[int, float]]:
    """Top-1 and top-5 on the validation split (None without one)."""
    if parts.val_loader is None:
        return None
    return accuracy(*predict_split(parts, model, parts.val_loader))


def epoch_record(
    parts: Parts, epoch: int, cycle: int, result: EpochResult, teacher: Optional[TeacherState]
) -> dict[str, Any]:
    """The epoch's line of metrics.jsonl: training sums, then the student on the test set (and
    the validation split), beside the teacher's numbers (computed once per teacher)."""
    start = time.perf_counter()
    distributed.sync_state(parts.model)  # evaluate rank 0's BN statistics on every shard
    logits, labels = predict_test_set(parts, parts.model)
    acc = accuracy(logits, labels)
    record: dict[str, Any] = {
        "epoch": epoch,
        "cycle": cycle,
        "lr": result.lr,
        "train/loss": result.loss,
        **{f"train/{term}": value for term, value in result.terms.items()},  # the method's
        "train/top1": 100.0 * result.counts["correct"] / max(result.images, 1),
        "student/top1": acc[1],
        "student/top5": acc[5],
        "teacher/top1": None if teacher is None else teacher.top1,
        "teacher/top5": None if teacher is None else teacher.top5,
        "distill/agreement": None if teacher is None else agreement(logits, teacher.logits),
        "distill/kl": None if teacher is None else mean_kl(teacher.logits, logits),
        "time/epoch_s": result.seconds,
        "time/eval_s": time.perf_counter() - start,
        "throughput/img_per_s": result.img_per_s,
    }
    if parts.state.scaler is not None:  # fp16: overflowing steps the loss scaler skipped
        record["train/skipped_steps"] = result.skipped_steps
    if parts.val_loader is not None:
        record.update(_val_record(parts, teacher))
    return record


def _val_record(parts: Parts, teacher: Optional[TeacherState]) -> dict[str, Any]:
    """The validation split's metrics (the teacher's are computed once per teacher)."""
    val = val_accuracy(parts, parts.model)
    teacher_val = None if teacher is None else teacher.val
    return {
        "val/top1": val[1],
        "val/top5": val[5],
        "teacher/val_top1": None if teacher_val is None else teacher_val[1],
        "teacher/val_top5": None if teacher_val is None else teacher_val[5],
    }


def ensemble(parts: Parts, run_dir: Path) -> dict[str, Any]:
    """The snapshot ensemble: average softmax of the cycle-end students (all ranks take part)."""
    snapshots = cycle_snapshots(run_dir)
    if parts.plan.num_cycles < 2 or len(snapshots) != parts.plan.num_cycles:
        return {}  # one cycle: the "ensemble" would just be the final student
    return snapshot_ensemble(parts.model, snapshots, lambda m: predict_test_set(parts, m))
