"""DenseNet-BC for CIFAR (Huang et al. 2017, Sec. 3-4), registered into timm as `densenet_bc100`.

DenseNet-BC-100 with growth rate k=12: a 3x3 stem conv with 2k channels, three dense blocks
of 16 bottleneck layers (BN-ReLU-1x1 conv to 4k channels, BN-ReLU-3x3 conv to k channels,
the output concatenated to the layer's input), and between the blocks a transition (BN-ReLU-
1x1 conv halving the channels, "compression" 0.5, then 2x2 average pooling); a final BN-ReLU,
global average pooling and a linear classifier. Depth counts the conv and fc layers:
1 + 3 * 16 * 2 + 2 + 1 = 100. It has ~0.8M parameters, the size the DenseNet paper reports.

timm's own `densenet*` models are the ImageNet DenseNets (7x7 stem, four blocks); this file
adds the CIFAR variant under a name timm does not use. Importing it registers the model, so
`timm.create_model("densenet_bc100", num_classes=100)` works like any timm model.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from sdrun.models.cifar_base import CifarClassifier, build_cifar_model, cifar_cfg

__all__ = ["DenseNetBC", "densenet_layers_per_block"]

NUM_BLOCKS = 3
BOTTLENECK_FACTOR = 4  # the 1x1 bottleneck conv outputs 4k channels


def densenet_layers_per_block(depth: int) -> int:
    """Bottleneck layers per block: depth = 3 blocks x 2 convs x n + stem + 2 transitions + fc."""
    n, rest = divmod(depth - 4, 2 * NUM_BLOCKS)
    if rest or n < 1:
        raise ValueError(f"DenseNet-BC depth must be 6n+4 with n >= 1, got {depth}")
    return n


def _bn_relu_conv(in_chs: int, out_chs: int, kernel: int) -> list[nn.Module]:
    # Pre-activation order: every conv sees a normalised, rectified input.
    return [
        nn.BatchNorm2d(in_chs),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_chs, out_chs, kernel, padding=kernel // 2, bias=False),
    ]


class DenseLayer(nn.Module):
    """Bottleneck layer: k new feature maps, concatenated to everything seen before."""

    def __init__(self, in_chs: int, growth_rate: int) -> None:
        super().__init__()
        width = BOTTLENECK_FACTOR * growth_rate
        self.body = nn.Sequential(
            *_bn_relu_conv(in_chs, width, 1), *_bn_relu_conv(width, growth_rate, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compression) and 2x2 average pooling between dense blocks."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__(*_bn_relu_conv(in_chs, out_chs, 1), nn.AvgPool2d(2))


class DenseNetBC(CifarClassifier):
    """DenseNet-BC for 32x32 inputs with timm's classifier interface.

    Args:
        depth: 6n+4 (100 for DenseNet-BC-100: n=16 bottleneck layers per block).
        growth_rate: k, the channels each layer adds.
        compression: fraction of channels a transition keeps.
        num_classes: classifier outputs; 0 gives a model without classifier (pooled features).
        in_chans: input image channels.
        drop_rate: dropout probability on the pooled features before the classifier.
        global_pool: timm pooling type ('avg', 'max', 'avgmax', 'catavgmax', '' for none).
    """

    def __init__(
        self,
        depth: int = 100,
        growth_rate: int = 12,
        compression: float = 0.5,
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        n = densenet_layers_per_block(depth)
        self.depth, self.growth_rate = depth, growth_rate
        self.in_chans = in_chans

        chs = 2 * growth_rate
        self.stem = nn.Conv2d(in_chans, chs, 3, padding=1, bias=False)
        # feature_info lets timm wrap the model with features_only=True (FeatureListNet).
        self.feature_info = [dict(num_chs=chs, reduction=1, module="stem")]
        reduction = 1
        for i in range(1, NUM_BLOCKS + 1):
            layers = [DenseLayer(chs + j * growth_rate, growth_rate) for j in range(n)]
            self.add_module(f"dense{i}", nn.Sequential(*layers))
            chs += n * growth_rate
            if i < NUM_BLOCKS:
                self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"dense{i}"))
                out = int(chs * compression)
                self.add_module(f"trans{i}", Transition(chs, out))
                chs, reduction = out, reduction * 2
        # The last block's output is only normalised and rectified: DenseLayers are
        # pre-activation, so without this the classifier would see raw conv outputs.
        self.norm = nn.BatchNorm2d(chs)
        self.act = nn.ReLU(inplace=True)
        self.feature_info.append(dict(num_chs=chs, reduction=reduction, module="act"))

        self._init_head(chs, num_classes, global_pool, drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        super()._init_weights()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (B, C, 32, 32) -> unpooled, normalised feature map (B, 342, 8, 8)."""
        x = self.stem(x)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        return self.act(self.norm(self.dense3(x)))


# timm's register_model reads `default_cfgs` from the entrypoint's module at registration.
default_cfgs = generate_default_cfgs(
    {
        "densenet_bc100": cifar_cfg(
            "stem",
            "Densely Connected Convolutional Networks",
            "arXiv:1608.06993",
            "CIFAR DenseNet-BC-100, growth 12, compression 0.5",
        )
    }
)


@register_model
def densenet_bc100(pretrained: bool = False, **kwargs: Any) -> DenseNetBC:
    """CIFAR DenseNet-BC-100 (k=12): three blocks of 16 bottleneck layers."""
    kwargs.setdefault("depth", 100)
    kwargs.setdefault("growth_rate", 12)
    return build_cifar_model(DenseNetBC, "densenet_bc100", pretrained, **kwargs)
