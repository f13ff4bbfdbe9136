"""What every CIFAR net of sdrun shares: timm's classifier interface, the CIFAR-100 default cfg,
and building through timm's builder (so pretrained_cfg, features_only etc. behave as in timm).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, resolve_pretrained_cfg
from torch import nn

# CIFAR-100 training-set statistics: the default cfgs describe CIFAR-100, our main benchmark.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


class CifarClassifier(nn.Module):
    """Base for 32x32 nets: a subclass builds its body and its `forward_features` (image batch
    -> unpooled feature map), then calls `_init_head` (pooling, dropout, fc) and
    `_init_weights`."""

    num_features: int

    def _init_head(self, num_features: int, num_classes: int, global_pool: str,
                   drop_rate: float) -> None:  # fmt: skip
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = num_features
        self.global_pool, self.fc = create_classifier(
            num_features, num_classes, pool_type=global_pool
        )
        self.head_drop = nn.Dropout(drop_rate)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head (new random fc) on the device and dtype of the current model."""
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        ref = next(self.parameters())
        self.num_classes = num_classes
        pool, fc = create_classifier(self.num_features, num_classes, pool_type=pool_type)
        # .to() rather than create_classifier(device=...): timm < 1.0.2x has no such argument.
        self.global_pool, self.fc = pool.to(ref.device), fc.to(ref.device, ref.dtype)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def cifar_cfg(first_conv: str, paper_name: str, paper_ids: str, description: str) -> dict:
    """A timm default cfg for a CIFAR-100 net; no url/file/hub id: no pretrained weights."""
    return {
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "first_conv": first_conv,
        "classifier": "fc",
        "paper_name": paper_name,
        "paper_ids": paper_ids,
        "description": description,
    }


def build_cifar_model(cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any):
    """timm's builder, refusing pretrained=True up front (timm would fail deep in its loader)."""
    cfg = resolve_pretrained_cfg(
        variant, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")
    )
    if pretrained and not (cfg.has_weights or cfg.state_dict is not None):
        raise ValueError(
            f"{variant}: no pretrained weights exist (sdrun's CIFAR nets are trained from "
            "scratch); use pretrained=False, or checkpoint_path=... to load your own weights"
        )
    # timm's default out_indices has five feature levels; these nets have four.
    return build_model_with_cfg(
        cls, variant, pretrained, feature_cfg=dict(out_indices=(0, 1, 2, 3)), **kwargs
    )
