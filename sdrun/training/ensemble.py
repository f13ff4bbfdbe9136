"""The snapshot ensemble: the cycle-end students of a cyclic run, voting with averaged softmax.

A run with K cycles saves the student at the end of every cycle (`checkpoints/cycle<k>.pt`).
Averaging those K models' softmax outputs is the "snapshot ensemble" of Huang et al. (2017):
a free by-product of the cycles that SD can be compared with (it costs K forward passes at
test time, SD's student costs one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from sdrun.runfolder.checkpoint import CHECKPOINT_DIR, check_weights, load_weights
from sdrun.training.frozen_teacher import snapshot
from sdrun.training.metrics import accuracy, softmax_ensemble

_CYCLE_FILE = re.compile(r"cycle(\d+)\.pt")


def cycle_snapshots(run_dir: Path) -> list[Path]:
    """The run's cycle-end checkpoints, in cycle order (cycle10 after cycle9)."""
    found = []
    for path in (Path(run_dir) / CHECKPOINT_DIR).glob("cycle*.pt"):
        match = _CYCLE_FILE.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def snapshot_ensemble(
    model: nn.Module,
    snapshots: Sequence[Path],
    predict: Callable[[nn.Module], tuple[Tensor, Tensor]],
) -> dict[str, float | int]:
    """Top-1/top-5 (percent) of the average of the snapshots' softmax outputs.

    `model` gives the architecture, device and memory format; its own weights are left
    untouched (each snapshot is loaded into a frozen copy). `predict(member)` returns the
    member's logits and the labels over the whole evaluation set, in the same order every
    call (the runner's test-set prediction, gathered over processes).
    """
    if not snapshots:
        raise ValueError("snapshot_ensemble needs at least one snapshot")
    member = snapshot(model)
    all_logits: list[Tensor] = []
    labels: Tensor | None = None
    live = member.state_dict()
    for path in snapshots:
        weights = load_weights(path, "snapshot ensemble").get("model")
        check_weights(weights, live, "snapshot ensemble", path, "model")
        member.load_state_dict(weights)
        logits, member_labels = predict(member)
        if labels is not None and not torch.equal(labels, member_labels):
            raise ValueError("the evaluation set changed order between ensemble members")
        labels = member_labels
        all_logits.append(logits)
    acc = accuracy(softmax_ensemble(all_logits), labels)
    return {
        "ensemble/top1": acc[1],
        "ensemble/top5": acc[5],
        "ensemble/members": len(snapshots),
    }
