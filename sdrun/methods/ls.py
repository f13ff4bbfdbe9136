"""Label smoothing (Szegedy et al., "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016): cross-entropy against (1 - eps) * onehot(y) + eps / K. train/ce logs the
plain cross-entropy beside the smoothed loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from sdrun.batches import Batch
from sdrun.checks import unit
from sdrun.config import Config, MethodSettings
from sdrun.methods.base import MethodOutput, Teacher
from sdrun.methods.registry import register_method
from sdrun.methods.selfkd import SelfDistillation
from sdrun.methods.selfkd_losses import label_smoothing_loss


@dataclass
class LsSettings(MethodSettings):
    """Label smoothing; no teacher (the report compares it with the cosine baseline)."""

    name: str = "ls"
    # Weight of the uniform target: the paper's ImageNet value, and the one Tf-KD's code
    # hard-codes (my_loss_function.py::loss_label_smoothing, its LS column's).
    eps: float = 0.1

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        unit("distill.eps", self.eps)


@register_method
class LabelSmoothing(SelfDistillation):
    settings = LsSettings
    terms = ("ce",)

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        x, y = batch.images, batch.labels
        logits = student(x)
        loss = label_smoothing_loss(logits, y, self.cfg.eps)
        return MethodOutput(loss.total, logits, y, loss.terms)
