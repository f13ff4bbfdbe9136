"""Classic knowledge distillation (Hinton et al., 2015): a finished model of the same
architecture (`distill.teacher_checkpoint`, a run folder or .pt) teaches every epoch, with the
loss of sdrun/methods/teacher_student_loss.py (conf/distill/kd.yaml: T=4, both sides softened)."""

from __future__ import annotations

from sdrun.config import Config
from sdrun.errors import ConfigError
from sdrun.methods.base import FILE
from sdrun.methods.registry import register_method
from sdrun.methods.sd import LOSS_KEYS, Distillation


@register_method("kd")
class KnowledgeDistillation(Distillation):
    teacher = FILE
    reads = (*LOSS_KEYS, "distill.teacher_checkpoint")

    @classmethod
    def check(cls, cfg: Config) -> None:
        if not cfg.distill.teacher_checkpoint:
            raise ConfigError(
                "distill=kd needs a teacher; set distill.teacher_checkpoint=<run dir or .pt>"
            )
