"""One run: build the parts, then train the cycles, swapping in the snapshot teacher at each
cycle end, evaluating, logging and checkpointing every epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from sdrun import checkpoint as ckpt
from sdrun import distributed, run_state
from sdrun.config import Config, validate
from sdrun.data import Batches, build_loaders
from sdrun.distill import LossWeights
from sdrun.engine import (
    EpochResult,
    EpochTally,
    LoopOptions,
    NonFiniteLoss,
    StepState,
    predict,
    train_one_epoch,
)
from sdrun.ensemble import cycle_snapshots, snapshot_ensemble
from sdrun.errors import TrainingDiverged
from sdrun.identity import current_sweep, run_identity
from sdrun.interrupt import StopRequest, stopped
from sdrun.loggers import (
    METRICS,
    SUMMARY,
    Logger,
    MetricsFile,
    NullLogger,
    build_logger,
    write_summary,
)
from sdrun.metrics import accuracy, agreement, mean_kl
from sdrun.models import build_model
from sdrun.optim import build_optimizer
from sdrun.run_plots import final_plots
from sdrun.run_state import Progress, kept_checkpoint
from sdrun.runtime import (
    Runtime,
    configure_numerics,
    resolve_runtime,
    seed_everything,
)
from sdrun.schedule import CyclePlan, plan_from_config
from sdrun.teacher import (
    FrozenTeacher,
    PrecomputedTeacher,
    load_teacher_weights,
    snapshot,
    teacher_dtype,
)

log = logging.getLogger(__name__)

AMP_NAMES = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class TeacherState:
    """The current teacher and its test-set predictions (it is frozen: computed once)."""

    model: FrozenTeacher
    logits: Tensor
    top1: float
    top5: float
    val: Optional[dict[int, float]] = None  # top-1/top-5 on the validation split, if any


@dataclass
class Parts:
    cfg: Config
    runtime: Runtime
    num_classes: int
    model: nn.Module  # the plain module: its state_dict is what gets saved
    train_model: nn.Module  # what the loop calls (compiled when asked)
    train_loader: Batches
    test_loader: Batches
    plan: CyclePlan
    state: StepState
    dist: distributed.Dist
    session: Optional[run_state.Session] = None  # rank 0's heartbeat and lost-work count
    val_loader: Optional[Batches] = None  # dataset.val_split > 0


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Train `cfg` in `run_dir`; returns the summary (also written to summary.json)."""
    validate(cfg)
    runtime = resolve_runtime(cfg.trainer)
    # torch's numerics switches are process-wide: set for this run and given back after it (on
    # return or error), so the next job of a multirun does not inherit them.
    with configure_numerics(cfg.trainer.deterministic, runtime.device, runtime.amp_dtype):
        return _run(cfg, run_dir, runtime)


def _run(cfg: Config, run_dir: Path, runtime: Runtime) -> dict[str, Any]:
    dist = distributed.init(runtime.device.type)
    runtime = dataclasses.replace(runtime, device=distributed.local_device(runtime.device, dist))
    resume = run_state.load_for_resume(cfg.resume, _config_dict(cfg))
    ckpt.guard_run_dir(run_dir, resuming=resume is not None)
    seed_everything(cfg.seed)
    parts = _build(cfg, runtime, dist)
    progress = Progress()
    tally: Optional[EpochTally] = None
    if resume is None:
        teacher = _initial_teacher(parts)
    else:
        teacher, tally = _restore(parts, progress, resume)
    metrics = MetricsFile(run_dir / METRICS)
    if dist.is_main:
        metrics.truncate_after(progress.epoch)
    logger: Logger = NullLogger()
    if dist.is_main:  # one wandb run, one set of files: rank 0's
        who = run_identity(cfg, current_sweep())
        logger = build_logger(cfg.logger, run_dir, _config_dict(cfg), name=who.name,
                              run_id=progress.wandb_id, group=who.group, job_type=who.job_type,
                              tags=who.tags)  # fmt: skip
    progress.wandb_id = getattr(logger, "run_id", None)
    if dist.is_main:
        parts.session = run_state.start_session(
            run_dir, progress, dist.world_size, resuming=resume is not None
        )
    _log_start(parts, progress)
    exit_code = 1
    try:
        with StopRequest() as stop:
            teacher = _train(parts, progress, teacher, tally, run_dir, metrics, logger, stop)
        distributed.check_identical(parts.model.state_dict(), "the final student weights")
        summary = _summary(parts, progress, teacher)
        summary.update(_ensemble(parts, run_dir))
        if dist.is_main:
            write_summary(run_dir / SUMMARY, summary)
            logger.summary(summary)
            if logger.active:  # drawing costs a second: only for a logger that takes it
                logger.log_images(final_plots(run_dir, _config_dict(cfg), summary), progress.epoch)
        exit_code = 0
    finally:
        logger.finish(exit_code)
    log.info("done: %s; %s", _final_line(summary), run_dir)
    return summary


