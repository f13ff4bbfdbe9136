"""One run: build the parts, then train the cycles with the run's method (sdrun/methods/),
giving it the teacher it asks for (teaching.py: a snapshot of the student swapped in at
each cycle end, or a saved model), evaluating (evaluation.py), logging and checkpointing every
epoch, and writing what it reports (summary.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from functools import partial
from pathlib import Path
from typing import Any, Optional

from torch import Tensor

from sdrun.batches import Batch
from sdrun.config import Config, validate
from sdrun.errors import TrainingDiverged
from sdrun.methods import SNAPSHOT, MethodStep
from sdrun.runfolder import checkpoint as ckpt
from sdrun.runfolder import distributed, run_state
from sdrun.runfolder.interrupt import StopRequest, stopped
from sdrun.runfolder.loggers import Logger
from sdrun.runfolder.run_folder import Outputs, opened, outputs, write_result
from sdrun.runfolder.run_names import current_sweep, run_identity
from sdrun.runfolder.run_plots import final_plots
from sdrun.runfolder.run_state import Progress, method_defaults, schema_defaults
from sdrun.sweeps.pruning import SearchTrial, search_trial
from sdrun.training.engine import (
    EpochTally,
    LoopOptions,
    NonFiniteLoss,
    StepState,
    train_one_epoch,
)
from sdrun.training.evaluation import ensemble, epoch_record
from sdrun.training.parts import Parts, build_parts, config_dict
from sdrun.training.schedule import CyclePlan
from sdrun.training.summary import (
    diverged_message,
    final_line,
    summary,
    update_progress,
    write_diverged,
)
from sdrun.training.teaching import (
    TeacherState,
    initial_teacher,
    restored_teacher,
    take_snapshot,
    teacher_for_epoch,
)

log = logging.getLogger(__name__)


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Train `cfg` in `run_dir`; returns the summary (also written to summary.json)."""
    validate(cfg)
    config = config_dict(cfg)
    # what keys newer than a resumed checkpoint meant: the schema's, the method's settings'
    defaults = {**schema_defaults(Config), **method_defaults(cfg.distill)}
    with opened(cfg.trainer, cfg.seed, cfg.resume, run_dir, config, defaults=defaults,
                schema=Config) as start:  # fmt: skip
        parts = build_parts(cfg, start.runtime, start.dist)
        progress = Progress()
        tally: Optional[EpochTally] = None
        if start.resume is None:
            teacher = initial_teacher(parts)
        else:
            teacher, tally = _restore(parts, progress, start.resume, start.resume_path)
        identity = run_identity(cfg, current_sweep()) if start.dist.is_main else None
        trial = search_trial() if start.dist.is_main else None  # a search's job: its trial
        with outputs(cfg.logger, run_dir, config, start.dist, progress,
                     resuming=start.resume is not None, identity=identity) as outs:  # fmt: skip
            _log_start(parts, progress)
            with StopRequest() as stop:
                teacher = _train(parts, progress, teacher, tally, run_dir, outs, stop, trial)
            distributed.check_identical(parts.model.state_dict(), "the final student weights")
            method_state = {k: v for k, v in parts.method.state_dict().items()
                            if isinstance(v, Tensor)}  # fmt: skip
            distributed.check_identical(method_state, "the training method's state")
            result = summary(parts, progress, teacher)
            result.update(ensemble(parts, run_dir))
            write_result(run_dir, result, outs, start.dist)
            if start.dist.is_main and outs.logger.active:  # drawing costs a second
                outs.logger.log_images(final_plots(run_dir, config, result), progress.epoch)
    log.info("done: %s; %s", final_line(result), run_dir)
    return result


def _epoch_batches(parts: Parts, epoch: int, tally: EpochTally) -> Iterator[Batch]:
    """The epoch's training batches; a resumed mid-epoch checkpoint skips those already done
    (in the sampler: skipped images are never read)."""
    return parts.train_loader.epoch(epoch, start=tally.batches)


