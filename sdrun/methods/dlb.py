"""Self-distillation from the last mini-batch (Shen et al., "Self-Distillation from the Last
Mini-Batch for Consistency Regularization", CVPR 2022): each step trains on
`dataset.batch_size` new images and, under a second augmentation, the previous step's new
images, whose logits of that step (before its update) teach them:

    CE over all rows + kd_weight * T^2 * KL(softmax(z_prev / T) || softmax(z_rep / T)),

the KL averaged over the repeated rows (sdrun/methods/selfkd_losses.py::dlb_loss). The loaders give
each batch its predecessor (`PREVIOUS_BATCH`, sdrun/data/partners.py; an epoch's first batch
repeats the previous epoch's last, the run's first repeats nothing); this method keeps the
logits. Unlike the official code (Meta-knowledge-Lab/DLB, two forwards), repeated and new
images go through one forward of 2n images: one BatchNorm batch, one DDP forward per step.

The kept logits are every process's, gathered in rank order each step (one all-gather of n x K
floats), so the state is the same on every process and one checkpoint (`last.pt`, also a
mid-epoch one) resumes them all bitwise. train/top1 and the image counts are of the new images
only: each image counts once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from sdrun.batches import PREVIOUS_BATCH, Batch
from sdrun.checks import positive
from sdrun.config import Config, MethodSettings
from sdrun.errors import CheckpointError
from sdrun.methods.base import MethodOutput, RunShape, Teacher
from sdrun.methods.registry import register_method
from sdrun.methods.selfkd import SelfDistillation
from sdrun.methods.selfkd_losses import dlb_loss
from sdrun.runfolder.distributed import gather_equal_rows, rank

RESUME_FIX = "resume the run from its own folder, with the data and processes it started with"


@dataclass
class DlbSettings(MethodSettings):
    """T 3, alpha 1: what a third-party CIFAR-100 run script of the official dlb.py passes
    (Meta-knowledge-Lab/DLB's dlb.py declares --T and --alpha without defaults; the paper's
    values are unverified: docs/SELFKD.md says which source says what)."""

    name: str = "dlb"
    temperature: float = 3.0  # T of both sides of the KL (--T)
    kd_weight: float = 1.0  # weight of the KL, the paper's alpha (--alpha)

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        positive("distill.temperature", self.temperature)
        positive("distill.kd_weight", self.kd_weight, allow_zero=True)


@register_method
class LastBatchSelfKD(SelfDistillation):
    settings = DlbSettings
    terms = ("ce", "kd")
    batches = PREVIOUS_BATCH

    num_classes: int = 0
    train_size: int = 0
    device: torch.device = torch.device("cpu")
    logits: Optional[Tensor] = None  # the last step's new images' logits, all processes'
    index: Optional[Tensor] = None  # their dataset indices
    check_next: bool = False  # after a resume: the first step checks the repeated images

    def prepare(self, run: RunShape) -> None:
        self.num_classes, self.train_size = run.num_classes, run.train_size
        self.device = run.device

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        x, y, index = batch.images, batch.labels, batch.indices
        rep_x, rep_y, rep_index = batch.partners  # the previous batch's images, seen anew
        n = rep_x.shape[0]
        logits = student(torch.cat([rep_x, x]) if n else x)
        prev = self.teacher_logits(rep_index) if n else None
        loss = dlb_loss(logits, torch.cat([rep_y, y]), n, prev, self.cfg.temperature,
                        self.cfg.kd_weight)  # fmt: skip
        new = logits[n:]
        self.logits = gather_equal_rows(new.detach().float())
        self.index = gather_equal_rows(index)
        return MethodOutput(loss.total, new, y, loss.terms)

    def teacher_logits(self, rep_index: Tensor) -> Tensor:
        """This process's rows of the kept logits: those of the images the batch repeats."""
        n = rep_index.shape[0]
        mine = slice(rank() * n, (rank() + 1) * n)
        if self.logits is None or self.index is None or self.index[mine].shape[0] != n:
            rows = None if self.logits is None else self.logits.shape[0]
            raise CheckpointError(
                f"dlb repeats {n} images per process but holds {rows} kept logits; {RESUME_FIX}"
            )
        if self.check_next:  # once per resume: a host sync
            self.check_next = False
            if not torch.equal(self.index[mine], rep_index):
                raise CheckpointError(
                    f"dlb's saved logits are of other images than this step repeats; {RESUME_FIX}"
                )
        return self.logits[mine]

    def state_dict(self) -> dict[str, Any]:
        if self.logits is None:
            return {}
        return {"logits": self.logits.cpu(), "index": self.index.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        logits, index = state.get("logits"), state.get("index")
        if not (
            isinstance(logits, Tensor)
            and isinstance(index, Tensor)
            and logits.dtype == torch.float32
            and logits.dim() == 2
            and logits.shape[1] == self.num_classes
            and index.dtype == torch.int64
            and index.shape == logits.shape[:1]
            and bool(((index >= 0) & (index < self.train_size)).all())
        ):
            raise CheckpointError(
                f"dlb's saved logits are not rows of {self.num_classes} classes for images of "
                f"this training set ({self.train_size}); {RESUME_FIX}"
            )
        self.logits, self.index = logits.to(self.device), index.to(self.device)
        self.check_next = True
