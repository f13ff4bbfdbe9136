"""What every training command (sdrun, sdrun-transfer) does around its own loop, in its run
folder: the run's numerics set and given back, the processes joined, the resume checkpoint
loaded and checked, the folder guarded, the seed set (`opened`); then metrics.jsonl, the
logger and the heartbeat opened, and the logger finished however the run ends (`outputs`);
and summary.json at the end (`write_result`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

from sdrun.config import LoggerConfig, TrainerConfig
from sdrun.errors import TrainingDiverged
from sdrun.runfolder import checkpoint as ckpt
from sdrun.runfolder import distributed, requeue, run_lock, run_state, wandb_record
from sdrun.runfolder.interrupt import RunStopped
from sdrun.runfolder.loggers import (
    METRICS,
    SUMMARY,
    Logger,
    MetricsFile,
    NullLogger,
    build_logger,
    read_metrics,
)
from sdrun.runfolder.loggers import write_summary as write_summary_file
from sdrun.runfolder.run_names import RunIdentity
from sdrun.runfolder.run_state import RUN_DEFINING, Progress
from sdrun.runfolder.runtime import (
    Runtime,
    amp_name,
    configure_numerics,
    resolve_runtime,
    seed_everything,
)
from sdrun.trust import received, signing


@dataclass
class Opened:
    runtime: Runtime  # on this process's device
    dist: distributed.Dist
    resume: Optional[dict[str, Any]]  # the checkpoint to continue from, checked; None: new run
    resume_path: Optional[Path] = None  # the file it came from (for restore's one-line errors)


@contextmanager
def opened(
    trainer: TrainerConfig,
    seed: int,
    resume: Optional[str],
    run_dir: Path,
    config: dict[str, Any],
    defining: tuple[str, ...] = RUN_DEFINING,
    defaults: Mapping[str, Any] = MappingProxyType({}),
    schema: Optional[type] = None,
) -> Iterator[Opened]:
    """Everything before a run builds its parts. torch's numerics switches are process-wide:
    they are set for the block and given back after it (on return or error), so the next job
    of a multirun does not inherit them. `schema`: the command's structured config, whose
    types a resumed checkpoint's config must have."""
    runtime = resolve_runtime(trainer)
    with configure_numerics(trainer.deterministic, runtime.device, runtime.amp_dtype):
        dist = distributed.init(runtime.device.type)
        device = distributed.local_device(runtime.device, dist)
        runtime = dataclasses.replace(runtime, device=device)
        # A single run's command took the lock already (run_dir_guard.RunDirGuard); a multirun job's
        # folder and a run started in-process are locked here. Rank 0 for all processes.
        locked = dist.is_main and run_lock.acquire(run_dir)
        try:
            # a requeued cluster job runs its first command again: it continues its own run
            resume = resume or requeue.continued(run_dir)
            loaded = run_state.load_for_resume(resume, config, defining, defaults, schema)
            payload, path = loaded or (None, None)
            ckpt.guard_run_dir(run_dir, resuming=payload is not None)
            seed_everything(seed)
            yield Opened(runtime, dist, payload, path)
        finally:
            if locked:
                run_lock.release(run_dir)


@dataclass
class Outputs:
    metrics: MetricsFile
    logger: Logger
    heartbeat: Optional[run_state.Session]  # rank 0's: lost-work accounting (run_state.py)
    # A resumed folder is signed (trust/signing.py) once .hydra/ is sure to keep what this
    # session wrote there: at its first checkpoint, or when it ends without being refused (a
    # clean end, a stop, a divergence). A refused session puts the old .hydra/ files back
    # (run_dir_guard), which the old signature covers; a received folder stays received then.
    sign_on_save: Optional[Path] = None

    def watched(self, should_stop: Callable[[], bool]) -> Callable[[], bool]:
        """The loop's per-step stop check, with the heartbeat (rank 0) riding on it."""
        return should_stop if self.heartbeat is None else self.heartbeat.watch(should_stop)

    def saved(self, at: float) -> None:
        """A checkpoint holds all work so far (the heartbeat's lost-work count restarts)."""
        if self.heartbeat is not None:
            self.heartbeat.saved(at)
        self.sign_pending()

    def sign_pending(self) -> None:
        if self.sign_on_save is not None:
            signing.sign(self.sign_on_save)
            self.sign_on_save = None

    def count_unsaved(self, progress: Progress) -> None:
        """This session's work since its last checkpoint is lost (a run that ends without
        one: divergence)."""
        if self.heartbeat is not None:
            progress.add_lost(*self.heartbeat.unsaved())

    def epoch_done(self, record: dict[str, Any], save: Callable[[], None]) -> None:
        """A finished epoch (rank 0): its metrics.jsonl line, then its checkpoint (`save`),
        then the logger. In this order a kill at any point loses nothing: a line whose
        checkpoint never landed is dropped on resume (`truncate_after`) and the epoch trained
        again; the other way round, a kill between the two would lose the line for good."""
        self.metrics.append(record)
        save()
        self.logger.log(record, step=record["epoch"])


