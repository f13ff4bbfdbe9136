"""The fine-tuning learning rate per iteration: a linear warmup, then multi-step decay
(detection: Faster R-CNN's recipes) or polynomial decay (segmentation: DeepLab's "poly").

sdrun's CyclePlan warms up in whole epochs and has no poly decay; detection recipes warm up
for a few hundred iterations, so this plan counts the warmup in iterations and reuses
sdrun's warmup ramp.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from sdrun.training.schedule import warmup_lr

KINDS = ("step", "poly")


@dataclass(frozen=True)
class FinetunePlan:
    kind: str  # step | poly
    epochs: int
    steps_per_epoch: int
    peak: float
    warmup_iters: int = 0
    milestones: tuple[float, ...] = (0.75,)  # step: fractions of the run
    gamma: float = 0.1
    power: float = 0.9  # poly: lr = peak * (1 - t / T) ** power

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def lr_at(self, step: int) -> float:
        return finetune_lr(step, self)


def finetune_lr(step: int, plan: FinetunePlan) -> float:
    """LR of 0-based iteration `step`: warmup ramp, then the plan's decay from `peak`."""
    warmup = min(plan.warmup_iters, plan.total_steps - 1)
    if step < warmup:
        return warmup_lr(step, warmup, plan.peak)
    if plan.kind == "poly":
        progress = min(step, plan.total_steps - 1) / plan.total_steps
        return plan.peak * (1.0 - progress) ** plan.power
    epoch = step // plan.steps_per_epoch
    boundaries = sorted(round(m * plan.epochs) for m in plan.milestones)
    return plan.peak * plan.gamma ** bisect.bisect_right(boundaries, epoch)
