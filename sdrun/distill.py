"""The distillation loss and the frozen snapshot teacher.

In cycles 2..K the loss is

    L = ce_weight * CE(y, z_s) + kd_weight * KD(z_t, z_s)
    smooth=teacher: KD = KL(softmax(z_t / T) || softmax(z_s))          (SD paper's default)
    smooth=both:    KD = T^2 * KL(softmax(z_t / T) || softmax(z_s / T))  (Hinton et al.)

The teacher is the student's weights (and BN buffers) copied at the end of the previous cycle,
in eval mode, without gradients, run on the same augmented batch as the student.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdrun.errors import CheckpointError


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


def distill_loss(
    student_logits: Tensor,
    targets: Tensor,
    teacher_logits: Optional[Tensor],
    weights: LossWeights,
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, ce, kd). Without a teacher the loss is plain CE and kd is 0."""
    ce = F.cross_entropy(student_logits.float(), targets)
    if teacher_logits is None:
        return ce, ce.detach(), torch.zeros((), device=ce.device)
    kd = kd_loss(student_logits, teacher_logits, weights.temperature, weights.smooth)
    total = weights.ce_weight * ce + weights.kd_weight * kd
    return total, ce.detach(), kd.detach()


def snapshot_teacher(student: nn.Module) -> nn.Module:
    """Freeze a copy of the student: weights and BN buffers as they are now, eval mode."""
    teacher = copy.deepcopy(_unwrap(student))
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def load_teacher(student: nn.Module, checkpoint: str | Path) -> nn.Module:
    """A teacher for classic KD: the student's architecture with a saved model's weights."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(
            f"distill.teacher_checkpoint: no checkpoint at {path}; "
            "point it at a run directory or a .pt file written by sdrun"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        teacher = snapshot_teacher(student)
        teacher.load_state_dict(state["model"])
    except (RuntimeError, KeyError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"distill.teacher_checkpoint: cannot load a teacher for this model from {path} "
            f"({first}); use a checkpoint of the same model and dataset"
        ) from None
    return teacher


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind DDP or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
