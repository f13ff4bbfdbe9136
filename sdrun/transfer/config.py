"""The `sdrun-transfer` schema: the dataclasses Hydra composes `conf/transfer.yaml` into, and
the checks run before anything is built.

Keys shared with `sdrun` keep their names and meaning (`dataset.root`, `dataset.batch_size`
(global), `schedule.epochs`, `optim.*`, `trainer.*`, `logger.*`, `seed`, `resume`); the
`optim`, `trainer` and `logger` nodes are sdrun's own dataclasses. The task's recipe
(`conf/task/<task>.yaml`) sets `task`, `dataset`, `schedule` and `optim` together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

from sdrun.checks import check_seed, choice, positive
from sdrun.config import LoggerConfig, OptimConfig, TrainerConfig, validate_shared
from sdrun.errors import ConfigError
from sdrun.transfer.schedule import KINDS

TASKS = ("detection", "segmentation")
DETECTION_YEARS = (2007, 2012)  # VOC years with detection trainval splits
OUTPUT_STRIDES = (8, 16, 32)
BACKBONE_FORMS = "an sdrun run directory, a checkpoint .pt, timm:<model> or scratch:<model>"


@dataclass
class VOCConfig:
    name: str = "voc"
    # Folder holding VOCdevkit/VOC2007 and VOCdevkit/VOC2012 (and SBD/ for segmentation).
    root: str = "data"
    download: bool = True
    batch_size: int = 16  # global, split over the processes
    eval_batch_size: int = 8  # global
    limit_train: Optional[int] = None
    limit_test: Optional[int] = None
    # Detection: shorter image side after resizing; segmentation: the square training crop.
    image_size: int = 600
    max_size: int = 1000  # detection: cap on the longer side
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])  # segmentation
    # Segmentation: add SBD's augmented training masks (null: when <root>/SBD holds them).
    sbd: Optional[bool] = None
    # Detection: the VOC years whose trainval trains ("07+12"; [2007] for VOC2007 alone).
    years: list[int] = field(default_factory=lambda: list(DETECTION_YEARS))
    num_workers: int = 8


@dataclass
class TaskConfig:
    name: str = "detection"
    # Backbone feature levels (timm features_only indices); null: the task's choice.
    out_indices: Optional[list[int]] = None
    freeze_bn: bool = True  # BatchNorm of the backbone frozen (statistics and affine)
    freeze_at: int = 2  # feature levels (from the stem) whose weights stay frozen
    # Detection
    fpn_channels: int = 256
    rois_per_image: int = 512  # proposals sampled per image for the box head's loss
    anchor_scale: float = 8.0  # anchor size of a level = anchor_scale x its stride
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # Segmentation
    output_stride: Optional[int] = 8  # dilate the backbone where timm supports it
    aux_loss: bool = False  # an FCN head on the second-last level, weight 0.5


@dataclass
class FinetuneScheduleConfig:
    name: str = "step"  # step | poly
    epochs: int = 12
    warmup_iters: int = 500
    milestones: list[float] = field(default_factory=lambda: [0.75])  # step: fractions of the run
    gamma: float = 0.1
    power: float = 0.9  # poly
    eval_every: int = 1  # epochs between test-set evaluations (the last epoch always)


@dataclass
class TransferConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    dataset: VOCConfig = field(default_factory=VOCConfig)
    schedule: FinetuneScheduleConfig = field(default_factory=FinetuneScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # What to fine-tune: see BACKBONE_FORMS.
    backbone: Optional[str] = None
    # The timm model of a plain state_dict given as backbone= (a file without sdrun's config).
    backbone_model: Optional[str] = None
    # Fine-tune a run that did not finish (killed, stopped, diverged); labelled <method>@epoch<k>.
    backbone_allow_incomplete: bool = False
    seed: int = 0
    resume: Optional[str] = None


def register_configs() -> None:
    ConfigStore.instance().store(name="transfer_schema", node=TransferConfig)


def _check_years(task: str, years: list[int]) -> None:
    if task != "detection":
        if sorted(years) != list(DETECTION_YEARS):
            raise ConfigError(
                f"dataset.years={years} is a detection setting; segmentation trains on VOC2012 "
                "train (+SBD): drop the override"
            )
        return
    if not years or len(set(years)) != len(years) or not set(years) <= set(DETECTION_YEARS):
        raise ConfigError(
            f"dataset.years={years} must be distinct VOC years from 2007, 2012, e.g. [2007] "
            "(VOC2007 trainval alone) or [2007,2012] (07+12, the default)"
        )


def validate(cfg: TransferConfig) -> None:
    """Check values the schema's types cannot; raise ConfigError naming the first bad key."""
    d, t, s = cfg.dataset, cfg.task, cfg.schedule
    choice("task.name", t.name, TASKS)
    if not cfg.backbone:
        raise ConfigError(f"backbone is not set; give backbone=<{BACKBONE_FORMS}>")
    choice("dataset.name", d.name, ("voc",))
    for key in ("batch_size", "eval_batch_size", "image_size", "max_size"):
        positive(f"dataset.{key}", getattr(d, key))
    positive("dataset.num_workers", d.num_workers, allow_zero=True)
    for key in ("limit_train", "limit_test"):
        if getattr(d, key) is not None:
            positive(f"dataset.{key}", getattr(d, key))
    _check_years(t.name, list(d.years))
    if t.name == "detection" and d.max_size < d.image_size:
        raise ConfigError(
            f"dataset.max_size={d.max_size} is below dataset.image_size={d.image_size}; "
            "set max_size >= image_size"
        )
    if len(d.scale_range) != 2 or not 0 < d.scale_range[0] <= d.scale_range[1]:
        raise ConfigError(
            f"dataset.scale_range={list(d.scale_range)} must be [low, high] with 0 < low <= high, "
            "e.g. [0.5,2.0]"
        )

    if t.out_indices is not None and (not t.out_indices or min(t.out_indices) < 0):
        raise ConfigError(
            f"task.out_indices={list(t.out_indices)} must be non-empty feature indices >= 0; "
            "or null for the task's default"
        )
    positive("task.freeze_at", t.freeze_at, allow_zero=True)
    positive("task.fpn_channels", t.fpn_channels)
    positive("task.rois_per_image", t.rois_per_image)
    positive("task.anchor_scale", t.anchor_scale)
    if not t.aspect_ratios or min(t.aspect_ratios) <= 0:
        raise ConfigError(
            f"task.aspect_ratios={list(t.aspect_ratios)} must be positive, e.g. [0.5,1.0,2.0]"
        )
    if t.output_stride is not None and t.output_stride not in OUTPUT_STRIDES:
        raise ConfigError(
            f"task.output_stride={t.output_stride} is not one of 8, 16, 32 or null; pick one"
        )

    choice("schedule.name", s.name, KINDS)
    positive("schedule.epochs", s.epochs)
    positive("schedule.warmup_iters", s.warmup_iters, allow_zero=True)
    positive("schedule.eval_every", s.eval_every)
    positive("schedule.power", s.power)
    positive("schedule.gamma", s.gamma)
    if s.name == "step" and any(not 0 < m < 1 for m in s.milestones):
        raise ConfigError(
            f"schedule.milestones={list(s.milestones)} must be fractions of the run in (0, 1), "
            "e.g. [0.75]"
        )

    validate_shared(cfg.optim, cfg.trainer, cfg.logger)
    check_seed("seed", cfg.seed)
    tr = cfg.trainer
    if tr.compile:
        raise ConfigError(
            "trainer.compile=true is not supported by sdrun-transfer (detection batches change "
            "shape every step); set trainer.compile=false"
        )
    if tr.teacher_precompute:
        raise ConfigError(
            "trainer.teacher_precompute is a distillation option; sdrun-transfer has no "
            "teacher: set trainer.teacher_precompute=0"
        )
