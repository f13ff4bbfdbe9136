"""What a run reports about itself: the bookkeeping of its best epochs, summary.json (also for a
run that diverged), and its closing log line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from sdrun.runfolder.loggers import SUMMARY, write_summary
from sdrun.runfolder.run_folder import Outputs, how_it_ran
from sdrun.runfolder.run_state import Progress, kept_checkpoint
from sdrun.training.engine import EpochResult
from sdrun.training.frozen_teacher import TeacherState
from sdrun.training.parts import Parts


def update_progress(progress: Progress, record: dict[str, Any], result: EpochResult) -> None:
    """Count a finished epoch: its time, its metrics, and the best epochs so far (on the test
    set, and on the validation split when there is one)."""
    progress.epoch = record["epoch"]
    progress.train_seconds += result.seconds
    progress.history = record
    if record["student/top1"] > progress.best_top1:
        progress.best_top1 = record["student/top1"]
        progress.best_epoch = record["epoch"]
    if record.get("val/top1") is not None and record["val/top1"] > progress.val_best_top1:
        progress.val_best_top1 = record["val/top1"]  # the first epoch of the best, like the test's
        progress.val_best_epoch = record["epoch"]
        progress.top1_at_val_best = record["student/top1"]


def summary(parts: Parts, progress: Progress, teacher: Optional[TeacherState]) -> dict[str, Any]:
    cfg, last = parts.cfg, progress.history
    return {
        "complete": progress.epoch == parts.plan.epochs,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "method": cfg.distill.name,
        "schedule": cfg.schedule.name,
        "seed": cfg.seed,
        "root_seed": cfg.seed if cfg.root_seed is None else cfg.root_seed,
        "epochs": parts.plan.epochs,
        "cycles": parts.plan.num_cycles,
        "student/top1": last.get("student/top1"),
        "student/top5": last.get("student/top5"),
        "student/best_top1": progress.best_top1,
        "student/best_epoch": progress.best_epoch,
        "teacher/top1": None if teacher is None else teacher.top1,
        "teacher/top5": None if teacher is None else teacher.top5,
        **how_it_ran(progress, parts.runtime, parts.dist),
        "sync_bn": bool(cfg.trainer.sync_bn and parts.dist.enabled),  # SyncBN needs torchrun
        "diverged": False,
        "params": sum(p.numel() for p in parts.model.parameters()),
        "val_split": cfg.dataset.val_split,
        **_val_summary(progress, teacher),
    }


def _val_summary(progress: Progress, teacher: Optional[TeacherState]) -> dict[str, Any]:
    """Final validation metrics, and the epoch validation selects with its test top-1."""
    last = progress.history
    if last.get("val/top1") is None:
        return {}
    return {
        "val/top1": last["val/top1"],
        "val/top5": last["val/top5"],
        "val/best_top1": progress.val_best_top1,
        "val/best_epoch": progress.val_best_epoch,
        "student/top1_at_val_best": progress.top1_at_val_best,
        "teacher/val_top1": None if teacher is None or not teacher.val else teacher.val[1],
    }


def write_diverged(
    parts: Parts,
    progress: Progress,
    teacher: Optional[TeacherState],
    outs: Outputs,
    run_dir: Path,
    epoch: int,
    step: int,
) -> None:
    """summary.json of a diverged run: an outcome the report counts, not a killed run. The
    diverging session's work since its last checkpoint is lost work."""
    outs.count_unsaved(progress)
    record = summary(parts, progress, teacher)
    record.update(complete=False, diverged=True, diverged_epoch=epoch, diverged_step=step)
    write_summary(run_dir / SUMMARY, record)


def diverged_message(
    epoch: int, cycle: int, teacher: Optional[TeacherState], step: int, progress: Progress
) -> str:
    who = "with the teacher active" if teacher is not None else "without a teacher"
    return (
        f"training diverged: the loss became NaN or infinite in epoch {epoch} (cycle {cycle}, "
        f"{who}) by step {step}; {kept_checkpoint(progress.epoch)}; "
        "lower optim.lr or add schedule.warmup_epochs and start a new run"
    )


def final_line(record: dict[str, Any]) -> str:
    """The run's result in one log line."""
    line = (
        f"student top-1 {record['student/top1']:.2f}% (best {record['student/best_top1']:.2f}% "
        f"at epoch {record['student/best_epoch']}, chosen on the test set)"
    )
    if record.get("val/top1") is not None:
        line += (
            f"; validation top-1 {record['val/top1']:.2f}% (best at epoch "
            f"{record['val/best_epoch']}, where the test top-1 was "
            f"{record['student/top1_at_val_best']:.2f}%)"
        )
    return line
