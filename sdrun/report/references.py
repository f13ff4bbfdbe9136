"""Published CIFAR-100 top-1 accuracies, with the recipe each was measured with.

A reference is shown next to a row of the same dataset, network and method, together with
every way the row's recipe differs from the reference's: a 2-epoch smoke run is not the
published 240-epoch baseline, and the table says so instead of implying it.

The self-distillation methods' sources (docs/SELFKD.md) publish CIFAR-100 numbers only for
networks sdrun does not train (PreAct ResNet-18, MobileNetV2, ...): those references have no
sdrun `model` and are listed under a table beside its rows of the same method
(`other_networks`), again with how the recipe differs. Only numbers read from an official
repository are here; a paper's table not read (CS-KD's, DLB's) is not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from sdrun.report.identity import method_reads

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


# The self-distillation sources' recipes (docs/SELFKD.md), in sdrun's keys. Tf-KD's official
# code (yuanli2333/Teacher-free-Knowledge-Distillation main.py, train_kd.py): 200 epochs, batch
# 128, SGD momentum 0.9, weight decay 5e-4, LR 0.1 after one linear warm-up epoch, x0.2 at
# epochs 60, 120 and 160; random rotation of up to 15 degrees besides crop and flip.
TFKD_RECIPE: dict[str, Any] = {
    "schedule.name": "step",
    "schedule.epochs": 200,
    "schedule.milestones": (60 / 200, 120 / 200, 160 / 200),
    "schedule.gamma": 0.2,
    "schedule.warmup_epochs": 1,
    "optim.name": "sgd",
    "optim.lr": 0.1,
    "optim.momentum": 0.9,
    "optim.weight_decay": 5e-4,
    "optim.nesterov": False,
    "dataset.batch_size": 128,
}
# PS-KD's main.py defaults and README (lgcnsai/PS-KD-Pytorch): 300 epochs, batch 128, SGD
# momentum 0.9 with Nesterov, weight decay 5e-4, LR 0.1 x0.1 at epochs 150 and 225.
PSKD_RECIPE: dict[str, Any] = {
    "schedule.name": "step",
    "schedule.epochs": 300,
    "schedule.milestones": (150 / 300, 225 / 300),
    "schedule.gamma": 0.1,
    "schedule.warmup_epochs": 0,
    "optim.name": "sgd",
    "optim.lr": 0.1,
    "optim.momentum": 0.9,
    "optim.weight_decay": 5e-4,
    "optim.nesterov": True,
    "dataset.batch_size": 128,
}
TFKD = (
    "Yuan et al., Revisiting Knowledge Distillation via Label Smoothing Regularization, "
    "CVPR 2020: the Tf-KD_reg table as in the official repository "
    "(yuanli2333/Teacher-free-Knowledge-Distillation, figures/Reg-Normal-LSR.png)"
)
PSKD = (
    "Kim et al., Self-Knowledge Distillation with Progressive Refinement of Targets, ICCV 2021: "
    "the CIFAR-100 table of the official README (lgcnsai/PS-KD-Pytorch), printed as top-1 error"
)
BEST_EPOCH = "best test epoch (the official code's)"
# RepDistiller (the CRD benchmark's code, train_teacher.py) saves and reports `best_acc`, the
# best test accuracy of any epoch.
CRD_SELECTION = "best test epoch (RepDistiller's best_acc)"
UNSTATED = "not stated in the source read"
SD_BASELINE_PLACEMENT = (
    "placed beside step by assumption: the source read names no schedule for this baseline"
)
BEST_CHECKPOINT = "best checkpoint on the test set (the official code's)"
ROTATION = "augmentation: crop + flip vs crop + flip + random rotation up to 15 degrees"
# Tf-KD's my_loss_function.py::loss_label_smoothing, which produced the LS column, hard-codes
# eps 0.1 (its `alpha`) and puts eps/(K-1) off the label, 1 - eps on it.
TFKD_LS_EPS = 0.1
TFKD_LS = (
    "ls: the Tf-KD code's label smoothing puts eps/(K-1) off the label and 1 - eps on it "
    "(sdrun: eps/K everywhere, so the label's target is 1 - eps + eps/K)"
)
PSKD_TABLE = (
    "recipe: PS-KD's own; the table's other columns are taken to share it (paper, unverified), "
    "their method settings are not in the sources read"
)


@dataclass(frozen=True)
class Reference:
    dataset: str
    model: Optional[str]  # sdrun's name of the network; None: a network sdrun does not train
    method: str
    top1: float  # published top-1 accuracy (%)
    source: str
    recipe: Optional[dict[str, Any]] = field(default=None, hash=False)  # None: not given
    network: str = ""  # the source's network, when sdrun does not train it
    column: str = ""  # the source's name of the method (its table's column)
    selection: Optional[str] = None  # which epoch it reports (UNSTATED when the source does
    # not say; None: the final one)
    notes: tuple[str, ...] = ()  # differences no setting records (augmentation, loss variant)
    placement: Optional[str] = None  # why it stands beside this method, when that is assumed

    @property
    def err(self) -> float:
        return round(100.0 - self.top1, 2)


def _tfkd(
    network: str,
    ce: float,
    ls: float,
    tfkd: float,
    alpha: float,
    temperature: float,
    multiplier: float,
    batch: int = 128,
) -> list[Reference]:
    """One network's row of Tf-KD's table: CE (beside sdrun's `cosine`), LS and Tf-KD_reg, with
    that network's official params.json values and batch (the LR scaled by batch / 128)."""
    base = {**TFKD_RECIPE, "dataset.batch_size": batch, "optim.lr": 0.1 * batch / 128}
    own = {"distill.alpha": alpha, "distill.temperature": temperature,
           "distill.multiplier": multiplier}  # fmt: skip
    kw: dict[str, Any] = {"network": network, "selection": BEST_EPOCH}
    return [
        Reference("cifar100", None, "cosine", ce, TFKD, base, column="CE", notes=(ROTATION,),
                  **kw),
        Reference("cifar100", None, "ls", ls, TFKD, {**base, "distill.eps": TFKD_LS_EPS},
                  column="LS", notes=(ROTATION, TFKD_LS), **kw),
        Reference("cifar100", None, "tfkd", tfkd, TFKD,
                  {**base, **own, "distill.correct_prob": 0.99}, column="Tf-KD_reg",
                  notes=(ROTATION,), **kw),
    ]  # fmt: skip


def _pskd(
    network: str, ce: float, ls: float, tfkd: float, cskd: float, pskd: float
) -> list[Reference]:
    """One network's row of PS-KD's table (accuracy = 100 - the printed error)."""
    kw: dict[str, Any] = {"network": network, "selection": BEST_CHECKPOINT}
    others = {"notes": (PSKD_TABLE,), **kw}
    return [
        Reference("cifar100", None, "cosine", ce, PSKD, PSKD_RECIPE, column="CE", **others),
        Reference("cifar100", None, "ls", ls, PSKD, PSKD_RECIPE, column="LS", **others),
        Reference("cifar100", None, "tfkd", tfkd, PSKD, PSKD_RECIPE, column="TF-KD", **others),
        Reference("cifar100", None, "cskd", cskd, PSKD, PSKD_RECIPE, column="CS-KD", **others),
        Reference("cifar100", None, "pskd", pskd, PSKD, {**PSKD_RECIPE, "distill.alpha_T": 0.8},
                  column="PS-KD", **kw),
    ]  # fmt: skip


REFERENCES = (
    Reference(
        "cifar100",
        "resnet32",
        "step",
        68.39,
        f"{SD_PAPER}: baseline",
        selection=UNSTATED,
        placement=SD_BASELINE_PLACEMENT,
    ),
    Reference("cifar100", "resnet32", "sd", 71.29, SD_PAPER, selection=UNSTATED),
    Reference("cifar100", "resnet20", "step", 69.06, CRD, CRD_RECIPE, selection=CRD_SELECTION),
    Reference("cifar100", "resnet32", "step", 71.14, CRD, CRD_RECIPE, selection=CRD_SELECTION),
    Reference("cifar100", "resnet56", "step", 72.34, CRD, CRD_RECIPE, selection=CRD_SELECTION),
    Reference("cifar100", "resnet110", "step", 74.31, CRD, CRD_RECIPE, selection=CRD_SELECTION),
    # docs/SELFKD.md, "Published CIFAR-100 numbers": the sources' own CIFAR networks
    *_tfkd("ResNet-18", 75.87, 77.26, 77.36, 0.1, 20.0, 100.0),  # alpha, T, multiplier
    *_tfkd("MobileNetV2", 68.38, 69.32, 70.88, 0.95, 40.0, 1.0),
    *_tfkd("ShuffleNetV2", 70.34, 70.83, 72.09, 0.95, 10.0, 1.0),
    *_tfkd("GoogLeNet", 78.15, 79.07, 79.22, 0.1, 40.0, 50.0, batch=64),
    *_pskd("PreAct ResNet-18", 75.82, 79.06, 77.12, 78.70, 79.18),
    *_pskd("PreAct ResNet-101", 79.25, 80.16, 79.87, 79.24, 80.57),
    *_pskd("DenseNet-121", 79.95, 80.20, 80.12, 79.53, 81.27),
    *_pskd("ResNeXt-29", 81.35, 82.40, 82.67, 81.74, 82.72),
    *_pskd("PyramidNet-200", 83.20, 82.18, 83.52, 81.69, 84.51),
)


def setting_differences(reference: Reference, settings: Mapping[str, Any]) -> list[str]:
    """How a row's settings differ from the reference's recipe (`key: row vs published`). A
    key the row's method does not read (a cosine row has no milestones) is left out: its
    `schedule.name` already differs."""
    if reference.recipe is None:
        return ["the source read gives no training recipe: not checked"]
    out = []
    for key, published in reference.recipe.items():
        have = settings.get(key)
        if have is None and key not in settings and not method_reads(settings, key):
            continue
        if not _same(have, published):
            out.append(f"{key}: {_fmt(have)} vs {_fmt(published)}")
    return out


def selection_line(reference: Reference) -> Optional[str]:
    """Which epoch the published value is of, against this table's final epoch."""
    if reference.selection is None:
        return None
    if reference.selection == UNSTATED:
        return f"selection: final epoch vs {UNSTATED} (it may be a best epoch)"
    return f"selection: final epoch vs {reference.selection}; compare the best-epoch column"


def recipe_differences(reference: Reference, settings: Mapping[str, Any]) -> list[str]:
    """How a row differs from the reference: its settings, then the epoch the source reports,
    why the reference stands beside this method when that is assumed, and what no setting
    records."""
    out = setting_differences(reference, settings)
    extra = (selection_line(reference), reference.placement)
    return out + [line for line in extra if line] + list(reference.notes)


def references_for(
    dataset: str, model: str, method: str, settings: Mapping[str, Any]
) -> list[tuple[Reference, list[str]]]:
    """The published values for a row, each with how the row's recipe differs from it."""
    return [
        (ref, recipe_differences(ref, settings))
        for ref in REFERENCES
        if (ref.dataset, ref.model, ref.method) == (dataset, model, method)
    ]


def other_networks(dataset: str, methods: Collection[str]) -> list[Reference]:
    """The published values of these methods on networks sdrun does not train."""
    return [
        ref
        for ref in REFERENCES
        if ref.model is None and ref.dataset == dataset and ref.method in methods
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
