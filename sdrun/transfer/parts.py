"""The parts of a transfer run, built from its config: backbone, VOC splits and loaders, the
task's model around the backbone, optimizer and LR plan. Everything a user can get wrong is
checked here, before the first step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from sdrun.errors import ConfigError
from sdrun.runfolder import distributed
from sdrun.runfolder.runtime import Runtime
from sdrun.training.engine import StepState
from sdrun.training.optim import build_optimizer
from sdrun.transfer import detection, segmentation
from sdrun.transfer.backbone import Backbone, create_features, normalization, open_backbone
from sdrun.transfer.config import TransferConfig
from sdrun.transfer.freezing import freeze
from sdrun.transfer.loader import TaskLoader
from sdrun.transfer.schedule import FinetunePlan
from sdrun.transfer.transforms import (
    DetectionTrain,
    SegmentationTrain,
    collate_detection,
    collate_segmentation,
    collate_whole,
)
from sdrun.transfer.voc_splits import Splits, open_detection, open_segmentation

TASKS: dict[str, ModuleType] = {"detection": detection, "segmentation": segmentation}


@dataclass
class Parts:
    cfg: TransferConfig
    runtime: Runtime
    dist: distributed.Dist
    backbone: Backbone
    task: ModuleType  # sdrun.transfer.detection or .segmentation: loss, evaluate, METRIC
    model: nn.Module  # the plain module: its state_dict is what gets saved
    train_model: nn.Module  # what the loop calls (DDP-wrapped under torchrun)
    train_loader: TaskLoader
    test_loader: TaskLoader
    plan: FinetunePlan
    state: StepState
    train_sets: str
    train_images: int  # in the whole split
    test_images: int
    frozen: str  # what of the backbone stays fixed, for the log and the summary


def config_dict(cfg: TransferConfig) -> dict[str, Any]:
    """The config as plain containers (what checkpoints and loggers store). `cfg` is resolved
    already: a `${` left in it was an escaped literal (`\\${...}`), and stays one."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=False)


def open_data(cfg: TransferConfig, dist: distributed.Dist) -> Splits:
    d = cfg.dataset
    common = dict(download=d.download, limit_train=d.limit_train,
                  limit_test=d.limit_test)  # fmt: skip
    root = Path(d.root).expanduser()
    if cfg.task.name == "detection":
        return open_detection(root, train_transform=DetectionTrain(), years=d.years, **common)
    crop = SegmentationTrain(d.image_size, (d.scale_range[0], d.scale_range[1]))
    return open_segmentation(root, sbd=d.sbd, train_transform=crop, **common)


def build(cfg: TransferConfig, runtime: Runtime, dist: distributed.Dist) -> Parts:
    if cfg.dataset.batch_size % dist.world_size:
        raise ConfigError(
            f"dataset.batch_size={cfg.dataset.batch_size} is not divisible by the "
            f"{dist.world_size} processes; use a multiple of {dist.world_size} (it is global)"
        )
    segmenting = cfg.task.name == "segmentation"
    per_process = cfg.dataset.batch_size // dist.world_size
    if segmenting and per_process < 2 and not cfg.trainer.sync_bn:
        raise ConfigError(
            f"dataset.batch_size={cfg.dataset.batch_size} leaves {per_process} image per process; "
            "DeepLabV3's BatchNorm needs 2 or more: raise dataset.batch_size or set "
            "trainer.sync_bn=true"
        )
    backbone = open_backbone(cfg.backbone or "", cfg.backbone_model, cfg.backbone_allow_incomplete)
    task = TASKS[cfg.task.name]
    splits = open_data(cfg, dist)
    features = create_features(
        backbone, cfg.task.out_indices, cfg.task.output_stride if segmenting else None
    )
    freeze_at, freeze_bn = cfg.task.freeze_at, cfg.task.freeze_bn
    if backbone.kind == "scratch":  # random weights: freezing them would only hobble the net
        freeze_at, freeze_bn = 0, False
    features = freeze(features, freeze_at, freeze_bn)
    frozen = f"{freeze_at} level(s), BatchNorm {'frozen' if freeze_bn else 'trained'}"
    mean, std = normalization(backbone, features)
    channels_last = runtime.channels_last
    if segmenting:
        model = segmentation.build_segmenter(features, cfg, channels_last)
        move = segmentation.mover(mean, std, channels_last)
        collate, collate_eval = collate_segmentation, collate_whole
    else:
        model = detection.build_detector(features, mean, std, cfg, channels_last)
        move, collate = detection.move, collate_detection
        collate_eval = collate_detection
    model.to(runtime.device, memory_format=runtime.memory_format)
    common = dict(move=move, device=runtime.device, seed=cfg.seed,
                  num_workers=cfg.dataset.num_workers, rank=dist.rank,
                  world_size=dist.world_size)  # fmt: skip
    train = TaskLoader(splits.train, per_process, train=True, collate=collate, **common)
    eval_batch = max(1, cfg.dataset.eval_batch_size // dist.world_size)
    test = TaskLoader(splits.test, eval_batch, train=False, collate=collate_eval, **common)
    s = cfg.schedule
    plan = FinetunePlan(s.name, s.epochs, len(train), cfg.optim.lr, s.warmup_iters,
                        tuple(s.milestones), s.gamma, s.power)  # fmt: skip
    state = StepState(
        build_optimizer(model, cfg.optim, runtime.device), runtime.grad_scaler(), step=0
    )
    train_model = distributed.wrap(model, dist, runtime.device, cfg.trainer.sync_bn)
    return Parts(cfg, runtime, dist, backbone, task, model, train_model, train, test, plan,
                 state, splits.train_sets, len(splits.train), len(splits.test),  # type: ignore[arg-type]
                 frozen)  # fmt: skip
