"""Label smoothing (Szegedy et al., "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016): cross-entropy against (1 - eps) * onehot(y) + eps / K. train/ce logs the
plain cross-entropy beside the smoothed loss."""

from __future__ import annotations

from typing import Optional

from torch import nn

from sdrun.data.composition import Batch
from sdrun.methods.base import MethodOutput, Teacher
from sdrun.methods.registry import register_method
from sdrun.methods.selfkd import SelfDistillation
from sdrun.methods.selfkd_losses import label_smoothing_loss


@register_method("ls")
class LabelSmoothing(SelfDistillation):
    terms = ("ce",)
    reads = ("distill.eps",)

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        x, y = batch.images, batch.labels
        logits = student(x)
        loss = label_smoothing_loss(logits, y, self.cfg.eps)
        return MethodOutput(loss.total, logits, y, loss.terms)