def _final_line(summary: dict[str, Any]) -> str:
    line = (
        f"student top-1 {summary['student/top1']:.2f}% (best {summary['student/best_top1']:.2f}% "
        f"at epoch {summary['student/best_epoch']}, chosen on the test set)"
    )
    if summary.get("val/top1") is not None:
        line += (
            f"; validation top-1 {summary['val/top1']:.2f}% (best at epoch "
            f"{summary['val/best_epoch']}, where the test top-1 was "
            f"{summary['student/top1_at_val_best']:.2f}%)"
        )
    return line


def _build(cfg: Config, runtime: Runtime, dist: distributed.Dist) -> Parts:
    data = build_loaders(
        cfg.dataset,
        seed=cfg.seed,
        device=runtime.device,
        channels_last=runtime.channels_last,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    model = build_model(
        cfg.model.name,
        data.num_classes,
        pretrained=cfg.model.pretrained,
        kwargs=dict(cfg.model.kwargs),
    )
    model.to(runtime.device, memory_format=runtime.memory_format)
    plan = plan_from_config(cfg.schedule, cfg.optim.lr, len(data.train))
    state = StepState(
        build_optimizer(model, cfg.optim, runtime.device), runtime.grad_scaler(), step=0
    )
    train_model = distributed.wrap(model, dist, runtime.device, cfg.trainer.sync_bn)
    if cfg.trainer.compile:
        train_model = torch.compile(train_model, mode=cfg.trainer.compile_mode)
    return Parts(cfg, runtime, data.num_classes, model, train_model, data.train, data.test, plan,
                 state, dist, val_loader=data.val)  # fmt: skip


def _initial_teacher(parts: Parts) -> Optional[TeacherState]:
    """Classic KD has its teacher from the start; SD gets its first at the end of cycle 1."""
    if parts.cfg.distill.name != "kd":
        return None
    source = load_teacher_weights(
        parts.model, parts.cfg.distill.teacher_checkpoint, seed=parts.cfg.seed
    )
    return _evaluate_teacher(parts, _frozen(parts, source))


def _frozen(parts: Parts, source: nn.Module) -> FrozenTeacher:
    runtime = parts.runtime
    return FrozenTeacher(
        source,
        dtype=teacher_dtype(runtime.amp_dtype),
        memory_format=runtime.memory_format,
        compile=parts.cfg.trainer.compile,
        compile_mode=parts.cfg.trainer.compile_mode,
        input_shape=_input_shape(parts.cfg),
    )


def _input_shape(cfg: Config) -> tuple[int, int, int]:
    """One training image's (C, H, W), for the teacher's probe batch: CIFAR is 32 x 32, fake
    images and image-folder crops are `dataset.image_size` square; all RGB."""
    size = 32 if cfg.dataset.name in ("cifar10", "cifar100") else cfg.dataset.image_size
    return (3, size, size)


def _evaluate_teacher(parts: Parts, teacher: FrozenTeacher) -> TeacherState:
    logits, labels = _predict_test_set(parts, teacher)
    acc = accuracy(logits, labels)
    return TeacherState(teacher, logits, acc[1], acc[5], _val_accuracy(parts, teacher))


def _predict_test_set(parts: Parts, model: nn.Module) -> tuple[Tensor, Tensor]:
    """Logits and labels of the whole test set: each rank predicts its shard, then they share."""
    return _predict(parts, model, parts.test_loader)


def _predict(parts: Parts, model: nn.Module, loader: Batches) -> tuple[Tensor, Tensor]:
    logits, labels = predict(model, loader.epoch(0), parts.runtime)
    return distributed.gather_rows(logits), distributed.gather_rows(labels)


def _val_accuracy(parts: Parts, model: nn.Module) -> Optional[dict[int, float]]:
    """Top-1 and top-5 on the validation split (None without one)."""
    if parts.val_loader is None:
        return None
    return accuracy(*_predict(parts, model, parts.val_loader))


def _take_snapshot(parts: Parts, previous: Optional[TeacherState]) -> TeacherState:
    """The teacher swap: the student at this cycle end becomes the next cycle's teacher."""
    distributed.sync_state(parts.model)  # the same snapshot on every rank, BN statistics too
    if previous is None:
        teacher = _frozen(parts, parts.model)
    else:
        teacher = previous.model
        teacher.refresh(parts.model)  # in place: a compiled teacher stays compiled
    mark = distributed.check_identical(teacher.snapshot_state, "the teacher snapshot")
    log.info("teacher: snapshot %s, identical on %d process(es)", mark, parts.dist.world_size)
    return _evaluate_teacher(parts, teacher)


def _epoch_batches(parts: Parts, epoch: int, tally: EpochTally) -> Iterator[tuple[Tensor, Tensor]]:
    """The epoch's training batches; a resumed mid-epoch checkpoint skips those already done
    (in the sampler: skipped images are never read)."""
    return parts.train_loader.epoch(epoch, start=tally.batches)


def _teacher_for_epoch(
    parts: Parts, teacher: Optional[TeacherState], epoch: int, tally: EpochTally
) -> Optional[Callable[[Tensor], Tensor]]:
    """What the loop calls for teacher logits: the teacher itself, or its logits of the epoch's
    batches predicted ahead in large batches (trainer.teacher_precompute)."""
    if teacher is None:
        return None
    chunk = parts.cfg.trainer.teacher_precompute
    if not chunk:
        return teacher.model
    return PrecomputedTeacher(teacher.model, _epoch_batches(parts, epoch, tally), chunk)


def _train(
    parts: Parts,
    progress: Progress,
    teacher: Optional[TeacherState],
    tally: Optional[EpochTally],
    run_dir: Path,
    metrics: MetricsFile,
    logger: Logger,
    stop: StopRequest,
) -> Optional[TeacherState]:
    cfg, plan = parts.cfg, parts.plan
    weights = LossWeights(
        cfg.distill.temperature, cfg.distill.ce_weight, cfg.distill.kd_weight, cfg.distill.smooth
    )
    mark = time.perf_counter()
    for epoch in range(progress.epoch + 1, plan.epochs + 1):
        cycle = plan.cycle_of_epoch(epoch)
        tally = tally or EpochTally()
        options = LoopOptions(
            log_every=cfg.trainer.log_every,
            check_every=cfg.trainer.log_every,
            desc=f"epoch {epoch}/{plan.epochs} cycle {cycle}/{plan.num_cycles}",
            should_stop=stop,
            sync_stop=parts.dist.enabled,
            nan_at_step=_fault_nan_step(parts.dist.rank),
            reduce=distributed.sum_,
            on_log=logger.log_step if parts.dist.is_main else None,
        )
        if parts.session is not None:  # the heartbeat rides on the per-step stop check
            options.should_stop = parts.session.watch(options.should_stop)
        try:
            result = train_one_epoch(
                parts.train_model,
                _teacher_for_epoch(parts, teacher, epoch, tally),
                _epoch_batches(parts, epoch, tally),
                len(parts.train_loader),
                parts.state,
                plan,
                weights,
                parts.runtime,
                tally,
                options,
            )
        except NonFiniteLoss as err:
            if parts.dist.is_main:
                _write_diverged(parts, progress, teacher, run_dir, epoch, err.step)
            raise TrainingDiverged(_diverged(epoch, cycle, teacher, err.step, progress)) from None
        if result is None:  # a signal: keep the partial epoch and stop
            progress.add_time(time.perf_counter() - mark, parts.dist.world_size)
            if parts.dist.is_main:
                _save(parts, progress, teacher, run_dir, tally)
            raise stopped(stop, run_dir, f"in epoch {epoch} after step {tally.batches}")
        tally = None
        record = _evaluate(parts, epoch, cycle, result, teacher)
        _update_progress(progress, record, result)
        if plan.is_cycle_end(epoch):
            if parts.dist.is_main:
                run_state.save_cycle_snapshot(run_dir, _config_dict(cfg), parts.model, epoch, cycle)
                if cfg.logger.log_checkpoints:
                    _log_cycle_checkpoint(logger, run_dir, epoch, cycle, record)
            if cfg.distill.name == "sd" and epoch < plan.epochs:
                teacher = _take_snapshot(parts, teacher)
        progress.add_time(time.perf_counter() - mark, parts.dist.world_size)
        mark = time.perf_counter()
        if parts.dist.is_main:
            _save(parts, progress, teacher, run_dir)
            metrics.append(record)
            logger.log(record, step=epoch)
        _log_epoch(record, plan)
        if distributed.any_rank(stop(), parts.runtime.device) and epoch < plan.epochs:
            raise stopped(stop, run_dir, f"after epoch {epoch}")
    return teacher


def _log_cycle_checkpoint(
    logger: Logger, run_dir: Path, epoch: int, cycle: int, record: dict[str, Any]
) -> None:
    path = run_dir / ckpt.CHECKPOINT_DIR / f"cycle{cycle}.pt"
    metadata = {k: record.get(k) for k in ("epoch", "cycle", "student/top1", "val/top1")}
    logger.log_checkpoint(path, [f"cycle{cycle}", f"epoch{epoch}", "latest"], metadata)


def _fault_nan_step(rank: int) -> Optional[int]:
    """Fault injection for tests: SDRUN_FAULT_NAN_STEP=k makes global step k's loss NaN, on
    every process or, with SDRUN_FAULT_NAN_RANK=r, on rank r only."""
    value, only = os.environ.get("SDRUN_FAULT_NAN_STEP"), os.environ.get("SDRUN_FAULT_NAN_RANK")
    if not value or (only and int(only) != rank):
        return None
    return int(value)


def _diverged(
    epoch: int, cycle: int, teacher: Optional[TeacherState], step: int, progress: Progress
) -> str:
    who = "with the teacher active" if teacher is not None else "without a teacher"
    return (
        f"training diverged: the loss became NaN or infinite in epoch {epoch} (cycle {cycle}, "
        f"{who}) by step {step}; {kept_checkpoint(progress.epoch)}; "
        "lower optim.lr or add schedule.warmup_epochs and start a new run"
    )


def _evaluate(
    parts: Parts, epoch: int, cycle: int, result: EpochResult, teacher: Optional[TeacherState]
) -> dict[str, Any]:
    start = time.perf_counter()
    distributed.sync_state(parts.model)  # evaluate rank 0's BN statistics on every shard
    logits, labels = _predict_test_set(parts, parts.model)
    acc = accuracy(logits, labels)
    record: dict[str, Any] = {
        "epoch": epoch,
        "cycle": cycle,
        "lr": result.lr,
        "train/loss": result.loss,
        "train/ce": result.ce,
        "train/kd": result.kd,
        "train/top1": result.top1,
        "student/top1": acc[1],
        "student/top5": acc[5],
        "teacher/top1": None if teacher is None else teacher.top1,
        "teacher/top5": None if teacher is None else teacher.top5,
        "distill/agreement": None if teacher is None else agreement(logits, teacher.logits),
        "distill/kl": None if teacher is None else mean_kl(teacher.logits, logits),
        "time/epoch_s": result.seconds,
        "time/eval_s": time.perf_counter() - start,
        "throughput/img_per_s": result.img_per_s,
    }
    if parts.state.scaler is not None:  # fp16: overflowing steps the loss scaler skipped
        record["train/skipped_steps"] = result.skipped_steps
    if parts.val_loader is not None:
        record.update(_val_record(parts, teacher))
    return record


def _val_record(parts: Parts, teacher: Optional[TeacherState]) -> dict[str, Any]:
    """The validation split's metrics (the teacher's are computed once per teacher)."""
    val = _val_accuracy(parts, parts.model)
    teacher_val = None if teacher is None else teacher.val
    return {
        "val/top1": val[1],
        "val/top5": val[5],
        "teacher/val_top1": None if teacher_val is None else teacher_val[1],
        "teacher/val_top5": None if teacher_val is None else teacher_val[5],
    }


def _update_progress(progress: Progress, record: dict[str, Any], result: EpochResult) -> None:
    progress.epoch = record["epoch"]
    progress.train_seconds += result.seconds
    progress.history = record
    if record["student/top1"] > progress.best_top1:
        progress.best_top1 = record["student/top1"]
        progress.best_epoch = record["epoch"]
    if record.get("val/top1") is not None and record["val/top1"] > progress.val_best_top1:
        progress.val_best_top1 = record["val/top1"]  # the first epoch of the best, like the test's
        progress.val_best_epoch = record["epoch"]
        progress.top1_at_val_best = record["student/top1"]


def _save(
    parts: Parts,
    progress: Progress,
    teacher: Optional[TeacherState],
    run_dir: Path,
    tally: Optional[EpochTally] = None,
) -> None:
    teacher_state = None if teacher is None else teacher.model.snapshot_state
    run_state.save_last(run_dir, _config_dict(parts.cfg), parts.model, teacher_state,
                        parts.state, parts.plan, progress, tally)  # fmt: skip
    if parts.session is not None:
        parts.session.saved(progress.saved_at)


def _restore(
    parts: Parts, progress: Progress, payload: dict[str, Any]
) -> tuple[Optional[TeacherState], Optional[EpochTally]]:
    tally = run_state.restore(payload, parts.model, parts.state, progress, parts.runtime.device)
    if tally is not None and not parts.dist.is_main:
        tally.sums = None  # the saved partial sums are over all processes: counted on rank 0 only
    if payload.get("teacher") is None:
        return _initial_teacher(parts), tally
    source = snapshot(parts.model)
    source.load_state_dict(payload["teacher"])
    return _evaluate_teacher(parts, _frozen(parts, source)), tally


def _ensemble(parts: Parts, run_dir: Path) -> dict[str, Any]:
    """The snapshot ensemble: average softmax of the cycle-end students (all ranks take part)."""
    snapshots = cycle_snapshots(run_dir)
    if parts.plan.num_cycles < 2 or len(snapshots) != parts.plan.num_cycles:
        return {}  # one cycle: the "ensemble" would just be the final student
    return snapshot_ensemble(parts.model, snapshots, lambda m: _predict_test_set(parts, m))


def _summary(parts: Parts, progress: Progress, teacher: Optional[TeacherState]) -> dict[str, Any]:
    cfg, last = parts.cfg, progress.history
    return {
        "complete": progress.epoch == parts.plan.epochs,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "method": cfg.distill.name,
        "schedule": cfg.schedule.name,
        "seed": cfg.seed,
        "root_seed": cfg.seed if cfg.root_seed is None else cfg.root_seed,
        "epochs": parts.plan.epochs,
        "cycles": parts.plan.num_cycles,
        "student/top1": last.get("student/top1"),
        "student/top5": last.get("student/top5"),
        "student/best_top1": progress.best_top1,
        "student/best_epoch": progress.best_epoch,
        "teacher/top1": None if teacher is None else teacher.top1,
        "teacher/top5": None if teacher is None else teacher.top5,
        "time/train_s": progress.train_seconds,
        "time/wall_s": progress.wall_seconds,
        "time/process_s": progress.process_seconds,  # wall x processes, session by session
        "time/lost_wall_s": progress.lost_wall_seconds,  # work lost to stops (run_state.py)
        "time/lost_process_s": progress.lost_process_seconds,
        "device": parts.runtime.device_name,
        "device_type": parts.runtime.device.type,
        "processes": parts.dist.world_size,
        "amp": AMP_NAMES.get(parts.runtime.amp_dtype, str(parts.runtime.amp_dtype)),
        "sync_bn": bool(cfg.trainer.sync_bn and parts.dist.enabled),  # SyncBN needs torchrun
        "diverged": False,
        "params": sum(p.numel() for p in parts.model.parameters()),
        "val_split": cfg.dataset.val_split,
        **_val_summary(progress, teacher),
    }


def _val_summary(progress: Progress, teacher: Optional[TeacherState]) -> dict[str, Any]:
    """Final validation metrics, and the epoch validation selects with its test top-1."""
    last = progress.history
    if last.get("val/top1") is None:
        return {}
    return {
        "val/top1": last["val/top1"],
        "val/top5": last["val/top5"],
        "val/best_top1": progress.val_best_top1,
        "val/best_epoch": progress.val_best_epoch,
        "student/top1_at_val_best": progress.top1_at_val_best,
        "teacher/val_top1": None if teacher is None or not teacher.val else teacher.val[1],
    }


def _write_diverged(
    parts: Parts,
    progress: Progress,
    teacher: Optional[TeacherState],
    run_dir: Path,
    epoch: int,
    step: int,
) -> None:
    """summary.json of a diverged run: an outcome the report counts, not a killed run. The
    diverging session's work since its last checkpoint is lost work."""
    if parts.session is not None:
        progress.add_lost(*parts.session.unsaved())
    summary = _summary(parts, progress, teacher)
    summary.update(complete=False, diverged=True, diverged_epoch=epoch, diverged_step=step)
    write_summary(run_dir / SUMMARY, summary)


def _config_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def _log_start(parts: Parts, progress: Progress) -> None:
    plan = parts.plan
    val = "" if parts.val_loader is None else f"{parts.val_loader.num_samples} val / "
    log.info(
        "%s on %s: %d train / %s%d test images per process, %d classes; "
        "%d epochs in %d cycle(s) of %d, %d steps/epoch; device %s, amp %s",
        parts.cfg.model.name,
        parts.cfg.dataset.name,
        parts.train_loader.num_samples,
        val,
        parts.test_loader.num_samples,
        parts.num_classes,
        plan.epochs,
        plan.num_cycles,
        plan.cycle_length,
        plan.steps_per_epoch,
        parts.runtime.device_name,
        parts.runtime.amp_dtype or "off",
    )


def _log_epoch(record: dict[str, Any], plan: CyclePlan) -> None:
    teacher = "-" if record["teacher/top1"] is None else f"{record['teacher/top1']:.2f}"
    val = "" if record.get("val/top1") is None else f" (val {record['val/top1']:.2f})"
    log.info(
        "epoch %d/%d cycle %d/%d lr %.4f loss %.3f | student %.2f%s | teacher %s "
        "| %.0f img/s %.1fs",
        record["epoch"],
        plan.epochs,
        record["cycle"],
        plan.num_cycles,
        record["lr"],
        record["train/loss"],
        record["student/top1"],
        val,
        teacher,
        record["throughput/img_per_s"],
        record["time/epoch_s"],
    )
