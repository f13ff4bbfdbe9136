"""Training-throughput benchmark: a conventional CIFAR loop vs sdrun, without and with the teacher.

Measured side by side in one process, warm-up excluded:
  reference  torchvision-style CIFAR dataset with PIL transforms (RandomCrop(32, 4), flip,
             ToTensor, Normalize), DataLoader with workers and pinned memory, fp32, eager,
             loss.item() every step (as popular KD code does)
  baseline   sdrun's training step, no teacher (device-resident data, AMP, channels_last, ...)
  sd         sdrun's training step with the prepared snapshot teacher
  --methods  each registered method named (e.g. ls,tfkd,pskd; `family`: every registered
             self-distillation method): its training step, as a run builds it (its distill
             group, its batch composition, its per-sample state)
Ratios: baseline / reference throughput (target >= 3 on a GPU) and sd / baseline step time
(target <= 1.15 on a GPU, <= 1.35 on CPU); each method's step time and peak memory over the
baseline's. See docs/PERFORMANCE.md.

    python scripts/bench.py --device cuda --model resnet56 --batch-size 128 --steps 200
    python scripts/bench.py --device cpu --model resnet20 --steps 5 --json
    python scripts/bench.py --device cpu --model resnet20 --methods ls,tfkd,pskd
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from bench_methods import method_config, method_rows, parse_methods, relative
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from sdrun.config import COMPILE_MODES, DatasetConfig, OptimConfig
from sdrun.data import build_loaders
from sdrun.methods import SNAPSHOT, Method, MethodStep, RunShape, build_method, default_settings
from sdrun.models import build_model
from sdrun.models.cifar_base import CIFAR100_MEAN, CIFAR100_STD
from sdrun.runfolder.runtime import Runtime, configure_numerics, resolve_amp
from sdrun.training.engine import LoopOptions, StepState, train_one_epoch
from sdrun.training.frozen_teacher import FrozenTeacher, PrecomputedTeacher, teacher_dtype
from sdrun.training.optim import build_optimizer
from sdrun.training.schedule import CyclePlan


@dataclass
class Measurement:
    img_per_s: float
    ms_per_step: float
    peak_mem_mb: Optional[float]


class PeakMemory:
    """Peak memory of one phase: CUDA allocator peak, or this process's peak RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            _write("/proc/self/clear_refs", "5")  # Linux: resets VmHWM to the current RSS
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.mb = _vm_hwm_mb()


def _write(path: str, text: str) -> None:
    with contextlib.suppress(OSError):
        Path(path).write_text(text)


def _vm_hwm_mb() -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PilCifar(Dataset):
    """What torchvision's CIFAR100 does per sample: uint8 HWC array -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def reference_dataset(n: int, num_classes: int, data_root: Optional[str]) -> Dataset:
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR100_MEAN, CIFAR100_STD),
        ]
    )
    if data_root and (Path(data_root) / "cifar-100-python").is_dir():
        from torchvision.datasets import CIFAR100

        return CIFAR100(data_root, train=True, download=False, transform=transform)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return PilCifar(images, rng.integers(0, num_classes, n), transform)


def bench_reference(args: argparse.Namespace, device: torch.device) -> Measurement:
    n = args.batch_size * (args.warmup + args.steps)
    loader = DataLoader(
        reference_dataset(n, args.num_classes, args.data_root),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    model = build_model(args.model, args.num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    batches = iter(loader)  # holds exactly warmup + steps batches
    for _ in range(args.warmup):
        step(*next(batches))
    with PeakMemory(device) as mem:
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step(*next(batches))
        _sync(device)
        seconds = time.perf_counter() - start
    del batches  # stop the workers now: left running, they slow the phases measured after
    return _measurement(args, seconds, mem.mb)


def bench_sdrun(
    args: argparse.Namespace, runtime: Runtime, with_teacher: bool, method: Optional[Method] = None
) -> Measurement:
    """sdrun's training step for `method` (default: sd, no teacher until `with_teacher`)."""
    method = method or build_method(default_settings("sd"))  # no teacher: plain CE
    steps = args.warmup + args.steps
    data_cfg = DatasetConfig(
        name="fake",
        batch_size=args.batch_size,
        num_classes=args.num_classes,
        num_train=args.batch_size * steps,
        num_test=args.batch_size,
    )
    data = build_loaders(
        data_cfg,
        seed=0,
        device=runtime.device,
        channels_last=runtime.channels_last,
        composition=method.batches,  # pskd's batches also hold the samples' indices
    )
    # As the runner does, once: per-sample state (pskd's tables) for warm-up and timed epoch.
    method.prepare(RunShape(data.train.dataset_size, data.num_classes, 2, runtime.device))
    model = build_model(args.model, args.num_classes)
    model.to(runtime.device, memory_format=runtime.memory_format)
    # As build_parts: the student, or the student with what the method trains beside it.
    trained = method.training_module(model).to(runtime.device, memory_format=runtime.memory_format)
    train_model = torch.compile(trained, mode=args.compile_mode) if args.compile else trained
    teacher = None
    if with_teacher:
        teacher = FrozenTeacher(
            model,
            teacher_dtype(runtime.amp_dtype),
            runtime.memory_format,
            compile=args.compile,
            compile_mode=args.compile_mode,
            input_shape=(3, data_cfg.image_size, data_cfg.image_size),
        )
    state = StepState(
        build_optimizer(trained, OptimConfig(lr=0.05), runtime.device),
        runtime.grad_scaler(),
        step=0,
    )
    plan = CyclePlan("sd", 1, 1, steps, peak=0.05)

    def run(epoch: int, steps: int) -> float:
        def batches():
            return itertools.islice(data.train.epoch(epoch), steps)

        source = teacher
        if teacher is not None and args.teacher_precompute:
            # As the runner does it: the epoch's logits first, timed as part of the epoch.
            source = PrecomputedTeacher(teacher, batches(), args.teacher_precompute)
        method.start_epoch(epoch)  # per epoch, untimed as in a run (pskd: the table copy)
        quiet = LoopOptions(log_every=10**9, check_every=10**9)  # no reads in the timed loop
        step = MethodStep(method, train_model, source)
        result = train_one_epoch(train_model, step, batches(), steps, state, plan, runtime, None,
                                 quiet)  # fmt: skip
        return result.seconds

    # Epochs count from 1, as in a run: the timed epoch is the second (pskd mixes in stored
    # predictions, dlb repeats a batch at every step).
    run(1, args.warmup)
    with PeakMemory(runtime.device) as mem:
        seconds = run(2, args.steps)
    return _measurement(args, seconds, mem.mb)