def _train(
    parts: Parts,
    progress: Progress,
    teacher: Optional[TeacherState],
    tally: Optional[EpochTally],
    run_dir: Path,
    outs: Outputs,
    stop: StopRequest,
    trial: Optional[SearchTrial] = None,
) -> Optional[TeacherState]:
    cfg, plan = parts.cfg, parts.plan
    mark = time.perf_counter()
    for epoch in range(progress.epoch + 1, plan.epochs + 1):
        cycle = plan.cycle_of_epoch(epoch)
        tally = tally or EpochTally()
        options = LoopOptions(
            log_every=cfg.trainer.log_every,
            check_every=cfg.trainer.log_every,
            desc=f"epoch {epoch}/{plan.epochs} cycle {cycle}/{plan.num_cycles}",
            should_stop=outs.watched(_fault_hold(stop, parts.state, run_dir)),
            sync_stop=parts.dist.enabled,
            nan_at_step=_fault_nan_step(parts.dist.rank),
            reduce=distributed.sum_,
            on_log=outs.logger.log_step if parts.dist.is_main else None,
        )
        parts.method.start_epoch(epoch)
        try:
            source = teacher_for_epoch(parts, teacher, _epoch_batches(parts, epoch, tally))
            result = train_one_epoch(
                parts.train_model,
                MethodStep(parts.method, parts.train_model, source),
                _epoch_batches(parts, epoch, tally),
                len(parts.train_loader),
                parts.state,
                plan,
                parts.runtime,
                tally,
                options,
            )
        except NonFiniteLoss as err:
            if parts.dist.is_main:
                write_diverged(parts, progress, teacher, outs, run_dir, epoch, err.step)
            message = diverged_message(epoch, cycle, teacher, err.step, progress)
            raise TrainingDiverged(message) from None
        if result is None:  # a signal: keep the partial epoch and stop
            progress.add_time(time.perf_counter() - mark, parts.dist.world_size)
            if parts.dist.is_main:
                _save(parts, progress, teacher, run_dir, outs, tally)
            raise stopped(stop, run_dir, f"in epoch {epoch} after step {tally.batches}")
        tally = None
        record = epoch_record(parts, epoch, cycle, result, teacher)
        update_progress(progress, record, result)
        if plan.is_cycle_end(epoch):
            if parts.dist.is_main:
                taught = teacher is not None  # the teacher of this cycle, before the swap
                run_state.save_cycle_snapshot(
                    run_dir, config_dict(cfg), parts.model, epoch, cycle, taught
                )
                if cfg.logger.log_checkpoints:
                    _log_cycle_checkpoint(outs.logger, run_dir, epoch, cycle, record)
            if parts.method.teacher == SNAPSHOT and epoch < plan.epochs:
                teacher = take_snapshot(parts, teacher)  # the teacher swap
        progress.add_time(time.perf_counter() - mark, parts.dist.world_size)
        mark = time.perf_counter()
        if parts.dist.is_main:
            outs.epoch_done(record, partial(_save, parts, progress, teacher, run_dir, outs))
        _log_epoch(record, plan)
        pruned = trial.reported(record) if trial is not None else None
        if pruned:  # the search's pruner: stop as on a signal (the checkpoint is written)
            stop.ask(pruned)
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


def _fault_hold(stop: StopRequest, state: StepState, run_dir: Path) -> Callable[[], bool]:
    """Fault injection for tests: SDRUN_FAULT_HOLD=<run dir pattern>@<k> holds a run whose
    folder matches the (fnmatch) pattern after global step k until a stop signal comes, so
    that a signal sent from outside the process (a fake SLURM's) lands at a known step."""
    pattern, _, step = os.environ.get("SDRUN_FAULT_HOLD", "").rpartition("@")
    if not step or not fnmatch(str(run_dir.resolve()), pattern):
        return stop

    def check() -> bool:
        if state.step == int(step) and not stop():
            log.warning("fault injection: holding after step %s until a stop signal", step)
            until = time.monotonic() + 600  # a test that never sends it fails, not hangs
            while not stop() and time.monotonic() < until:
                time.sleep(0.05)
        return stop()

    return check


def _save(
    parts: Parts,
    progress: Progress,
    teacher: Optional[TeacherState],
    run_dir: Path,
    outs: Outputs,
    tally: Optional[EpochTally] = None,
) -> None:
    teacher_state = None if teacher is None else teacher.model.snapshot_state
    run_state.save_last(run_dir, config_dict(parts.cfg), parts.model, teacher_state,
                        parts.state, parts.plan, progress, tally,
                        method_state=parts.method.state_dict())  # fmt: skip
    outs.saved(progress.saved_at)


def _restore(
    parts: Parts, progress: Progress, payload: dict[str, Any], path: Path
) -> tuple[Optional[TeacherState], Optional[EpochTally]]:
    tally = run_state.restore(payload, parts.model, parts.state, progress, parts.runtime.device,
                              counted_here=parts.dist.is_main, path=path, plan=parts.plan,
                              method_state=parts.method.state_dict())  # fmt: skip
    parts.method.load_state_dict(payload.get("method") or {})
    return restored_teacher(parts, payload), tally


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
