"""Semantic segmentation: torchvision's DeepLabV3 head (ASPP) on the backbone's last feature
map, trained on VOC2012 train (+SBD) with cross-entropy ignoring label 255, scored by mIoU
on VOC2012 val.

The backbone is dilated to `task.output_stride` where timm supports it (ResNets do). ASPP's
atrous rates are DeepLabV3's (6, 12, 18) at stride 16, scaled to the map's real stride, so
they cover the same image area at any stride (torchvision's (12, 24, 36) at stride 8).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead

from sdrun.data.loader import normalize
from sdrun.runfolder import distributed
from sdrun.runfolder.runtime import Runtime
from sdrun.transfer.config import TransferConfig
from sdrun.transfer.miou import IGNORE, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from sdrun.transfer.voc import SEG_CLASSES, VOC_CLASSES
from sdrun.transfer.voc_ap import per_class

METRIC = "test/miou"
AUX_WEIGHT = 0.5  # torchvision's segmentation reference
DEEPLAB_RATES = (6, 12, 18)  # at output stride 16 (Chen et al. 2017)


def atrous_rates(stride: int) -> tuple[int, ...]:
    return tuple(max(1, round(r * 16 / stride)) for r in DEEPLAB_RATES)


class LastMaps(nn.Module):
    """timm features_only -> the {"out", "aux"} maps torchvision's DeepLabV3 takes."""

    def __init__(self, features: nn.Module, aux: bool, channels_last: bool) -> None:
        super().__init__()
        self.body = features
        self.aux = aux
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        maps = self.body(x)
        out = OrderedDict(out=maps[-1])
        if self.aux:
            out["aux"] = maps[-2]
        return out


def build_segmenter(features: nn.Module, cfg: TransferConfig, channels_last: bool) -> DeepLabV3:
    channels = features.feature_info.channels()
    stride = features.feature_info.reduction()[-1]
    aux = cfg.task.aux_loss and len(channels) > 1
    head = DeepLabHead(channels[-1], SEG_CLASSES, atrous_rates(stride))
    aux_head = FCNHead(channels[-2], SEG_CLASSES) if aux else None
    return DeepLabV3(LastMaps(features, aux, channels_last), head, aux_head)


def mover(mean: Sequence[float], std: Sequence[float], channels_last: bool):
    stats: dict[torch.device, tuple[Tensor, Tensor]] = {}  # made once per device

    def one(images: Tensor, masks: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in stats:
            # On the device once: a copy from host memory per batch would make the host wait
            # for the device at every step.
            stats[device] = (torch.tensor(mean, device=device), torch.tensor(std, device=device))
        x = normalize(images.to(device, non_blocking=True), *stats[device])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, masks.to(device, torch.int64, non_blocking=True)

    def move(batch, device: torch.device):
        """A stacked training batch, or an evaluation batch's list of whole images (each
        becomes a batch of one)."""
        images, masks = batch
        if isinstance(images, Tensor):
            return one(images, masks, device)
        pairs = [one(i[None], m[None], device) for i, m in zip(images, masks)]
        return [x for x, _ in pairs], [m for _, m in pairs]

    return move


def loss(model: nn.Module, batch) -> tuple[Tensor, int]:
    images, masks = batch
    out = model(images)
    value = F.cross_entropy(out["out"].float(), masks, ignore_index=IGNORE)
    if "aux" in out:
        value = value + AUX_WEIGHT * F.cross_entropy(out["aux"].float(), masks, ignore_index=IGNORE)
    return value, images.shape[0]


@torch.no_grad()
def evaluate(model: nn.Module, batches, runtime: Runtime) -> dict[str, Any]:
    """mIoU over the whole val split: confusion matrices summed over images and processes.

    Each image is predicted alone and unpadded (batches are lists, `collate_whole`), as
    torchvision's reference evaluates with batch 1: padded to a batch's largest image, an
    image's prediction would change with the batch it lands in (ASPP's image-pooling branch
    averages over the padding, border convolutions see it), and so with the evaluation batch
    size and the number of processes. The matrices are integer counts: their sum is exact in
    any order."""
    was_training = model.training
    model.eval()
    matrix = torch.zeros(SEG_CLASSES, SEG_CLASSES, dtype=torch.int64, device=runtime.device)
    images = torch.zeros((), dtype=torch.int64, device=runtime.device)
    for xs, masks in batches:
        for x, mask in zip(xs, masks):
            with runtime.autocast():
                logits = model(x)["out"]
            matrix += confusion_matrix(logits.argmax(dim=1), mask, SEG_CLASSES)
            images += 1
    model.train(was_training)
    distributed.sum_(matrix)
    distributed.sum_(images)
    matrix = matrix.cpu()
    ious = iou_per_class(matrix).tolist()
    return {
        METRIC: 100.0 * mean_iou(matrix),
        "test/pixel_acc": 100.0 * pixel_accuracy(matrix),
        "test/images": int(images),
        "per_class": per_class(("background", *VOC_CLASSES), ious),
    }
