"""CIFAR ResNets (He et al. 2016, Sec. 4.2), registered into timm's model registry.

Depth is 6n+2: a 3x3 stem, three stages of n BasicBlocks (16/32/64 channels, strides 1/2/2),
global average pooling and a linear classifier. Where a block changes shape the shortcut is a
strided 1x1 conv + BN ("option B"): the CRD/KD literature whose CIFAR-100 numbers we compare
with (ResNet-56 72.34%, ResNet-110 74.31%) uses it, not the zero-padding "option A" of the paper.

Importing this module registers `resnet20` ... `resnet110`, so that
`timm.create_model("resnet56", num_classes=100)` works like any timm model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from sdrun.models.cifar_base import CifarClassifier, build_cifar_model, cifar_cfg

__all__ = ["CIFAR_DEPTHS", "BasicBlock", "CifarResNet"]

# depth -> blocks per stage (n), with depth = 6n + 2.
CIFAR_DEPTHS: dict[int, int] = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}
STAGE_WIDTHS: tuple[int, int, int] = (16, 32, 64)
STAGE_STRIDES: tuple[int, int, int] = (1, 2, 2)
STEM_WIDTH = 16


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; identity shortcut, or 1x1 conv + BN when the shape changes."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chs),
            )
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + shortcut)


class CifarResNet(CifarClassifier):
    """ResNet for 32x32 inputs with timm's classifier interface.

    Args:
        blocks_per_stage: n, the number of BasicBlocks in each of the three stages.
        num_classes: classifier outputs; 0 gives a model without classifier (pooled features).
        in_chans: input image channels.
        drop_rate: dropout probability applied to the pooled features before the classifier.
        global_pool: timm pooling type ('avg', 'max', 'avgmax', 'catavgmax', '' for none).
    """

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.in_chans = in_chans
        self.depth = 6 * blocks_per_stage + 2

        self.conv1 = nn.Conv2d(in_chans, STEM_WIDTH, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        self.act1 = nn.ReLU(inplace=True)

        # feature_info lets timm wrap the model with features_only=True (FeatureListNet).
        self.feature_info = [dict(num_chs=STEM_WIDTH, reduction=1, module="act1")]
        in_chs, reduction = STEM_WIDTH, 1
        for i, (width, stride) in enumerate(zip(STAGE_WIDTHS, STAGE_STRIDES), start=1):
            blocks = [BasicBlock(in_chs, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            in_chs, reduction = width, reduction * stride
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"layer{i}"))

        self._init_head(in_chs, num_classes, global_pool, drop_rate)
        # Linear layers keep PyTorch's default init, as in the reference CIFAR implementations.
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (B, C, 32, 32) -> unpooled feature map (B, 64, 8, 8)."""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        return self.layer3(x)


def _cfg(depth: int) -> dict[str, Any]:
    return cifar_cfg(
        "conv1",
        "Deep Residual Learning for Image Recognition",
        "arXiv:1512.03385",
        f"CIFAR ResNet-{depth} (6n+2, n={CIFAR_DEPTHS[depth]}), 1x1-conv shortcuts",
    )


# timm's register_model looks up `default_cfgs` in the entrypoint's module when it registers,
# so this must exist (under this name) before the entrypoints below are registered.
default_cfgs = generate_default_cfgs({f"resnet{d}": _cfg(d) for d in CIFAR_DEPTHS})


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    depth = int(variant.removeprefix("resnet"))
    return build_cifar_model(
        CifarResNet, variant, pretrained, blocks_per_stage=CIFAR_DEPTHS[depth], **kwargs
    )


def _make_entrypoint(depth: int) -> Callable[..., CifarResNet]:
    """One timm entrypoint per depth; register_model keys the registry on __name__."""
    variant = f"resnet{depth}"

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
        return _create_cifar_resnet(variant, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__doc__ = f"CIFAR ResNet-{depth}: 3 stages of {CIFAR_DEPTHS[depth]} BasicBlocks."
    return entrypoint


for _depth in CIFAR_DEPTHS:
    # Module attributes too, so `from sdrun.models.cifar_resnet import resnet56` works.
    globals()[f"resnet{_depth}"] = register_model(_make_entrypoint(_depth))
del _depth
