"""Tf-KD_reg (Yuan et al., "Revisiting Knowledge Distillation via Label Smoothing
Regularization", CVPR 2020): a virtual teacher, sure of the label, softened and compared with the
student, as the official code computes it (sdrun/methods/selfkd_losses.py::tfkd_reg_loss):

    (1 - alpha) * CE + alpha * multiplier * KL(softmax(p^d / T) || softmax(z)) / (B * K)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from sdrun.batches import Batch
from sdrun.checks import positive, unit
from sdrun.config import Config, MethodSettings
from sdrun.methods.base import MethodOutput, Teacher
from sdrun.methods.registry import register_method
from sdrun.methods.selfkd import SelfDistillation
from sdrun.methods.selfkd_losses import tfkd_reg_loss


@dataclass
class TfkdSettings(MethodSettings):
    """Tf-KD_reg's CIFAR-100 values: yuanli2333/Teacher-free-Knowledge-Distillation,
    experiments/base_experiments/base_resnet18/params.json (docs/SELFKD.md)."""

    name: str = "tfkd"
    alpha: float = 0.1  # weight of the virtual teacher's term (reg_alpha)
    temperature: float = 20.0  # T softening the virtual teacher (reg_temperature)
    multiplier: float = 100.0  # scale of its KL, averaged over images x classes (multiplier)
    correct_prob: float = 0.99  # its probability on the label (hard-coded in the official code)

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        unit("distill.alpha", self.alpha)
        positive("distill.temperature", self.temperature)
        positive("distill.multiplier", self.multiplier, allow_zero=True)
        unit("distill.correct_prob", self.correct_prob)


@register_method
class TeacherFreeKD(SelfDistillation):
    settings = TfkdSettings
    terms = ("ce", "kd")

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        x, y = batch.images, batch.labels
        logits = student(x)
        c = self.cfg
        loss = tfkd_reg_loss(logits, y, c.alpha, c.temperature, c.multiplier, c.correct_prob)
        return MethodOutput(loss.total, logits, y, loss.terms)
