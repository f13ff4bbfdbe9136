"""The optimizer, through timm's optimizer factory (any timm optimizer name works)."""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2, list_optimizers
from torch import nn

from sdrun.config import OptimConfig
from sdrun.errors import ConfigError

# torch optimizers with a fused CUDA kernel (one launch for all parameters).
FUSED = ("sgd", "momentum", "adam", "adamw")


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """SGD by default; weight decay on every parameter, as in the CIFAR ResNet recipes."""
    name = cfg.name.lower()
    if name not in list_optimizers():
        raise ConfigError(f"optim.name={cfg.name!r} is not a timm optimizer; use e.g. sgd, adamw")
    kwargs: dict = {"nesterov": cfg.nesterov} if name in ("sgd", "momentum") else {}
    if device is not None and device.type == "cuda" and name in FUSED:
        kwargs["fused"] = True
    return create_optimizer_v2(
        model,
        opt=name,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        filter_bias_and_bn=False,
        **kwargs,
    )
