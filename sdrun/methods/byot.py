"""Be Your Own Teacher (Zhang et al., "Be Your Own Teacher: Improve the Performance of
Convolutional Neural Networks via Self Distillation", ICCV 2019): a classifier on every stage of
the student after the stem (sdrun/methods/byot_heads.py), each taught by the deepest one,

    CE(z_C, y) + sum_i [(1 - alpha) CE(z_i, y) + alpha T^2 KL(q_C^T || q_i^T)
                        + feature_weight * mean_b ||F_i - F_C||^2],

with z_C and F_C detached (sdrun/methods/selfkd_losses.py::byot_loss; docs/SELFKD.md).

The heads train with the student (`training_module`: the optimizer, DDP and torch.compile take
the student with its heads) but are not part of it: the checkpoint's model, the evaluation, the
exported student and the parameter count are the student's alone. Their weights are the
method's state, in `checkpoints/last.pt` under "method", so a resume continues bitwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import Tensor, nn

from sdrun.batches import Batch
from sdrun.checks import positive, unit
from sdrun.config import Config, MethodSettings
from sdrun.errors import CheckpointError
from sdrun.methods.base import MethodOutput, RunShape, Teacher
from sdrun.methods.byot_heads import AuxiliaryHeads, SelfTaught, stages_of
from sdrun.methods.registry import register_method
from sdrun.methods.selfkd import SelfDistillation
from sdrun.methods.selfkd_losses import byot_loss

PREFIX = "heads."  # the heads' tensors in the method's state: heads.<name in AuxiliaryHeads>


@dataclass
class ByotSettings(MethodSettings):
    """luanyunteng/pytorch-be-your-own-teacher train.py (docs/SELFKD.md)."""

    name: str = "byot"
    alpha: float = 0.1  # weight of each head's KL to the deepest classifier ((1 - alpha): CE)
    temperature: float = 3.0  # T of both sides of those KLs
    # Weight of the squared L2 distance of each head's feature to the deepest's, summed per
    # image and averaged over the batch: the source's 1e-6, summed over a batch of 128.
    feature_weight: float = 1.28e-4

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        unit("distill.alpha", self.alpha)
        positive("distill.temperature", self.temperature)
        positive("distill.feature_weight", self.feature_weight, allow_zero=True)


@register_method
class BeYourOwnTeacher(SelfDistillation):
    settings = ByotSettings
    terms = ("ce", "ce_aux", "kd", "feat")

    num_classes: int = 0
    heads: Optional[AuxiliaryHeads] = None

    def prepare(self, run: RunShape) -> None:
        self.num_classes = run.num_classes

    def training_module(self, model: nn.Module) -> nn.Module:
        stages = stages_of(model)  # refuses a model without stages to put heads on
        self.heads = AuxiliaryHeads(stages, self.num_classes)
        return SelfTaught(model, self.heads, stages)

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        x, y = batch.images, batch.labels
        out = student(x)  # the SelfTaught module: every classifier's logits and feature
        c = self.cfg
        loss = byot_loss(out.logits, out.features, y, c.alpha, c.temperature, c.feature_weight)
        return MethodOutput(loss.total, out.logits[-1], y, loss.terms)

    def state_dict(self) -> dict[str, Any]:
        return {PREFIX + k: v.detach().cpu() for k, v in self._heads().state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        heads = self._heads()
        own = heads.state_dict()
        missing = sorted(PREFIX + k for k in own if PREFIX + k not in state)
        unexpected = sorted(k for k in state if k.removeprefix(PREFIX) not in own)
        if missing or unexpected:
            what = f"lack {missing[0]!r}" if missing else f"hold {unexpected[0]!r}"
            raise CheckpointError(
                f"byot's saved heads {what} ({len(missing)} missing, {len(unexpected)} "
                "unexpected): the checkpoint was not written by a byot run of this model; "
                "resume from the run's own folder"
            )
        for name, want in own.items():
            got = state[PREFIX + name]
            if not isinstance(got, Tensor) or got.shape != want.shape or got.dtype != want.dtype:
                shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
                raise CheckpointError(
                    f"byot's saved {PREFIX + name} is {shape}, this run's is "
                    f"{tuple(want.shape)} {want.dtype}; resume the run with the model it "
                    "started with"
                )
        # In place (nn.Module.load_state_dict copies): the optimizer holds these parameters.
        heads.load_state_dict({name: state[PREFIX + name] for name in own})

    def _heads(self) -> AuxiliaryHeads:
        if self.heads is None:
            raise RuntimeError("byot: training_module() builds the heads before they are used")
        return self.heads
