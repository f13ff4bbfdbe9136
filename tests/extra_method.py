"""A training method that only the tests have (tests/test_methods.py): all that a new method
is, in this one module. Importing it registers the method, its settings (`distill.beta`) as
the option `distill=beta_test`, and its default schedule; nothing else is written for it.

Cross-entropy plus beta times the squared mean logit (a small penalty, so the run trains),
counting its steps as state that a checkpoint keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch.nn.functional as F
from torch import nn

from sdrun.batches import Batch
from sdrun.checks import positive
from sdrun.config import Config
from sdrun.methods import MethodOutput, MethodSettings, register_method
from sdrun.methods.base import Teacher
from sdrun.methods.selfkd import SelfDistillation


@dataclass
class BetaSettings(MethodSettings):
    """The test method's settings."""

    name: str = "beta_test"
    beta: float = 0.5  # weight of the squared mean logit

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        positive("distill.beta", self.beta, allow_zero=True)


@register_method
class BetaPenalty(SelfDistillation):
    settings = BetaSettings
    terms = ("ce", "mean_logit")
    loaded: ClassVar[list[dict]] = []  # what resumes gave back, for the tests to read

    steps: int = 0

    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        logits = student(batch.images)
        ce = F.cross_entropy(logits.float(), batch.labels)
        mean = logits.float().mean()
        self.steps += 1
        terms = {"ce": ce.detach(), "mean_logit": mean.detach()}
        return MethodOutput(ce + self.cfg.beta * mean**2, logits, batch.labels, terms)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        BetaPenalty.loaded.append(state)
        self.steps = state["steps"]
