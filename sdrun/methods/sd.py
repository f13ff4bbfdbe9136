"""Snapshot Distillation (Yang et al., CVPR 2019): the student at the end of each cycle of the
cyclic schedule teaches the next cycle, on the same augmented batch,

    L = ce_weight * CE(y, z_s) + kd_weight * KD(z_t, z_s)   (methods/teacher_student_loss.py)

and the first cycle trains with cross-entropy alone (no teacher yet: train/kd is null)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from sdrun.batches import Batch
from sdrun.checks import choice, positive
from sdrun.config import Config, MethodSettings, cycle_length_of
from sdrun.errors import ConfigError
from sdrun.methods.base import SNAPSHOT, Method, MethodOutput, Teacher
from sdrun.methods.registry import register_method
from sdrun.methods.teacher_student_loss import LossWeights, distill_loss

SMOOTH_MODES = ("teacher", "both")


@dataclass
class TeacherStudentSettings(MethodSettings):
    """The loss of a teacher's logits on the student's batch (sd and kd)."""

    temperature: float = 2.0  # T: softens the teacher's logits (and the student's: smooth=both)
    ce_weight: float = 1.0  # weight of the cross-entropy against the labels
    kd_weight: float = 1.0  # weight of the KL to the teacher
    # teacher: KL(softmax(z_t / T) || softmax(z_s)) (SD's); both: T^2 KL(.. || softmax(z_s / T))
    smooth: str = "teacher"

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        choice("distill.smooth", self.smooth, SMOOTH_MODES)
        positive("distill.temperature", self.temperature)
        positive("distill.ce_weight", self.ce_weight, allow_zero=True)
        positive("distill.kd_weight", self.kd_weight, allow_zero=True)
        if self.ce_weight == 0 and self.kd_weight == 0:
            raise ConfigError("distill.ce_weight and distill.kd_weight are both 0; set one above 0")


@dataclass
class SdSettings(TeacherStudentSettings):
    """Snapshot Distillation: T 2, the teacher alone softened (the paper's CIFAR setting)."""

    name: str = "sd"

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        s = cfg.schedule
        if cycle_length_of(s) == s.epochs:
            raise ConfigError(
                f"distill=sd with schedule={s.name} and one cycle of {s.epochs} epochs: no "
                "snapshot would ever teach, so this is plain cross-entropy reported as sd; use "
                "schedule=sd with a schedule.cycle_length below schedule.epochs, or distill=none "
                "for a one-cycle baseline"
            )


class Distillation(Method):
    """CE plus KD from a teacher's logits on the same batch, once a teacher exists."""

    terms = ("ce", "kd")

    def __init__(self, cfg: TeacherStudentSettings) -> None:
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


@register_method
class SnapshotDistillation(Distillation):
    settings = SdSettings
    schedule = "sd"  # its cycles: each cycle's last snapshot teaches the next
    teacher = SNAPSHOT

    @classmethod
    def label(cls, schedule: str) -> str:
        return "sd" if schedule == "sd" else f"sd-{schedule}"
