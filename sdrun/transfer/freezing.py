"""Which weights of the backbone stay fixed while fine-tuning: the first feature levels (the
stem first) and, if asked, every BatchNorm (statistics and affine), as torchvision's and
Detectron's detectors do."""

from __future__ import annotations

from timm.layers import freeze_batch_norm_2d
from torch import nn

from sdrun.errors import ConfigError


def freeze(features: nn.Module, levels: int, batch_norm: bool) -> nn.Module:
    """Freeze the modules up to feature level `levels - 1` and, if asked, every BatchNorm
    (statistics and affine: torchvision's FrozenBatchNorm2d, via timm); returns the module."""
    if batch_norm:
        features = freeze_batch_norm_2d(features)
    if levels <= 0:
        return features
    info = features.feature_info.info
    if levels > len(info):
        raise ConfigError(
            f"task.freeze_at={levels} but the backbone has {len(info)} feature levels; lower it"
        )
    path = info[levels - 1]["module"]  # e.g. layer1, blocks.1, stages.0
    modules = dict(features.named_modules())
    # timm's FeatureListNet flattens paths (stages.0 -> stages_0); other feature nets keep them
    target = next((n for n in (path, path.replace(".", "_")) if n in modules), None)
    if target is None:
        raise ConfigError(
            f"task.freeze_at={levels} is not supported for this backbone (no module {path!r} in "
            "its features model); set task.freeze_at=0"
        )
    # Everything before the level's module in registration order (the stem first), and the
    # module itself; not the container it sits in (EfficientNet's blocks hold every stage).
    reached = False
    for name, module in features.named_modules():
        inside = name == target or name.startswith(target + ".")
        if reached and not inside:
            break
        reached = reached or inside
        for parameter in module.parameters(recurse=False):  # the subtree's come in turn
            parameter.requires_grad_(False)
    return features
