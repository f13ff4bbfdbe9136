"""Pure metric functions on logits: accuracy, student-teacher agreement and divergence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, Tensor]:
    """Number of samples whose label is among the top-k logits, per k (device tensors)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(labels[:, None])
    return {k: hits[:, : min(k, kmax)].any(dim=1).sum() for k in ks}


def accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy in percent."""
    n = max(labels.numel(), 1)
    return {k: 100.0 * c.item() / n for k, c in topk_correct(logits, labels, ks).items()}


def agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Percent of samples where student and teacher predict the same class."""
    same = student_logits.argmax(dim=1).eq(teacher_logits.argmax(dim=1))
    return 100.0 * same.float().mean().item()


def mean_kl(teacher_logits: Tensor, student_logits: Tensor) -> float:
    """Mean over samples of KL(softmax(teacher) || softmax(student)) at temperature 1, in nats."""
    t = F.log_softmax(teacher_logits.float(), dim=1)
    s = F.log_softmax(student_logits.float(), dim=1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True).item()


def softmax_ensemble(logits: list[Tensor]) -> Tensor:
    """Average of the members' softmax outputs (a snapshot ensemble's prediction)."""
    return torch.stack([F.softmax(z.float(), dim=1) for z in logits]).mean(dim=0)