def bench_method(args: argparse.Namespace, runtime: Runtime, name: str) -> Measurement:
    """The registered method `name`'s step; a snapshot-taught one with the prepared teacher."""
    method = build_method(method_config(name))
    return bench_sdrun(args, runtime, method.teacher == SNAPSHOT, method)


def _measurement(args: argparse.Namespace, seconds: float, peak_mb: Optional[float]) -> Measurement:
    return Measurement(
        img_per_s=args.batch_size * args.steps / seconds,
        ms_per_step=1000 * seconds / args.steps,
        peak_mem_mb=peak_mb,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--model", default="resnet56")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=100, help="timed steps per phase")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before each phase")
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--workers", type=int, default=4, help="reference DataLoader workers")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile student and teacher")
    p.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default="default",
        help="torch.compile mode (reduce-overhead: CUDA graphs)",
    )
    p.add_argument(
        "--teacher-precompute",
        type=int,
        default=0,
        metavar="N",
        help="predict the epoch's teacher logits first, N images per forward (0: per step)",
    )
    p.add_argument("--data-root", default=None, help="real CIFAR-100 for the reference loop")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument(
        "--methods",
        type=parse_methods,
        default=[],
        metavar="A,B",
        help="also time these registered methods' steps (e.g. ls,tfkd,pskd; family: all the "
        "self-distillation methods)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench: --device cuda but no CUDA GPU is visible; use --device cpu")
    device = torch.device(args.device)
    runtime = Runtime(device, resolve_amp(args.amp, device), not args.no_channels_last)
    with configure_numerics(False, device, runtime.amp_dtype):  # as a run sets them
        results = _bench(args, runtime)
    print(json.dumps(results) if args.json else _table(results))
    return results


def _bench(args: argparse.Namespace, runtime: Runtime) -> dict:
    device = runtime.device
    results: dict = {
        "device": runtime.device_name,
        "torch": torch.__version__,
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "amp": str(runtime.amp_dtype or "off"),
        "compile": args.compile and args.compile_mode,
        "teacher_precompute": args.teacher_precompute,
    }
    if not args.skip_reference:
        results["reference"] = asdict(bench_reference(args, device))
    results["baseline"] = asdict(bench_sdrun(args, runtime, with_teacher=False))
    results["sd"] = asdict(bench_sdrun(args, runtime, with_teacher=True))
    results["sd_over_baseline_time"] = (
        results["sd"]["ms_per_step"] / results["baseline"]["ms_per_step"]
    )
    if args.methods:
        base = results["baseline"]
        results["methods"] = {
            name: relative(asdict(bench_method(args, runtime, name)), base) for name in args.methods
        }
    if "reference" in results:
        results["baseline_over_reference_speed"] = (
            results["baseline"]["img_per_s"] / results["reference"]["img_per_s"]
        )
    return results


def _table(r: dict) -> str:
    rows = [f"{r['model']} batch {r['batch_size']} on {r['device']} (torch {r['torch']}, "
            f"amp {r['amp']}, compile {r['compile']}, teacher_precompute "
            f"{r['teacher_precompute']}, {r['steps']} timed steps)",
            f"{'':10} {'img/s':>10} {'ms/step':>10} {'peak MB':>10}"]  # fmt: skip
    for name in ("reference", "baseline", "sd"):
        if name in r:
            m = r[name]
            mem = "-" if m["peak_mem_mb"] is None else f"{m['peak_mem_mb']:.0f}"
            rows.append(f"{name:10} {m['img_per_s']:10.1f} {m['ms_per_step']:10.2f} {mem:>10}")
    if "baseline_over_reference_speed" in r:
        rows.append(f"baseline / reference speed: {r['baseline_over_reference_speed']:.2f}x")
    rows.append(f"sd / baseline step time:    {r['sd_over_baseline_time']:.3f}")
    if r["sd"]["peak_mem_mb"] and r["baseline"]["peak_mem_mb"]:
        ratio = r["sd"]["peak_mem_mb"] / r["baseline"]["peak_mem_mb"]
        rows.append(f"sd / baseline peak memory:  {ratio:.3f}")
    if "methods" in r:
        rows += method_rows(r["methods"])
    return "\n".join(rows)


if __name__ == "__main__":
    main()
