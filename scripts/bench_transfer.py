"""Fine-tuning throughput of sdrun-transfer's training loop (images/s), detection and
segmentation, on synthetic batches already on the device.

It times the real code path: the backbone from `backbone=` (timm features_only, BN frozen as
the task's recipe says), the task's model (Faster R-CNN + FPN / DeepLabV3), the task's loss,
`sdrun.training.engine.train_one_epoch` with AMP as `trainer.amp=auto` picks it, channels_last,
SGD. The batches are made before timing (images with a few boxes, masks with 255 borders), so
JPEG decoding is not in the figure: it is the model's step. Warm-up steps are excluded.

    python scripts/bench_transfer.py --device cpu --backbone scratch:resnet18 --steps 5
    python scripts/bench_transfer.py --device cuda --backbone scratch:resnet101 --image-size 600 \
        --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import torch
from bench import PeakMemory  # the classification benchmark's memory probe

from sdrun.config import OptimConfig, TrainerConfig
from sdrun.errors import SdrunError
from sdrun.runfolder.runtime import resolve_runtime
from sdrun.training.engine import LossStep, StepState, train_one_epoch
from sdrun.training.optim import build_optimizer
from sdrun.transfer import detection, segmentation
from sdrun.transfer.backbone import create_features, normalization, open_backbone
from sdrun.transfer.config import TransferConfig
from sdrun.transfer.freezing import freeze
from sdrun.transfer.schedule import FinetunePlan

TASKS = ("detection", "segmentation")


def batches(task: str, n: int, batch: int, size: int, device: torch.device, seed: int = 0):
    """`n` synthetic batches in the form the task's loader hands to the loop."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        if task == "detection":
            images = [
                torch.rand(3, size, size * 4 // 3, generator=g).to(device) for _ in range(batch)
            ]
            targets = []
            for _ in range(batch):
                xy = torch.rand(3, 2, generator=g) * size / 2
                boxes = torch.cat([xy, xy + size / 4 + torch.rand(3, 2, generator=g) * size / 4], 1)
                labels = torch.randint(1, 21, (3,), generator=g)
                targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
            out.append((images, targets))
        else:
            x = torch.randn(batch, 3, size, size, generator=g).to(device)
            masks = torch.randint(0, 21, (batch, size, size), generator=g)
            masks[:, :, :4] = 255
            out.append((x.contiguous(memory_format=torch.channels_last), masks.to(device)))
    return out


def bench_task(task: str, args: argparse.Namespace) -> dict:
    cfg = TransferConfig(backbone=args.backbone)
    cfg.task.name = task
    cfg.dataset.image_size = args.image_size
    cfg.dataset.max_size = args.image_size * 2
    cfg.task.fpn_channels, cfg.task.rois_per_image = args.fpn_channels, args.rois_per_image
    runtime = resolve_runtime(TrainerConfig(device=args.device, amp=args.amp))
    torch.manual_seed(0)
    backbone = open_backbone(args.backbone)
    if task == "detection":
        features = freeze(create_features(backbone, None, None), 2, backbone.kind != "scratch")
        model = detection.build_detector(features, *normalization(backbone, features), cfg, True)
    else:
        features = create_features(backbone, None, 8)
        model = segmentation.build_segmenter(features, cfg, True)
    model.to(runtime.device, memory_format=runtime.memory_format)
    optim = OptimConfig(lr=0.001, weight_decay=1e-4)
    state = StepState(build_optimizer(model, optim, runtime.device), runtime.grad_scaler(), 0)
    plan = FinetunePlan("step", 1, args.warmup + args.steps, 0.001)
    data = batches(task, args.warmup + args.steps, args.batch_size, args.image_size,
                   runtime.device)  # fmt: skip
    loss = detection.loss if task == "detection" else segmentation.loss
    step = LossStep(model, loss)
    train_one_epoch(model, step, data[: args.warmup], args.warmup, state, plan, runtime)
    with PeakMemory(runtime.device) as mem:
        # the loop's clock waits for the device itself
        result = train_one_epoch(model, step, data[args.warmup :], args.steps, state, plan, runtime)
    return {
        "img_per_s": result.img_per_s,
        "ms_per_step": 1000 * result.seconds / args.steps,
        "peak_mem_mb": mem.mb,
        "params": sum(p.numel() for p in model.parameters()),
        "amp": str(runtime.amp_dtype or "off"),
    }


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="both", choices=(*TASKS, "both"))
    p.add_argument("--backbone", default="scratch:resnet18", help="as sdrun-transfer backbone=")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    p.add_argument("--image-size", type=int, default=320, help="detection: shorter side")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--fpn-channels", type=int, default=256, help="detection: task.fpn_channels")
    p.add_argument("--rois-per-image", type=int, default=512, help="detection: task.rois_per_image")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    tasks = TASKS if args.task == "both" else (args.task,)
    try:
        result = {"backbone": args.backbone, "image_size": args.image_size,
                  "batch_size": args.batch_size, "steps": args.steps}  # fmt: skip
        result["device"] = resolve_runtime(TrainerConfig(device=args.device)).device_name
        for task in tasks:
            result[task] = bench_task(task, args)
    except SdrunError as err:
        print(f"bench_transfer: error: {err}", file=sys.stderr)
        sys.exit(2)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.backbone} on {result['device']}, batch {args.batch_size}, "
              f"image {args.image_size}, {args.steps} timed steps")  # fmt: skip
        for task in tasks:
            r = result[task]
            mem = "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
            print(f"  {task:13s} {r['img_per_s']:8.2f} img/s {r['ms_per_step']:9.1f} ms/step "
                  f"peak {mem} MB (amp {r['amp']})")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
