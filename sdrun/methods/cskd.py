"""Class-wise self-knowledge distillation (Yun et al., "Regularizing Class-wise Predictions via
Self-knowledge Distillation", CVPR 2020): the model's softened prediction for another image of
the same class teaches its prediction for each image,

    CE(z, y) + kd_weight * T^2 * KL(softmax(z' / T) || softmax(z / T)),

both averaged over the batch's images (sdrun/methods/selfkd_losses.py::cskd_loss). The loaders give
every image of the batch a same-class partner (`SAME_CLASS`, sdrun/data/partners.py): a step
sees `dataset.batch_size` images and as many partners, and an epoch is one pass over the
images, as in the official code (alinlab/cs-kd, PairBatchSampler). As there, the partners'
forward is a second one, without gradient (the paper's fixed copy of the weights), so
BatchNorm normalises them as a batch of their own and updates its running statistics twice per
step; the partners get no CE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from sdrun.batches import SAME_CLASS, Batch
from sdrun.checks import positive
from sdrun.config import Config, MethodSettings
from sdrun.methods.base import MethodOutput, Teacher
from sdrun.methods.registry import register_method
from sdrun.methods.selfkd import SelfDistillation
from sdrun.methods.selfkd_losses import cskd_loss


@dataclass
class CskdSettings(MethodSettings):
    """alinlab/cs-kd train.py (--temp 4) and its README's CIFAR-100 command (--lamda 1)."""

    name: str = "cskd"
    temperature: float = 4.0  # T of both sides of the KL (--temp)
    kd_weight: float = 1.0  # weight of the KL, the paper's lambda_cls (--lamda)

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        positive("distill.temperature", self.temperature)
        positive("distill.kd_weight", self.kd_weight, allow_zero=True)


@register_method
class ClassWiseSelfKD(SelfDistillation):
    settings = CskdSettings
    terms = ("ce", "kd")
    batches = SAME_CLASS

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        x, y = batch.images, batch.labels
        logits = student(x)
        with torch.no_grad():  # the partners teach; no gradient flows through them
            partner_logits = student(batch.partners.images)
        loss = cskd_loss(logits, partner_logits, y, self.cfg.temperature, self.cfg.kd_weight)
        return MethodOutput(loss.total, logits, y, loss.terms)
