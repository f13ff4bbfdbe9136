"""The parts of one run, built from its config: data loaders, model, cycle plan, optimizer,
and the wrapped (DDP, compiled) module the training loop calls: the model, or the model with
what the training method trains beside it (`Method.training_module`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from torch import nn

from sdrun.config import Config
from sdrun.data import Batches, build_loaders
from sdrun.methods import Method, RunShape, build_method
from sdrun.models import build_model
from sdrun.runfolder import distributed
from sdrun.runfolder.runtime import Runtime
from sdrun.training.engine import StepState
from sdrun.training.optim import build_optimizer
from sdrun.training.schedule import CyclePlan, plan_from_config


@dataclass
class Parts:
    cfg: Config
    runtime: Runtime
    num_classes: int
    model: nn.Module  # the plain student: saved, evaluated, exported, counted
    train_model: nn.Module  # what the loop calls: method.training_module(model), wrapped
    # (DDP under torchrun) and compiled when asked
    train_loader: Batches
    test_loader: Batches
    plan: CyclePlan
    state: StepState
    dist: distributed.Dist
    method: Method  # the training method (distill=<name>)
    val_loader: Optional[Batches] = None  # dataset.val_split > 0


def build_parts(cfg: Config, runtime: Runtime, dist: distributed.Dist) -> Parts:
    method = build_method(cfg.distill)
    data = build_loaders(
        cfg.dataset,
        seed=cfg.seed,
        device=runtime.device,
        channels_last=runtime.channels_last,
        rank=dist.rank,
        world_size=dist.world_size,
        composition=method.batches,
    )
    model = build_model(
        cfg.model.name,
        data.num_classes,
        pretrained=cfg.model.pretrained,
        kwargs=dict(cfg.model.kwargs),
    )
    model.to(runtime.device, memory_format=runtime.memory_format)
    plan = plan_from_config(cfg.schedule, cfg.optim.lr, len(data.train))
    method.prepare(RunShape(data.train.dataset_size, data.num_classes, plan.epochs, runtime.device))
    # The student, or the student with what the method trains beside it (byot's heads).
    trained = method.training_module(model)
    trained.to(runtime.device, memory_format=runtime.memory_format)
    state = StepState(
        build_optimizer(trained, cfg.optim, runtime.device), runtime.grad_scaler(), step=0
    )
    train_model = distributed.wrap(trained, dist, runtime.device, cfg.trainer.sync_bn)
    if cfg.trainer.compile:
        train_model = torch.compile(train_model, mode=cfg.trainer.compile_mode)
    return Parts(cfg, runtime, data.num_classes, model, train_model, data.train, data.test, plan,
                 state, dist, method, val_loader=data.val)  # fmt: skip


def config_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain containers (what checkpoints and loggers store). `cfg` is resolved
    already: a `${` left in it was an escaped literal (`\\${...}`), and stays one."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=False)


def input_shape(cfg: Config) -> tuple[int, int, int]:
    """One training image's (C, H, W), for the teacher's probe batch: CIFAR is 32 x 32, fake
    images and image-folder crops are `dataset.image_size` square; all RGB."""
    size = 32 if cfg.dataset.name in ("cifar10", "cifar100") else cfg.dataset.image_size
    return (3, size, size)
