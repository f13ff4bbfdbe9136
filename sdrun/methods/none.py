"""No teacher: cross-entropy only. With schedule=sd (the default) it is the cyclic control that
isolates the effect of SD's restarts; with cosine or step, the plain baselines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from sdrun.batches import Batch
from sdrun.config import MethodSettings
from sdrun.methods.base import Method, MethodOutput, Teacher
from sdrun.methods.registry import register_method
from sdrun.methods.teacher_student_loss import cross_entropy


@dataclass
class NoneSettings(MethodSettings):
    """Plain cross-entropy: no setting of its own."""

    name: str = "none"


@register_method
class CrossEntropy(Method):
    settings = NoneSettings
    # kd is never computed (null in metrics.jsonl): the same columns as sd's and kd's rows.
    terms = ("ce", "kd")

    @classmethod
    def label(cls, schedule: str) -> str:
        """The cyclic control on SD's schedule, else the schedule's baseline (cosine, step)."""
        return "cyclic" if schedule == "sd" else schedule

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        x, y = batch.images, batch.labels
        logits = student(x)
        ce = cross_entropy(logits, y)
        return MethodOutput(ce, logits, y, {"ce": ce.detach()})
