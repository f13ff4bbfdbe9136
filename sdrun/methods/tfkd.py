"""Tf-KD_reg (Yuan et al., "Revisiting Knowledge Distillation via Label Smoothing
Regularization", CVPR 2020): a virtual teacher, sure of the label, softened and compared with the
student, as the official code computes it (sdrun/methods/selfkd_losses.py::tfkd_reg_loss):

    (1 - alpha) * CE + alpha * multiplier * KL(softmax(p^d / T) || softmax(z)) / (B * K)."""

from __future__ import annotations

from typing import Optional

from torch import nn

from sdrun.data.composition import Batch
from sdrun.methods.base import MethodOutput, Teacher
from sdrun.methods.registry import register_method
from sdrun.methods.selfkd import SelfDistillation
from sdrun.methods.selfkd_losses import tfkd_reg_loss


@register_method("tfkd")
class TeacherFreeKD(SelfDistillation):
    terms = ("ce", "kd")
    reads = ("distill.alpha", "distill.temperature", "distill.multiplier", "distill.correct_prob")

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        x, y = batch.images, batch.labels
        logits = student(x)
        c = self.cfg
        loss = tfkd_reg_loss(logits, y, c.alpha, c.temperature, c.multiplier, c.correct_prob)
        return MethodOutput(loss.total, logits, y, loss.terms)
