"""Published CIFAR-100 top-1 accuracies, with the recipe each was measured with.

A reference is shown next to a row of the same dataset, network and method, together with
every way the row's recipe differs from the reference's: a 2-epoch smoke run is not the
published 240-epoch baseline, and the table says so instead of implying it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

SD_PAPER = (
    "Yang et al., Snapshot Distillation: Teacher-Student Optimization in One Generation, "
    "CVPR 2019, as read in Gou et al., Knowledge Distillation: A Survey, IJCV 2021"
)
CRD = "Tian et al., Contrastive Representation Distillation, ICLR 2020 (CRD benchmark)"
# The CRD benchmark's training recipe for its CIFAR-100 baselines: 240 epochs, SGD with
# momentum 0.9, LR 0.05 at batch 64, x0.1 at epochs 150, 180 and 210, weight decay 5e-4.
CRD_RECIPE: dict[str, Any] = {
    "schedule.name": "step",
    "schedule.epochs": 240,
    "schedule.milestones": (150 / 240, 180 / 240, 210 / 240),
    "schedule.gamma": 0.1,
    "schedule.warmup_epochs": 0,
    "optim.name": "sgd",
    "optim.lr": 0.05,
    "optim.momentum": 0.9,
    "optim.weight_decay": 5e-4,
    "dataset.batch_size": 64,
}


@dataclass(frozen=True)
class Reference:
    dataset: str
    model: str
    method: str
    top1: float  # published top-1 accuracy (%)
    source: str
    recipe: Optional[dict[str, Any]] = field(default=None, hash=False)  # None: not given

    @property
    def err(self) -> float:
        return round(100.0 - self.top1, 2)


REFERENCES = (
    Reference("cifar100", "resnet32", "step", 68.39, f"{SD_PAPER}: baseline"),
    Reference("cifar100", "resnet32", "sd", 71.29, SD_PAPER),
    Reference("cifar100", "resnet20", "step", 69.06, CRD, CRD_RECIPE),
    Reference("cifar100", "resnet32", "step", 71.14, CRD, CRD_RECIPE),
    Reference("cifar100", "resnet56", "step", 72.34, CRD, CRD_RECIPE),
    Reference("cifar100", "resnet110", "step", 74.31, CRD, CRD_RECIPE),
)


def recipe_differences(reference: Reference, settings: Mapping[str, Any]) -> list[str]:
    """How a row's settings differ from the reference's recipe (`key: row vs published`)."""
    if reference.recipe is None:
        return ["the source read gives no training recipe: not checked"]
    out = []
    for key, published in reference.recipe.items():
        have = settings.get(key)
        if not _same(have, published):
            out.append(f"{key}: {_fmt(have)} vs {_fmt(published)}")
    return out


def references_for(
    dataset: str, model: str, method: str, settings: Mapping[str, Any]
) -> list[tuple[Reference, list[str]]]:
    """The published values for a row, each with how the row's recipe differs from it."""
    return [
        (ref, recipe_differences(ref, settings))
        for ref in REFERENCES
        if (ref.dataset, ref.model, ref.method) == (dataset, model, method)
    ]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return a == b


def _fmt(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "unset" if value is None else str(value)
