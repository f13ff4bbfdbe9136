"""Snapshot Distillation (Yang et al., CVPR 2019): the student at the end of each cycle of the
cyclic schedule teaches the next cycle, on the same augmented batch,

    L = ce_weight * CE(y, z_s) + kd_weight * KD(z_t, z_s)   (methods/teacher_student_loss.py)

and the first cycle trains with cross-entropy alone (no teacher yet: train/kd is null)."""

from __future__ import annotations

from typing import Optional

from torch import nn

from sdrun.config import Config, DistillConfig, cycle_length_of
from sdrun.data.composition import Batch
from sdrun.errors import ConfigError
from sdrun.methods.base import SNAPSHOT, Method, MethodOutput, Teacher
from sdrun.methods.registry import register_method
from sdrun.methods.teacher_student_loss import LossWeights, distill_loss

# What the loss reads (distill.teacher_checkpoint only names a file: kd's teacher).
LOSS_KEYS = ("distill.temperature", "distill.ce_weight", "distill.kd_weight", "distill.smooth")


class Distillation(Method):
    """CE plus KD from a teacher's logits on the same batch, once a teacher exists."""

    terms = ("ce", "kd")
    reads = LOSS_KEYS

    def __init__(self, cfg: DistillConfig) -> None:
        super().__init__(cfg)
        self.weights = LossWeights(cfg.temperature, cfg.ce_weight, cfg.kd_weight, cfg.smooth)

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        x, y = batch.images, batch.labels
        teacher_logits = None if teacher is None else teacher(x)  # frozen: no graph
        logits = student(x)
        loss, ce, kd = distill_loss(logits, y, teacher_logits, self.weights)
        terms = {"ce": ce} if teacher_logits is None else {"ce": ce, "kd": kd}
        return MethodOutput(loss, logits, y, terms)


@register_method("sd")
class SnapshotDistillation(Distillation):
    teacher = SNAPSHOT

    @classmethod
    def label(cls, schedule: str) -> str:
        return "sd" if schedule == "sd" else f"sd-{schedule}"

    @classmethod
    def check(cls, cfg: Config) -> None:
        s = cfg.schedule
        if cycle_length_of(s) == s.epochs:
            raise ConfigError(
                f"distill=sd with schedule={s.name} and one cycle of {s.epochs} epochs: no "
                "snapshot would ever teach, so this is plain cross-entropy reported as sd; use "
                "schedule=sd with a schedule.cycle_length below schedule.epochs, or distill=none "
                "for a one-cycle baseline"
            )
