"""One transfer run: open the backbone and VOC, build the task's model around the backbone,
fine-tune it for `schedule.epochs`, evaluating, logging and checkpointing every epoch.

The run folder is sdrun's: `.hydra/`, `metrics.jsonl`, `summary.json`, atomic
`checkpoints/last.pt` (+ `prev.pt`), `resume=`, a checkpoint on SIGTERM/Ctrl-C, a stop on a
non-finite loss, wandb, torchrun DDP, through the same modules (`checkpoint`, `run_state`,
`loggers`, `interrupt`, `distributed`, `runtime`) and sdrun's one epoch loop (`engine`), called
with the task's loss.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any, Optional

from sdrun.errors import TrainingDiverged
from sdrun.runfolder import distributed, run_state
from sdrun.runfolder.interrupt import StopRequest, stopped
from sdrun.runfolder.run_folder import Outputs, how_it_ran, opened, outputs, write_result
from sdrun.runfolder.run_state import Progress, kept_checkpoint, schema_defaults
from sdrun.training.engine import (
    EpochResult,
    EpochTally,
    LoopOptions,
    LossStep,
    NonFiniteLoss,
    StepState,
    train_one_epoch,
)
from sdrun.transfer.config import TransferConfig, validate
from sdrun.transfer.parts import Parts, build, config_dict

log = logging.getLogger(__name__)
COMMAND = "sdrun-transfer"

# What a resume must not change (prefixes of config keys); paths and runtime keys may change.
DEFINING = (
    "dataset.batch_size", "dataset.limit_train", "dataset.limit_test", "dataset.image_size",
    "dataset.max_size", "dataset.scale_range", "dataset.sbd", "dataset.years", "task", "backbone",
    "schedule", "optim", "seed",
)  # fmt: skip


def run(cfg: TransferConfig, run_dir: Path) -> dict[str, Any]:
    """Fine-tune `cfg` in `run_dir`; returns the summary (also written to summary.json)."""
    validate(cfg)
    config = config_dict(cfg)
    defaults = schema_defaults(TransferConfig)  # what keys newer than a checkpoint meant
    with opened(cfg.trainer, cfg.seed, cfg.resume, run_dir, config, DEFINING, defaults,
                schema=TransferConfig) as start:  # fmt: skip
        parts = build(cfg, start.runtime, start.dist)
        progress = Progress()
        tally = None
        if start.resume is not None:
            tally = run_state.restore(start.resume, parts.model, parts.state, progress,
                                      start.runtime.device, counted_here=start.dist.is_main,
                                      path=start.resume_path, plan=parts.plan)  # fmt: skip
        with outputs(cfg.logger, run_dir, config, start.dist, progress,
                     resuming=start.resume is not None) as outs:  # fmt: skip
            _log_start(parts)
            with StopRequest() as stop:
                _train(parts, progress, tally, run_dir, outs, stop)
            result = _summary(parts, progress)
            write_result(run_dir, result, outs, start.dist)
    metric = parts.task.METRIC
    log.info("done: %s %.2f (%s backbone %s); %s", metric, result[metric],
             parts.backbone.method, parts.backbone.model, run_dir)  # fmt: skip
    return result


def _train(parts: Parts, progress: Progress, tally: Optional[EpochTally], run_dir: Path,
           outs: Outputs, stop: StopRequest) -> None:  # fmt: skip
    cfg, plan, device = parts.cfg, parts.plan, parts.runtime.device
    mark = time.perf_counter()
    for epoch in range(progress.epoch + 1, plan.epochs + 1):
        tally = tally or EpochTally()
        options = LoopOptions(
            log_every=cfg.trainer.log_every,
            check_every=cfg.trainer.log_every,
            desc=f"{cfg.task.name} epoch {epoch}/{plan.epochs}",
            should_stop=outs.watched(_with_fault_signal(stop, parts.state)),
            sync_stop=parts.dist.enabled,
            nan_at_step=_fault_step("SDRUN_FAULT_NAN_STEP"),
            reduce=distributed.sum_,
        )
        batches = parts.train_loader.epoch(epoch, start=tally.batches)  # skipped: never read
        try:
            result = train_one_epoch(
                parts.train_model, LossStep(parts.train_model, parts.task.loss), batches,
                len(parts.train_loader), parts.state, plan, parts.runtime, tally, options,
            )  # fmt: skip
        except NonFiniteLoss as err:
            raise TrainingDiverged(
                f"training diverged: the loss became NaN or infinite in epoch {epoch} by step "
                f"{err.step}; {kept_checkpoint(progress.epoch)}; lower optim.lr or raise "
                "schedule.warmup_iters and start a new run"
            ) from None
        if result is None:  # a signal: keep the partial epoch and stop
            progress.add_time(time.perf_counter() - mark, parts.dist.world_size)
            if parts.dist.is_main:
                _save(parts, progress, run_dir, outs, tally)
            raise stopped(stop, run_dir, f"in epoch {epoch} after step {tally.batches}", COMMAND)
        tally = None
        record, per_class = _record(parts, epoch, result)
        progress.epoch = epoch
        progress.train_seconds += result.seconds
        if per_class is not None:
            progress.history = {**record, "per_class": per_class}
        progress.add_time(time.perf_counter() - mark, parts.dist.world_size)
        mark = time.perf_counter()
        if parts.dist.is_main:
            outs.epoch_done(record, partial(_save, parts, progress, run_dir, outs))
        _log_epoch(parts, record)
        if distributed.any_rank(stop(), device) and epoch < plan.epochs:
            raise stopped(stop, run_dir, f"after epoch {epoch}", COMMAND)


def _record(parts: Parts, epoch: int, result: EpochResult) -> tuple[dict, Optional[dict]]:
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


def _save(parts: Parts, progress: Progress, run_dir: Path, outs: Outputs,
          tally: Optional[EpochTally] = None) -> None:  # fmt: skip
    run_state.save_last(run_dir, config_dict(parts.cfg), parts.model, None, parts.state,
                        parts.plan, progress, tally)  # fmt: skip
    outs.saved(progress.saved_at)


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
        **how_it_ran(progress, parts.runtime, parts.dist),
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
