"""Object detection: torchvision's Faster R-CNN with an FPN over the backbone's timm feature
maps, trained on VOC07+12 and scored with VOC AP at IoU 0.5 on VOC2007 test.

The detector normalises (with the backbone's own mean/std) and resizes (shorter side
`dataset.image_size`, longer at most `dataset.max_size`) itself, so the loader hands it
[0, 1] images of any size. Anchors: one size per FPN level, `task.anchor_scale` x the
level's stride (8 x: torchvision's 32..512 for strides 4..64), aspect ratios
`task.aspect_ratios`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from sdrun.errors import ConfigError
from sdrun.runfolder.runtime import Runtime
from sdrun.transfer.config import TransferConfig
from sdrun.transfer.voc import VOC_CLASSES
from sdrun.transfer.voc_ap import Detections, Truth, per_class, voc_ap

MAX_LEVELS = 4  # FPN levels taken from the backbone (plus one max-pooled level on top)
METRIC = "test/map50"


def pick_levels(reductions: Sequence[int], chosen: bool) -> list[int]:
    """Positions of the feature maps the FPN uses: with the task's default, the deepest map of
    each distinct stride, the last MAX_LEVELS of them (RoI pooling maps boxes to levels by
    stride, so two levels of one stride cannot both be used); with task.out_indices, all."""
    if chosen:
        if any(b <= a for a, b in zip(reductions, reductions[1:])):
            raise ConfigError(
                f"task.out_indices gives feature strides {list(reductions)}; detection needs "
                "strictly increasing strides: pick one level per stride"
            )
        return list(range(len(reductions)))
    deepest = {r: i for i, r in enumerate(reductions)}
    return sorted(deepest.values())[-MAX_LEVELS:]


def anchor_sizes(strides: Sequence[int], scale: float) -> tuple[tuple[int, ...], ...]:
    """One anchor size per FPN level, the max-pooled level (twice the last stride) included."""
    return tuple((round(scale * s),) for s in (*strides, 2 * strides[-1]))


class FeaturePyramid(nn.Module):
    """timm features_only maps -> torchvision FPN; what FasterRCNN takes as its backbone."""

    def __init__(self, features: nn.Module, positions: list[int], out_channels: int,
                 channels_last: bool) -> None:  # fmt: skip
        super().__init__()
        self.body = features
        self.positions = positions
        channels = [features.feature_info.channels()[p] for p in positions]
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        maps = self.body(x)
        return self.fpn(OrderedDict((str(i), maps[p]) for i, p in enumerate(self.positions)))


def _to_float(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.float()
    if isinstance(value, dict):
        return type(value)((k, _to_float(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    return value


def _device_of(value: Any) -> Optional[torch.device]:
    if isinstance(value, Tensor):
        return value.device
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return next((d for d in map(_device_of, value) if d is not None), None)
    return None


def full_precision(module: nn.Module) -> None:
    """Run `module` outside autocast, on float32 inputs. The RPN and box heads decode box
    coordinates: in bfloat16 (8 bits of mantissa) a coordinate near 1000 px would be rounded
    to 4 px, which costs AP. The backbone and FPN, most of the compute, stay in AMP."""
    forward = module.forward

    def run(*args: Any) -> Any:
        device = _device_of(args)
        if device is None:
            return forward(*args)
        with torch.autocast(device_type=device.type, enabled=False):
            return forward(*_to_float(args))

    module.forward = run  # the instance's forward: state_dict keys stay torchvision's


def build_detector(features: nn.Module, mean: Sequence[float], std: Sequence[float],
                   cfg: TransferConfig, channels_last: bool) -> FasterRCNN:  # fmt: skip
    reductions = features.feature_info.reduction()
    positions = pick_levels(reductions, cfg.task.out_indices is not None)
    strides = [reductions[p] for p in positions]
    body = FeaturePyramid(features, positions, cfg.task.fpn_channels, channels_last)
    ratios = tuple(float(r) for r in cfg.task.aspect_ratios)
    sizes = anchor_sizes(strides, cfg.task.anchor_scale)
    detector = FasterRCNN(
        body,
        num_classes=len(VOC_CLASSES) + 1,  # + background
        min_size=cfg.dataset.image_size,
        max_size=cfg.dataset.max_size,
        image_mean=list(mean),
        image_std=list(std),
        rpn_anchor_generator=AnchorGenerator(sizes, (ratios,) * len(sizes)),
        box_roi_pool=MultiScaleRoIAlign([str(i) for i in range(len(positions))], 7, 2),
        box_batch_size_per_image=cfg.task.rois_per_image,
    )
    full_precision(detector.rpn)
    full_precision(detector.roi_heads)
    return detector


def move(batch: tuple[list[Tensor], list[dict[str, Any]]], device: torch.device):
    images, targets = batch
    images = [i.to(device, non_blocking=True).float().div_(255.0) for i in images]
    targets = [{k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
                for k, v in t.items()} for t in targets]  # fmt: skip
    return images, targets


def loss(model: nn.Module, batch) -> tuple[Tensor, int]:
    images, targets = batch
    losses = model(images, targets)
    return sum(losses.values()), len(images)


@torch.no_grad()
def evaluate(model: nn.Module, batches, runtime: Runtime) -> dict[str, Any]:
    """VOC AP over the whole test split: each rank detects its images, then all share them."""
    was_training = model.training
    model.eval()
    mine: list[tuple[int, Detections, Truth]] = []
    for images, targets in batches:
        with runtime.autocast():
            outputs = model(images)
        for out, target in zip(outputs, targets):
            det = Detections(out["boxes"].float().cpu(), out["scores"].float().cpu(),
                             out["labels"].cpu() - 1)  # fmt: skip
            truth = Truth(target["boxes"].cpu(), target["labels"].cpu(), target["difficult"].cpu())
            mine.append((int(target["index"]), det, truth))
    model.train(was_training)
    every = sorted(_gather(mine), key=lambda item: item[0])
    result = voc_ap([d for _, d, _ in every], [t for _, _, t in every], len(VOC_CLASSES))
    return {
        METRIC: 100.0 * result.map_11point,
        "test/map50_allpoint": 100.0 * result.map_allpoint,
        "test/images": len(every),
        "per_class": per_class(VOC_CLASSES, result.ap_11point),
    }


def _gather(items: list) -> list:
    if not torch.distributed.is_initialized():
        return items
    every: list[Optional[list]] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(every, items)
    return [item for part in every for item in (part or [])]
