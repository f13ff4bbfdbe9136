"""What a training method is to sdrun (`Method`), and the per-batch step the epoch loop calls
for one (`MethodStep`).

A method declares, as class attributes, everything the run does for it, so that the loop, the
runner and the report never ask which method runs:

- `settings`: its `distill` group, a dataclass of its own keys with its sources' defaults and
  a one-line meaning each (a `MethodSettings`, whose `name` default is the method's name, and
  whose `check` refuses values and combinations it cannot run). Registered as the option
  `distill=<name>`; its keys are what the method's numbers depend on, so what the report's row
  identity uses (sdrun/report/identity.py);
- `schedule`: the `schedule` group option `distill=<name>` brings (the self-distillation
  family: cosine, the schedule the docs compare it on; None: the config's default);
- `terms`: the loss terms it logs (`train/<term>` in metrics.jsonl, epoch means; each term means
  the same for every method, docs/SELFKD.md);
- `teacher`: what teaches it: `SNAPSHOT` (the student at each cycle end teaches the next
  cycle), `FILE` (a finished model, `distill.teacher_checkpoint`, teaches every epoch) or None;
- `batches`: what it asks the loaders for (`sdrun.batches`): a shuffled batch by
  default, or with each sample's dataset index (per-sample state), or partners;
- `label`: what the report and wandb call its rows;

and implements `forward_train` (the student's logits and the loss of one batch) and, when it
keeps state between steps,
`prepare` (the run's shape, once, before a resume restores the state), `start_epoch` (before
each epoch, also a resumed one) and `state_dict`/`load_state_dict` (stored in
`checkpoints/last.pt`, restored on resume). A method that trains modules of its own beside the
student (byot's auxiliary classifiers) returns the student with them from `training_module`:
the optimizer, DDP and torch.compile take that module, and `forward_train` is given it, while
the plain student alone is checkpointed as the model, evaluated, exported and counted.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn

from sdrun.batches import SHUFFLED, Batch, Composition
from sdrun.config import MethodSettings
from sdrun.training.batch_step import StepOutput

SNAPSHOT = "snapshot"  # the student's weights at each cycle end teach the next cycle
FILE = "file"  # a saved model (distill.teacher_checkpoint) teaches from the first epoch

Teacher = Callable[[Tensor], Tensor]  # images -> fp32 logits, no graph (training/frozen_teacher.py)


@dataclass(frozen=True)
class RunShape:
    """What a method with per-sample or per-epoch state needs to know of the run."""

    train_size: int  # samples of the training split: dataset indices are 0..train_size-1
    num_classes: int
    epochs: int
    device: torch.device


@dataclass
class MethodOutput:
    loss: Tensor  # what is backpropagated
    logits: Tensor  # the student's, scored against `targets` for train/top1
    targets: Tensor
    terms: dict[str, Tensor]  # detached scalars, a subset of the method's `terms`


class Method(abc.ABC):
    """A training method (see the module docstring). Subclass it in one module of
    sdrun/methods/ (or any module imported before the config is composed) and register it with
    `@register_method`."""

    name: ClassVar[str] = ""  # set by register_method: its settings' name
    settings: ClassVar[type[MethodSettings]] = MethodSettings
    schedule: ClassVar[Optional[str]] = None
    terms: ClassVar[tuple[str, ...]] = ("ce",)
    teacher: ClassVar[Optional[str]] = None
    batches: ClassVar[Composition] = SHUFFLED

    def __init__(self, cfg: MethodSettings) -> None:
        self.cfg = cfg

    @classmethod
    def label(cls, schedule: str) -> str:
        """What the report and wandb call a run of this method with `schedule`."""
        return cls.name

    @abc.abstractmethod
    def forward_train(
        self, student: nn.Module, batch: Batch, teacher: Optional[Teacher]
    ) -> MethodOutput:
        """One training batch: the student's forward pass and the loss (under autocast).
        `student` is what `training_module` returned, DDP-wrapped or compiled when asked."""

    def prepare(self, run: RunShape) -> None:
        """Called once the data and the device are known, before a resume's `load_state_dict`."""
        return None  # optional hook: nothing to do by default

    def training_module(self, model: nn.Module) -> nn.Module:
        """What the loop trains: the student, or the student with what the method adds.

        Called once, after `prepare`, with the student on the run's device; the returned module
        is moved to the device and memory format too, and the optimizer, DDP and torch.compile
        take it. `forward_train` is given it (wrapped). Its parameters beyond the student's
        belong in `state_dict`: the checkpoint's model is the student alone."""
        return model

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (1-based), also before a resumed partial one."""
        return None  # optional hook: nothing to do by default

    def state_dict(self) -> dict[str, Any]:
        """State kept between steps, for the checkpoint (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict` returned, on resume."""
        return None  # optional hook: nothing to do by default


class MethodStep:
    """The epoch loop's per-batch step for a classification method: its loss and terms, and
    the correct predictions that make train/top1."""

    counts = ("correct",)

    def __init__(self, method: Method, student: nn.Module, teacher: Optional[Teacher]) -> None:
        self.method = method
        self.student = student
        self.teacher = teacher
        self.terms = method.terms

    def __call__(self, batch: Batch) -> StepOutput:
        out = self.method.forward_train(self.student, batch, self.teacher)
        correct = out.logits.detach().argmax(dim=1).eq(out.targets).sum()
        return StepOutput(out.loss, out.targets.shape[0], out.terms, {"correct": correct})
