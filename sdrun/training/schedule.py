"""The cycle plan: the learning rate of every iteration and where cycles start and end.

Snapshot Distillation splits a run of E epochs into K cycles of E / K epochs (`schedule.cycles`,
or `schedule.cycle_length`, whichever is given). Inside each
cycle the LR follows a cosine from `peak` on the cycle's first iteration to exactly `lr_min`
on its last one, then restarts at `peak`. timm's CosineLRScheduler evaluates the cosine at
t / T, so a cycle's last iteration never reaches lr_min; the cycle-end snapshot is meant to
be taken at the fully decayed LR, hence this small pure function instead. `cosine` is the
same with one cycle; `step` is the classic multi-step baseline.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Optional

from sdrun.errors import ConfigError


@dataclass(frozen=True)
class CyclePlan:
    """Everything needed to compute the LR of any iteration; iterations are 0-based."""

    kind: str  # sd | cosine | step
    epochs: int
    cycle_length: int  # epochs per cycle
    steps_per_epoch: int
    peak: float
    lr_min: float = 0.0
    warmup_epochs: int = 0
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1

    @property
    def num_cycles(self) -> int:
        return self.epochs // self.cycle_length

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def cycle_steps(self) -> int:
        return self.cycle_length * self.steps_per_epoch

    def cycle_of_epoch(self, epoch: int) -> int:
        """1-based cycle of a 1-based epoch."""
        return (epoch - 1) // self.cycle_length + 1

    def is_cycle_end(self, epoch: int) -> bool:
        return epoch % self.cycle_length == 0

    def cycle_start_steps(self) -> list[int]:
        """First iteration of every cycle: where the LR restarts at its peak."""
        return [k * self.cycle_steps for k in range(self.num_cycles)]

    def lr_at(self, step: int) -> float:
        if self.kind == "step":
            return step_lr(step, self)
        return cyclic_cosine_lr(step, self)


def cosine(progress: float, peak: float, lr_min: float) -> float:
    """Half cosine from `peak` (progress 0) to `lr_min` (progress 1)."""
    return lr_min + 0.5 * (peak - lr_min) * (1.0 + math.cos(math.pi * progress))


def warmup_lr(step: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup that reaches `peak` on the first iteration after the warmup."""
    return peak * (step + 1) / (warmup_steps + 1)


def cyclic_cosine_lr(step: int, plan: CyclePlan) -> float:
    """Per-iteration cosine inside each cycle, restarting at every cycle start.

    A warmup (first cycle only) takes the first `warmup_epochs`; the cosine of the first cycle
    then runs over the rest of it, so every cycle still ends exactly at lr_min.
    """
    step = min(step, plan.total_steps - 1)
    t = step % plan.cycle_steps
    start = plan.warmup_epochs * plan.steps_per_epoch if step < plan.cycle_steps else 0
    if t < start:
        return warmup_lr(t, start, plan.peak)
    span = plan.cycle_steps - start - 1
    progress = (t - start) / span if span > 0 else 1.0
    return cosine(progress, plan.peak, plan.lr_min)


def step_lr(step: int, plan: CyclePlan) -> float:
    """Multi-step decay: peak x gamma^(milestones passed), milestones as fractions of the run."""
    warmup_steps = plan.warmup_epochs * plan.steps_per_epoch
    if step < warmup_steps:
        return warmup_lr(step, warmup_steps, plan.peak)
    epoch = step // plan.steps_per_epoch
    boundaries = sorted(round(m * plan.epochs) for m in plan.milestones)
    return plan.peak * plan.gamma ** bisect.bisect_right(boundaries, epoch)


def resolve_cycle_length(epochs: int, cycle_length: Optional[int], cycles: Optional[int]) -> int:
    """Epochs per cycle from `schedule.cycle_length` or `schedule.cycles` (either, or both if
    they agree; neither: one cycle). Raises ConfigError naming the keys and the fix."""
    if cycles is not None and cycles <= 0:
        raise ConfigError(f"schedule.cycles={cycles} must be > 0; set schedule.cycles to 1 or more")
    if cycle_length is not None and cycle_length <= 0:
        raise ConfigError(
            f"schedule.cycle_length={cycle_length} must be > 0; set it to 1 or more epochs"
        )
    if cycles is not None and epochs % cycles:
        raise ConfigError(
            f"schedule.cycles={cycles} does not divide schedule.epochs={epochs} into whole "
            f"epochs; pick cycles that divide it (e.g. {_nearest_divisor(epochs, cycles)}) "
            f"or set schedule.epochs to a multiple of {cycles}"
        )
    if cycle_length is not None and epochs % cycle_length:
        raise ConfigError(
            f"schedule.cycle_length={cycle_length} does not divide schedule.epochs={epochs}; "
            f"pick a cycle_length that divides it (e.g. {_nearest_divisor(epochs, cycle_length)})"
        )
    if cycles is not None and cycle_length is not None and cycles * cycle_length != epochs:
        raise ConfigError(
            f"schedule.cycles={cycles} and schedule.cycle_length={cycle_length} disagree "
            f"({cycles} x {cycle_length} != schedule.epochs={epochs}); give only one of them: "
            "add schedule.cycle_length=null to keep cycles, or schedule.cycles=null"
        )
    if cycle_length is not None:
        return cycle_length
    return epochs // cycles if cycles is not None else epochs


def cycle_length_of(schedule) -> int:
    """Epochs per cycle of a ScheduleConfig (see resolve_cycle_length)."""
    return resolve_cycle_length(schedule.epochs, schedule.cycle_length, schedule.cycles)


def _nearest_divisor(epochs: int, near: int) -> int:
    divisors = [c for c in range(1, epochs + 1) if epochs % c == 0]
    return min(divisors, key=lambda c: abs(c - near))


def plan_from_config(schedule, peak_lr: float, steps_per_epoch: int) -> CyclePlan:
    """Build the plan from a ScheduleConfig (cosine and step have one cycle)."""
    cycle = cycle_length_of(schedule)
    if schedule.name in ("cosine", "step"):
        cycle = schedule.epochs
    return CyclePlan(
        kind=schedule.name,
        epochs=schedule.epochs,
        cycle_length=cycle,
        steps_per_epoch=steps_per_epoch,
        peak=peak_lr,
        lr_min=schedule.lr_min,
        warmup_epochs=schedule.warmup_epochs,
        milestones=tuple(schedule.milestones),
        gamma=schedule.gamma,
    )
