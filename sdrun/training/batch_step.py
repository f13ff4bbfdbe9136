"""The per-batch contract of the epoch loop (engine.py): a `BatchStep` runs the model on
one batch and returns a `StepOutput`: the loss, the batch's size, the named loss terms to log as
`train/<name>` and counts (such as correct predictions). A classification method's step is
sdrun/methods/base.py's `MethodStep`; sdrun-transfer's tasks use `LossStep`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn


@dataclass
class StepOutput:
    """One batch's contribution, as a `BatchStep` returns it to the loop."""

    loss: Tensor  # the scalar to backpropagate
    size: int  # images in the batch: weights the loss and terms in the epoch's means
    # Named loss terms (detached scalars), logged as `train/<name>` epoch means. A term the
    # step leaves out of a batch counts 0; one left out of every batch of the epoch is None.
    terms: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, Tensor] = field(default_factory=dict)  # summed as they are (correct, ...)


class BatchStep(Protocol):
    """The loss of one batch: what the loop calls, under autocast, for every training batch."""

    terms: tuple[str, ...]  # every name it may return in StepOutput.terms (fixed for a run)
    counts: tuple[str, ...]  # every name of StepOutput.counts (always returned)

    def __call__(self, batch: Any) -> StepOutput: ...


class LossStep:
    """A `BatchStep` from a function `loss(model, batch) -> (loss, images)` that logs no
    terms: sdrun-transfer's detection and segmentation losses."""

    terms: tuple[str, ...] = ()
    counts: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, Any], tuple[Tensor, int]]):
        self.model = model
        self.loss = loss

    def __call__(self, batch: Any) -> StepOutput:
        loss, images = self.loss(self.model, batch)
        return StepOutput(loss, images)
