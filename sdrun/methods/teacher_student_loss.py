"""The distillation loss, shared by the teacher-student methods (sdrun/methods/sd.py, kd.py).

With a teacher the loss is

    L = ce_weight * CE(y, z_s) + kd_weight * KD(z_t, z_s)
    smooth=teacher: KD = KL(softmax(z_t / T) || softmax(z_s))          (SD paper's default)
    smooth=both:    KD = T^2 * KL(softmax(z_t / T) || softmax(z_s / T))  (Hinton et al.)

The teacher (sdrun/training/frozen_teacher.py) runs without gradients on the same augmented batch
as the student: for SD the student's weights and BN buffers copied at the end of the previous
cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LossWeights:
    temperature: float = 2.0
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    smooth: str = "teacher"


def kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, smooth: str
) -> Tensor:
    """KL(teacher || student), batch mean, with the teacher softened by `temperature`."""
    s = student_logits.float()
    t = teacher_logits.float()
    teacher_logp = F.log_softmax(t / temperature, dim=1)
    if smooth == "both":
        student_logp = F.log_softmax(s / temperature, dim=1)
        scale = temperature**2  # keeps gradient magnitudes comparable across T (Hinton et al.)
    else:
        student_logp = F.log_softmax(s, dim=1)
        scale = 1.0
    kl = F.kl_div(student_logp, teacher_logp, reduction="batchmean", log_target=True)
    return scale * kl


def cross_entropy(student_logits: Tensor, targets: Tensor) -> Tensor:
    """CE in fp32 whatever the autocast dtype of the logits."""
    return F.cross_entropy(student_logits.float(), targets)


def distill_loss(
    student_logits: Tensor,
    targets: Tensor,
    teacher_logits: Optional[Tensor],
    weights: LossWeights,
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, ce, kd). Without a teacher the loss is plain CE and kd is 0."""
    ce = cross_entropy(student_logits, targets)
    if teacher_logits is None:
        return ce, ce.detach(), torch.zeros((), device=ce.device)
    kd = kd_loss(student_logits, teacher_logits, weights.temperature, weights.smooth)
    total = weights.ce_weight * ce + weights.kd_weight * kd
    return total, ce.detach(), kd.detach()
