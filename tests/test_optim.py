"""The optimizer comes from timm's factory with the configured hyperparameters."""

import pytest
import torch
from torch import nn

from sdrun.config import OptimConfig
from sdrun.errors import ConfigError
from sdrun.training.optim import build_optimizer


def test_sgd_gets_lr_momentum_nesterov_and_weight_decay_on_every_parameter():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = build_optimizer(
        model, OptimConfig(lr=0.2, momentum=0.8, weight_decay=1e-3, nesterov=True)
    )
    assert isinstance(opt, torch.optim.SGD)
    (group,) = opt.param_groups
    assert len(group["params"]) == 4  # biases and BN weights too: the CIFAR recipe decays all
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.2, 0.8, 1e-3)
    assert group["nesterov"] is True


def test_other_timm_optimizers_and_unknown_names():
    opt = build_optimizer(nn.Linear(3, 4), OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW)
    with pytest.raises(ConfigError, match="optim.name"):
        build_optimizer(nn.Linear(3, 4), OptimConfig(name="sgdd"))
