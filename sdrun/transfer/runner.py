"""One transfer run: open the backbone and VOC, build the task's model around the backbone,
fine-tune it for `schedule.epochs`, evaluating, logging and checkpointing every epoch.

The run folder is sdrun's: `.hydra/`, `metrics.jsonl`, `summary.json`, atomic
`checkpoints/last.pt` (+ `prev.pt`), `resume=`, a checkpoint on SIGTERM/Ctrl-C, a stop on a
non-finite loss, wandb, torchrun DDP, through the same modules (`checkpoint`, `run_state`,
`loggers`, `interrupt`, `distributed`, `runtime`, `engine`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

from omegaconf import OmegaConf
from torch import nn

from sdrun import checkpoint as ckpt
from sdrun import distributed, run_state
from sdrun.engine import EpochTally, LoopOptions, NonFiniteLoss, StepState
from sdrun.errors import ConfigError, TrainingDiverged
from sdrun.interrupt import RunStopped, StopRequest
from sdrun.loggers import (
    METRICS,
    SUMMARY,
    Logger,
    MetricsFile,
    NullLogger,
    build_logger,
    write_summary,
)
from sdrun.optim import build_optimizer
from sdrun.run_state import Progress
from sdrun.runtime import Runtime, configure_determinism, resolve_runtime, seed_everything
from sdrun.transfer import detection, loop, segmentation
from sdrun.transfer.backbone import Backbone, create_features, freeze, normalization, open_backbone
from sdrun.transfer.config import TransferConfig, validate
from sdrun.transfer.loader import TaskLoader
from sdrun.transfer.schedule import FinetunePlan
from sdrun.transfer.transforms import (
    DetectionTrain,
    SegmentationTrain,
    collate_detection,
    collate_segmentation,
)
from sdrun.transfer.voc import Splits, open_detection, open_segmentation

log = logging.getLogger(__name__)

TASKS: dict[str, ModuleType] = {"detection": detection, "segmentation": segmentation}
# What a resume must not change (prefixes of config keys); paths and runtime keys may change.
DEFINING = (
    "dataset.batch_size", "dataset.limit_train", "dataset.limit_test", "dataset.image_size",
    "dataset.max_size", "dataset.scale_range", "dataset.sbd", "task", "backbone", "schedule",
    "optim", "seed",
)  # fmt: skip


@dataclass
class Parts:
    cfg: TransferConfig
    runtime: Runtime
    dist: distributed.Dist
    backbone: Backbone
    task: ModuleType  # sdrun.transfer.detection or .segmentation: loss, evaluate, METRIC
    model: nn.Module  # the plain module: its state_dict is what gets saved
    train_model: nn.Module  # what the loop calls (DDP-wrapped under torchrun)
    train_loader: TaskLoader
    test_loader: TaskLoader
    plan: FinetunePlan
    state: StepState
    train_sets: str
    train_images: int  # in the whole split
    test_images: int
    frozen: str  # what of the backbone stays fixed, for the log and the summary


def run(cfg: TransferConfig, run_dir: Path) -> dict[str, Any]:
    """Fine-tune `cfg` in `run_dir`; returns the summary (also written to summary.json)."""
    validate(cfg)
    config = config_dict(cfg)
    runtime = resolve_runtime(cfg.trainer)
    dist = distributed.init(runtime.device.type)
    runtime = dataclasses.replace(runtime, device=distributed.local_device(runtime.device, dist))
    resume = run_state.load_for_resume(cfg.resume, config, DEFINING)
    ckpt.guard_run_dir(run_dir, resuming=resume is not None)
    configure_determinism(cfg.trainer.deterministic, runtime.device)
    seed_everything(cfg.seed)
    parts = build(cfg, runtime, dist)
    progress = Progress()
    tally = None
    if resume is not None:
        tally = run_state.restore(resume, parts.model, parts.state, progress, runtime.device)
        if tally is not None and tally.sums is not None and not dist.is_main:
            tally.sums.zero_()  # a stop stores the sums over every process: count them once
    metrics = MetricsFile(run_dir / METRICS)
    logger: Logger = NullLogger()
    if dist.is_main:
        metrics.truncate_after(progress.epoch)
        logger = build_logger(cfg.logger, run_dir, config, name=run_dir.name,
                              run_id=progress.wandb_id)  # fmt: skip
    progress.wandb_id = getattr(logger, "run_id", None)
    _log_start(parts)
    try:
        with StopRequest() as stop:
            _train(parts, progress, tally, run_dir, metrics, logger, stop)
        summary = _summary(parts, progress)
        if dist.is_main:
            write_summary(run_dir / SUMMARY, summary)
            logger.summary(summary)
    finally:
        logger.finish()
    metric = parts.task.METRIC
    log.info("done: %s %.2f (%s backbone %s); %s", metric, summary[metric],
             parts.backbone.method, parts.backbone.model, run_dir)  # fmt: skip
    return summary


def config_dict(cfg: TransferConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def open_data(cfg: TransferConfig, dist: distributed.Dist) -> Splits:
    d = cfg.dataset
    common = dict(download=d.download, is_main=dist.is_main, limit_train=d.limit_train,
                  limit_test=d.limit_test)  # fmt: skip
    root = Path(d.root).expanduser()
    if cfg.task.name == "detection":
        return open_detection(root, train_transform=DetectionTrain(), **common)
    crop = SegmentationTrain(d.image_size, (d.scale_range[0], d.scale_range[1]))
    return open_segmentation(root, sbd=d.sbd, train_transform=crop, **common)


def build(cfg: TransferConfig, runtime: Runtime, dist: distributed.Dist) -> Parts:
    """Everything a user can get wrong is checked here, before the first step."""
    if cfg.dataset.batch_size % dist.world_size:
        raise ConfigError(
            f"dataset.batch_size={cfg.dataset.batch_size} is not divisible by the "
            f"{dist.world_size} processes; use a multiple of {dist.world_size} (it is global)"
        )
    segmenting = cfg.task.name == "segmentation"
    per_process = cfg.dataset.batch_size // dist.world_size
    if segmenting and per_process < 2 and not cfg.trainer.sync_bn:
        raise ConfigError(
            f"dataset.batch_size={cfg.dataset.batch_size} leaves {per_process} image per process; "
            "DeepLabV3's BatchNorm needs 2 or more: raise dataset.batch_size or set "
            "trainer.sync_bn=true"
        )
    backbone = open_backbone(cfg.backbone or "")
    task = TASKS[cfg.task.name]
    splits = open_data(cfg, dist)
    features = create_features(
        backbone, cfg.task.out_indices, cfg.task.output_stride if segmenting else None
    )
    freeze_at, freeze_bn = cfg.task.freeze_at, cfg.task.freeze_bn
    if backbone.kind == "scratch":  # random weights: freezing them would only hobble the net
        freeze_at, freeze_bn = 0, False
    features = freeze(features, freeze_at, freeze_bn)
    frozen = f"{freeze_at} level(s), BatchNorm {'frozen' if freeze_bn else 'trained'}"
    mean, std = normalization(backbone, features)
    channels_last = runtime.channels_last
    if segmenting:
        model = segmentation.build_segmenter(features, cfg, channels_last)
        move = segmentation.mover(mean, std, channels_last)
        collate = collate_segmentation
    else:
        model = detection.build_detector(features, mean, std, cfg, channels_last)
        move, collate = detection.move, collate_detection
    model.to(runtime.device, memory_format=runtime.memory_format)
    common = dict(collate=collate, move=move, device=runtime.device, seed=cfg.seed,
                  num_workers=cfg.dataset.num_workers, rank=dist.rank,
                  world_size=dist.world_size)  # fmt: skip
    train = TaskLoader(splits.train, per_process, train=True, **common)
    eval_batch = max(1, cfg.dataset.eval_batch_size // dist.world_size)
    test = TaskLoader(splits.test, eval_batch, train=False, **common)
    s = cfg.schedule
    plan = FinetunePlan(s.name, s.epochs, len(train), cfg.optim.lr, s.warmup_iters,
                        tuple(s.milestones), s.gamma, s.power)  # fmt: skip
    state = StepState(
        build_optimizer(model, cfg.optim, runtime.device), runtime.grad_scaler(), step=0
    )
    train_model = distributed.wrap(model, dist, runtime.device, cfg.trainer.sync_bn)
    return Parts(cfg, runtime, dist, backbone, task, model, train_model, train, test, plan,
                 state, splits.train_sets, len(splits.train), len(splits.test),  # type: ignore[arg-type]
                 frozen)  # fmt: skip


def _train(parts: Parts, progress: Progress, tally: Optional[EpochTally], run_dir: Path,
           metrics: MetricsFile, logger: Logger, stop: StopRequest) -> None:  # fmt: skip
    cfg, plan, device = parts.cfg, parts.plan, parts.runtime.device
    mark = time.perf_counter()
    for epoch in range(progress.epoch + 1, plan.epochs + 1):
        tally = tally or EpochTally()
        options = LoopOptions(
            log_every=cfg.trainer.log_every,
            check_every=cfg.trainer.log_every,
            desc=f"{cfg.task.name} epoch {epoch}/{plan.epochs}",
            should_stop=_with_fault_signal(stop, parts.state),
            nan_at_step=_fault_step("SDRUN_FAULT_NAN_STEP"),
            reduce=distributed.sum_,
        )
        batches = itertools.islice(parts.train_loader.epoch(epoch), tally.batches, None)
        try:
            result = loop.train_one_epoch(
                parts.train_model, parts.task.loss, batches, len(parts.train_loader),
                parts.state, plan, parts.runtime, tally, options, agree=parts.dist.enabled,
            )  # fmt: skip
        except NonFiniteLoss as err:
            raise TrainingDiverged(
                f"training diverged: the loss became NaN or infinite in epoch {epoch} by step "
                f"{err.step}; the last good checkpoint (epoch {progress.epoch}) is kept; lower "
                "optim.lr or raise schedule.warmup_iters and start a new run"
            ) from None
        if result is None:  # a signal: keep the partial epoch and stop
            if parts.dist.is_main:
                _save(parts, progress, run_dir, tally)
            raise _stopped(stop, run_dir, f"in epoch {epoch} after step {tally.batches}")
        tally = None
        record, per_class = _record(parts, epoch, result)
        progress.epoch = epoch
        progress.train_seconds += result.seconds
        if per_class is not None:
            progress.history = {**record, "per_class": per_class}
        progress.wall_seconds += time.perf_counter() - mark
        mark = time.perf_counter()
        if parts.dist.is_main:
            _save(parts, progress, run_dir)
            metrics.append(record)
            logger.log(record, step=epoch)
        _log_epoch(parts, record)
        if distributed.any_rank(stop(), device) and epoch < plan.epochs:
            raise _stopped(stop, run_dir, f"after epoch {epoch}")


def _record(parts: Parts, epoch: int, result: loop.EpochResult) -> tuple[dict, Optional[dict]]:
    """The epoch's metrics line; the test split is scored every `schedule.eval_every` epochs
    and at the last (its keys are null in between)."""
    start = time.perf_counter()
    record: dict[str, Any] = {"epoch": epoch, "lr": result.lr, "train/loss": result.loss}
    per_class = None
    if epoch % parts.cfg.schedule.eval_every == 0 or epoch == parts.plan.epochs:
        distributed.sync_state(parts.model)  # rank 0's BN statistics on every shard
        scores = parts.task.evaluate(parts.model, parts.test_loader.epoch(0), parts.runtime)
        per_class = scores.pop("per_class")
        counted = scores.pop("test/images")
        if counted != parts.test_images:  # every test image exactly once, over all processes
            raise RuntimeError(f"evaluated {counted} images of a {parts.test_images}-image split")
        record.update(scores)
    else:
        record[parts.task.METRIC] = None
    record["time/epoch_s"] = result.seconds
    record["time/eval_s"] = time.perf_counter() - start
    record["throughput/img_per_s"] = result.img_per_s
    if parts.state.scaler is not None:
        record["train/skipped_steps"] = result.skipped_steps
    return record, per_class


def _fault_step(name: str) -> Optional[int]:
    """Fault injection for tests: SDRUN_FAULT_NAN_STEP=k makes global step k's loss NaN (as in
    sdrun); SDRUN_FAULT_SIGTERM_STEP=k sends this process a real SIGTERM after step k."""
    value = os.environ.get(name)
    return int(value) if value else None


def _with_fault_signal(stop: StopRequest, state: StepState):
    at = _fault_step("SDRUN_FAULT_SIGTERM_STEP")
    if at is None:
        return stop

    def check() -> bool:
        if state.step == at and stop.signum is None:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by `stop`, like one from outside
        return stop()

    return check


def _stopped(stop: StopRequest, run_dir: Path, where: str) -> RunStopped:
    name = signal.Signals(stop.signum).name
    return RunStopped(
        f"stopped by {name} {where}; checkpoint written; continue with: "
        f"sdrun-transfer resume={run_dir}",
        stop.signum,
    )


def _save(parts: Parts, progress: Progress, run_dir: Path,
          tally: Optional[EpochTally] = None) -> None:  # fmt: skip
    run_state.save_last(run_dir, config_dict(parts.cfg), parts.model, None, parts.state,
                        parts.plan, progress, tally)  # fmt: skip


def _summary(parts: Parts, progress: Progress) -> dict[str, Any]:
    cfg, last = parts.cfg, progress.history
    metric = parts.task.METRIC
    keys = [k for k in last if k.startswith("test/")]
    return {
        "complete": progress.epoch == parts.plan.epochs,
        "task": cfg.task.name,
        "dataset": cfg.dataset.name,
        **{k: last.get(k) for k in keys},
        metric: last.get(metric),
        "test/per_class": last.get("per_class"),
        **parts.backbone.summary(),
        "backbone/frozen": parts.frozen,
        "data/train": parts.train_sets,
        "data/train_images": parts.train_images,
        "data/test_images": parts.test_images,
        "seed": cfg.seed,
        "epochs": parts.plan.epochs,
        "time/train_s": progress.train_seconds,
        "time/wall_s": progress.wall_seconds,
        "device": parts.runtime.device_name,
        "processes": parts.dist.world_size,
        "params": sum(p.numel() for p in parts.model.parameters()),
    }


def _log_start(parts: Parts) -> None:
    b = parts.backbone
    log.info(
        "%s: %s backbone %s (%s) from %s; frozen: %s; %d train (%s) / %d test images per "
        "process; %d epochs of %d steps; device %s, amp %s",
        parts.cfg.task.name, b.method, b.model, b.kind, b.checkpoint or b.spec, parts.frozen,
        parts.train_loader.num_samples, parts.train_sets, parts.test_loader.num_samples,
        parts.plan.epochs, parts.plan.steps_per_epoch, parts.runtime.device_name,
        parts.runtime.amp_dtype or "off",
    )  # fmt: skip


def _log_epoch(parts: Parts, record: dict[str, Any]) -> None:
    value = record.get(parts.task.METRIC)
    score = "-" if value is None else f"{value:.2f}"
    log.info("epoch %d/%d lr %.5f loss %.4f | %s %s | %.1f img/s %.1fs", record["epoch"],
             parts.plan.epochs, record["lr"], record["train/loss"], parts.task.METRIC, score,
             record["throughput/img_per_s"], record["time/epoch_s"])  # fmt: skip
