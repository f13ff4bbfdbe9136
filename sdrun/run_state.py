"""A run's state across sessions: what its checkpoints hold, and restoring a run from one.

`last.pt` holds everything an exact continuation needs: student, teacher snapshot (unfolded),
optimizer, global step, AMP scaler, the epochs done and a partial epoch's tally (after a stop
signal), every RNG state and the config. A resume must agree with the checkpoint on the keys
that define what the run computes (`RUN_DEFINING`); runtime keys may change.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from sdrun import checkpoint as ckpt
from sdrun.config import flatten
from sdrun.engine import EpochTally, StepState
from sdrun.errors import CheckpointError
from sdrun.runtime import rng_state, set_rng_state
from sdrun.schedule import CyclePlan

log = logging.getLogger(__name__)

RUN_DEFINING = (
    "dataset.name",
    "dataset.batch_size",
    "dataset.limit_train",
    "dataset.limit_test",
    "dataset.val_split",
    "dataset.image_size",
    "dataset.eval_resize",
    "model",
    "schedule",
    "distill",
    "optim",
    "seed",
)


@dataclass
class Progress:
    """Bookkeeping that outlives a session (saved in every checkpoint)."""

    epoch: int = 0  # epochs completed
    best_top1: float = -1.0
    best_epoch: int = 0
    # The epoch selected on the validation split, and the test top-1 at that epoch.
    val_best_top1: float = -1.0
    val_best_epoch: int = 0
    top1_at_val_best: Optional[float] = None
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # training, evaluation and checkpoints, over every session
    wandb_id: Optional[str] = None
    history: dict[str, Any] = field(default_factory=dict)  # the last epoch's metrics


def save_last(
    run_dir: Path,
    config: dict[str, Any],
    model: nn.Module,
    teacher_state: Optional[dict[str, torch.Tensor]],
    state: StepState,
    plan: CyclePlan,
    progress: Progress,
    tally: Optional[EpochTally] = None,
) -> None:
    payload = {
        "model": model.state_dict(),
        "teacher": teacher_state,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": {"step": state.step, "plan": asdict(plan)},
        "scaler": None if state.scaler is None else state.scaler.state_dict(),
        "epoch": progress.epoch,
        "epoch_tally": None if tally is None else tally.state_dict(),
        "progress": asdict(progress),
        "rng": rng_state(),
        "config": config,
    }
    ckpt.save_last(payload, run_dir)


def save_cycle_snapshot(
    run_dir: Path, config: dict[str, Any], model: nn.Module, epoch: int, cycle: int
) -> None:
    """Cycle-end weights, kept for the snapshot ensemble and for later use as teachers."""
    payload = {"model": model.state_dict(), "epoch": epoch, "cycle": cycle, "config": config}
    ckpt.save_atomic(payload, run_dir / ckpt.CHECKPOINT_DIR / f"cycle{cycle}.pt")


def load_for_resume(resume: Optional[str], config: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The checkpoint `resume=` names, checked against the run's config (None: a new run)."""
    if not resume:
        return None
    path = ckpt.checkpoint_path(resume)
    payload = ckpt.load_for_resume(path)
    check_same_run(config, payload["config"], path)
    return payload


def check_same_run(now: dict[str, Any], saved: dict[str, Any], path: Path) -> None:
    now, before = _cycles_as_length(flatten(now)), _cycles_as_length(flatten(saved))
    for key in sorted(set(now) | set(before)):
        if not key.startswith(RUN_DEFINING) or key == "distill.teacher_checkpoint":
            continue
        if now.get(key) != before.get(key):
            raise CheckpointError(
                f"resume: {key}={now.get(key)!r} but {path} was trained with {before.get(key)!r}; "
                f"drop that override to resume, or start a new run without resume="
            )


def _cycles_as_length(flat: dict[str, Any]) -> dict[str, Any]:
    """`schedule.cycles=4` and `schedule.cycle_length=50` of 200 epochs are the same run: compare
    the cycle length they give (a checkpoint from before `schedule.cycles` has no such key)."""
    cycles = flat.pop("schedule.cycles", None)
    epochs, length = flat.get("schedule.epochs"), flat.get("schedule.cycle_length")
    if length is None and isinstance(epochs, int) and isinstance(cycles, int) and cycles > 0:
        flat["schedule.cycle_length"] = epochs // cycles
    return flat


def restore(
    payload: dict[str, Any],
    model: nn.Module,
    state: StepState,
    progress: Progress,
    device: torch.device,
) -> Optional[EpochTally]:
    """Put model, optimizer, step, scaler, progress and RNGs back; returns a partial epoch."""
    model.load_state_dict(payload["model"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.step = payload["scheduler"]["step"]
    if state.scaler is not None and payload.get("scaler"):
        state.scaler.load_state_dict(payload["scaler"])
    for key, value in payload["progress"].items():
        setattr(progress, key, value)
    set_rng_state(payload["rng"])
    log.info("resumed after epoch %d, step %d", progress.epoch, state.step)
    if payload.get("epoch_tally"):
        return EpochTally.from_state(payload["epoch_tally"], device)
    return None
