"""Progressive self-knowledge distillation (Kim et al., "Self-Knowledge Distillation with
Progressive Refinement of Targets", ICCV 2021): each image's target mixes its label with the
model's own prediction for that image in the previous epoch,

    q = (1 - alpha_t) * onehot(y) + alpha_t * p_{t-1}(x),   alpha_t = alpha_T * t / T,

trained with the soft cross-entropy (sdrun/methods/selfkd_losses.py: `pskd_targets`,
`pskd_loss`). As the official code
(lgcnsai/PS-KD-Pytorch), the stored prediction is softmax of the very forward that is trained
on (that step's crop), found by the image's dataset index; the first epoch is plain CE.

The predictions live on the device in two N x K tables: `latest` (written as images are
trained on) and `previous` (a copy of `latest` taken when an epoch starts, the one read). An
image the sampler left out of an epoch (a dropped last batch) keeps its older prediction; one
never trained on yet gets its label. Under torchrun every process writes every process's
predictions of each step (one all-gather), so the tables are the same everywhere, and a
checkpoint (`last.pt`, also mid-epoch) holds both: a resume continues bitwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from sdrun.batches import INDICES, Batch
from sdrun.checks import unit
from sdrun.config import Config, MethodSettings
from sdrun.errors import CheckpointError
from sdrun.methods.base import MethodOutput, RunShape, Teacher
from sdrun.methods.registry import register_method
from sdrun.methods.selfkd import SelfDistillation
from sdrun.methods.selfkd_losses import pskd_alpha, pskd_loss, pskd_store_probs, pskd_targets
from sdrun.runfolder.distributed import gather_equal_rows


@dataclass
class PskdSettings(MethodSettings):
    """lgcnsai/PS-KD-Pytorch main.py's default and its README's CIFAR-100 commands."""

    name: str = "pskd"
    alpha_T: float = 0.8  # weight of the previous epoch's prediction in the last epoch

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        unit("distill.alpha_T", self.alpha_T)


@register_method
class ProgressiveSelfKD(SelfDistillation):
    settings = PskdSettings
    terms = ("ce",)
    batches = INDICES

    epochs: int = 1
    epoch: int = 0  # the epoch `previous` was copied for (0: none started)
    alpha: float = 0.0
    previous: Optional[Tensor] = None
    latest: Optional[Tensor] = None

    def prepare(self, run: RunShape) -> None:
        self.epochs = run.epochs
        shape = (run.train_size, run.num_classes)
        # Zero rows: no prediction yet (a softmax row sums to 1).
        self.latest = torch.zeros(shape, dtype=torch.float32, device=run.device)
        self.previous = torch.zeros_like(self.latest)

    def start_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a resumed partial epoch keeps the copy it started with
            self.previous.copy_(self.latest)
            self.epoch = epoch
        self.alpha = pskd_alpha(epoch - 1, self.epochs, self.cfg.alpha_T)

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        x, y, index = batch.images, batch.labels, batch.indices
        logits = student(x)
        loss = pskd_loss(logits, pskd_targets(y, self.previous[index], self.alpha), y)
        probs = pskd_store_probs(logits)
        # Training shards are the same size on every process and disjoint (the sampler drops
        # the remainder), so every image gets exactly one write.
        self.latest[gather_equal_rows(index)] = gather_equal_rows(probs)
        return MethodOutput(loss.total, logits, y, loss.terms)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "previous": self.previous.cpu(), "latest": self.latest.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        for name in ("previous", "latest"):
            got = state.get(name)
            if not isinstance(got, Tensor) or got.shape != self.latest.shape:
                shape = None if not isinstance(got, Tensor) else tuple(got.shape)
                raise CheckpointError(
                    f"pskd's saved {name} predictions are {shape}, this run needs "
                    f"{tuple(self.latest.shape)} (train images x classes); resume the run with "
                    "the data it started with"
                )
        epoch = state.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= self.epochs:
            raise CheckpointError(
                f"pskd's saved epoch is {epoch!r}, not an epoch of this run (0..{self.epochs}); "
                "the checkpoint was not written by this run: resume from the run's own folder"
            )
        self.epoch = epoch
        self.previous.copy_(state["previous"])
        self.latest.copy_(state["latest"])
