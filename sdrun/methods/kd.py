"""Classic knowledge distillation (Hinton et al., 2015): a finished model of the same
architecture (`distill.teacher_checkpoint`, a run folder or .pt) teaches every epoch, with the
loss of sdrun/methods/teacher_student_loss.py (T=4, both sides softened)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sdrun.config import Config
from sdrun.errors import ConfigError
from sdrun.methods.base import FILE
from sdrun.methods.registry import register_method
from sdrun.methods.sd import Distillation, TeacherStudentSettings


@dataclass
class KdSettings(TeacherStudentSettings):
    """Hinton-style KD: both sides softened by T 4, with the T^2 factor."""

    name: str = "kd"
    temperature: float = 4.0  # T of both sides (smooth=both)
    smooth: str = "both"  # Hinton et al.: T^2 KL(softmax(z_t / T) || softmax(z_s / T))
    # The teacher: a run folder or a checkpoint (.pt) of the same architecture (required).
    teacher_checkpoint: Optional[str] = None

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        if not self.teacher_checkpoint:
            raise ConfigError(
                "distill=kd needs a teacher; set distill.teacher_checkpoint=<run dir or .pt>"
            )


@register_method
class KnowledgeDistillation(Distillation):
    settings = KdSettings
    teacher = FILE