@contextmanager
def outputs(
    cfg: LoggerConfig,
    run_dir: Path,
    config: dict[str, Any],
    dist: distributed.Dist,
    progress: Progress,
    *,
    resuming: bool,
    identity: Optional[RunIdentity] = None,
) -> Iterator[Outputs]:
    """metrics.jsonl (epochs after the resumed checkpoint's dropped: they are trained again),
    the logger and the heartbeat, on rank 0 only (one set of files, one wandb run); the
    logger is finished, with the run's exit code, however the block ends."""
    metrics, logger, heartbeat = MetricsFile(run_dir / METRICS), NullLogger(), None
    kept, sign_on_save = None, None
    # A received folder's wandb run and identity are the sender's: never continued here.
    foreign = resuming and received.is_received(run_dir)
    if dist.is_main:
        if resuming:
            sign_on_save = run_dir
        else:
            signing.sign(run_dir)  # the settings Hydra just wrote are this user's
        metrics.truncate_after(progress.epoch)
        who = identity or RunIdentity(name=run_dir.name, group=cfg.group, job_type="", tags=[])
        kept = wandb_record.read(run_dir) if resuming and not foreign else None
        who = wandb_record.kept_identity(kept, who, cfg)  # a resumed run keeps its name
        run_id = None if foreign else progress.wandb_id
        logger = build_logger(cfg, run_dir, config, name=who.name, run_id=run_id,
                              group=who.group, job_type=who.job_type or None,
                              tags=who.tags or None)  # fmt: skip
        if logger.active:
            _send_unsent(logger, metrics, kept, progress.epoch)
            kept = wandb_record.WandbRecord(who, kept.synced_epoch if kept else 0)
            wandb_record.write(run_dir, kept)
        heartbeat = run_state.start_session(run_dir, progress, dist.world_size, resuming=resuming)
    progress.wandb_id = getattr(logger, "run_id", None)
    exit_code, kept_files = 1, False
    outs = Outputs(metrics, logger, heartbeat, sign_on_save)
    try:
        yield outs
        kept_files = True
        exit_code = 0
    except (RunStopped, TrainingDiverged):
        kept_files = True  # not refused: its .hydra/ files stay (run_dir_guard.run_task)
        raise
    finally:
        if kept_files:
            outs.sign_pending()
        active = logger.active
        logger.finish(exit_code)
        if kept is not None and active:  # a clean end: what it logged is sent
            wandb_record.write(run_dir, replace(kept, synced_epoch=progress.epoch))


def _send_unsent(
    logger: Logger, metrics: MetricsFile, kept: Optional[wandb_record.WandbRecord], epoch: int
) -> None:
    """A killed session's epochs up to the checkpoint, logged again (wandb_record.py)."""
    if kept is None or not metrics.path.is_file():
        return
    for record in wandb_record.unsent(read_metrics(metrics.path), kept, epoch):
        logger.log(record, step=record["epoch"])


def how_it_ran(progress: Progress, runtime: Runtime, dist: distributed.Dist) -> dict[str, Any]:
    """summary.json's time, cost and runtime keys, the same for every command (the report's
    row identity and cost columns read them)."""
    return {
        "time/train_s": progress.train_seconds,
        "time/wall_s": progress.wall_seconds,
        "time/process_s": progress.process_seconds,  # wall x processes, session by session
        "time/lost_wall_s": progress.lost_wall_seconds,  # work lost to stops (run_state.py)
        "time/lost_process_s": progress.lost_process_seconds,
        "device": runtime.device_name,
        "device_type": runtime.device.type,
        "processes": dist.world_size,
        "amp": amp_name(runtime.amp_dtype),
    }


def write_result(run_dir: Path, result: dict[str, Any], outs: Outputs, dist: distributed.Dist):
    """summary.json and the logger's summary (rank 0)."""
    if dist.is_main:
        write_summary_file(run_dir / SUMMARY, result)
        outs.logger.summary(result)
