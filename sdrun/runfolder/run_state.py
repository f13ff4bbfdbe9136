"""A run's state across sessions: what its checkpoints hold, and restoring a run from one.

`last.pt` holds everything an exact continuation needs: student, teacher snapshot (unfolded),
optimizer, global step, AMP scaler, the epochs done and a partial epoch's tally (after a stop
signal), every RNG state and the config. A resume must agree with the checkpoint on the keys
that define what the run computes (`RUN_DEFINING`); runtime keys may change.

What a run cost is counted per session (`Progress`): wall seconds, and wall seconds times that
session's process count (a resume may change it). Work a stop throws away - what a killed
session did after its last checkpoint - is read on resume from the killed session's heartbeat
file (`Session`), which says when the session started, when it was last alive and on how many
processes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from torch import nn

from sdrun.config import effective_cycles, flatten
from sdrun.errors import CheckpointError
from sdrun.methods.legacy import settings_view
from sdrun.runfolder import checkpoint as ckpt
from sdrun.runfolder import cluster_job
from sdrun.runfolder.loggers import METRICS, read_metrics
from sdrun.runfolder.resume_checks import check_config, check_fits, check_payload, check_progress
from sdrun.runfolder.runtime import rng_state, set_rng_state
from sdrun.training.engine import EpochTally, StepState
from sdrun.training.schedule import CyclePlan
from sdrun.trust import files

log = logging.getLogger(__name__)

RUN_DEFINING = (
    "dataset.name",
    "dataset.batch_size",
    "dataset.limit_train",
    "dataset.limit_test",
    "dataset.val_split",
    "dataset.image_size",
    "dataset.eval_resize",
    "model",
    "schedule",
    "distill",
    "optim",
    "seed",
)


@dataclass
class Progress:
    """Bookkeeping that outlives a session (saved in every checkpoint)."""

    epoch: int = 0  # epochs completed
    best_top1: float = -1.0
    best_epoch: int = 0
    # The epoch selected on the validation split, and the test top-1 at that epoch.
    val_best_top1: float = -1.0
    val_best_epoch: int = 0
    top1_at_val_best: Optional[float] = None
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # training, evaluation and checkpoints, over every session
    # The same seconds x the processes of the session they were spent in; None: unknown (a
    # checkpoint from an sdrun that did not count them).
    process_seconds: Optional[float] = 0.0
    lost_wall_seconds: float = 0.0  # work lost to stops (see `lost_work`)
    lost_process_seconds: float = 0.0
    saved_at: Optional[float] = None  # time.time() when the checkpoint holding this was saved
    wandb_id: Optional[str] = None
    history: dict[str, Any] = field(default_factory=dict)  # the last epoch's metrics

    def add_time(self, seconds: float, processes: int) -> None:
        self.wall_seconds += seconds
        if self.process_seconds is not None:
            self.process_seconds += seconds * processes

    def add_lost(self, wall_seconds: float, process_seconds: float) -> None:
        self.lost_wall_seconds += wall_seconds
        self.lost_process_seconds += process_seconds


def save_last(
    run_dir: Path,
    config: dict[str, Any],
    model: nn.Module,
    teacher_state: Optional[dict[str, torch.Tensor]],
    state: StepState,
    plan: CyclePlan,
    progress: Progress,
    tally: Optional[EpochTally] = None,
    method_state: Optional[dict[str, Any]] = None,  # what the training method keeps (methods/)
) -> None:
    progress.saved_at = time.time()
    payload = {
        "model": model.state_dict(),
        "teacher": teacher_state,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": {"step": state.step, "plan": asdict(plan)},
        "scaler": None if state.scaler is None else state.scaler.state_dict(),
        "epoch": progress.epoch,
        "epoch_tally": None if tally is None else tally.state_dict(),
        "method": method_state or {},
        "progress": asdict(progress),
        "rng": rng_state(),
        "config": config,
    }
    ckpt.save_last(payload, run_dir)


def save_cycle_snapshot(
    run_dir: Path, config: dict[str, Any], model: nn.Module, epoch: int, cycle: int, taught: bool
) -> None:
    """Cycle-end weights, kept for the snapshot ensemble and for later use as teachers (or as
    backbones). `taught`: whether a teacher taught this cycle (SD's first cycle has none), so
    that the weights are not taken for the method's."""
    payload = {
        "model": model.state_dict(),
        "epoch": epoch,
        "cycle": cycle,
        "taught": taught,
        "config": config,
    }
    ckpt.save_atomic(payload, run_dir / ckpt.CHECKPOINT_DIR / f"cycle{cycle}.pt")


def load_for_resume(
    resume: Optional[str],
    config: dict[str, Any],
    defining: tuple[str, ...] = RUN_DEFINING,
    defaults: Mapping[str, Any] = MappingProxyType({}),
    schema: Optional[type] = None,
) -> Optional[tuple[dict[str, Any], Path]]:
    """The checkpoint `resume=` names and the file it came from (a damaged last.pt falls back
    to prev.pt), checked on its own and against the run's config (None: a new run);
    `defaults`: see `check_same_run`; `schema`: the command's structured config, whose types
    the checkpoint's config must have."""
    if not resume:
        return None
    payload, path = ckpt.load_resume_file(ckpt.checkpoint_path(resume))
    check_payload(payload, path, {f.name for f in fields(Progress)})
    check_config(payload, path, schema)
    check_same_run(config, payload["config"], path, defining, defaults)
    check_progress(payload, path, Progress, _metrics_beside(path))
    return payload, path


def _metrics_beside(checkpoint: Path) -> Optional[list[dict[str, Any]]]:
    """The metrics.jsonl lines of the run folder holding `checkpoint` (None: not in one, or
    no readable file there: nothing to compare with)."""
    run_dir = ckpt.run_dir_of(checkpoint)
    try:
        return None if run_dir is None else read_metrics(run_dir / METRICS)
    except (OSError, ValueError):
        return None


def schema_defaults(schema: type, prefix: str = "") -> dict[str, Any]:
    """A structured config's (`Config`, `TransferConfig`) defaults as flattened keys."""
    return flatten(OmegaConf.to_container(OmegaConf.structured(schema)), prefix)


def method_defaults(settings: object) -> dict[str, Any]:
    """A method's settings' defaults (its dataclass's) as `distill.<key>`."""
    return schema_defaults(type(settings), "distill.")


def check_same_run(
    now: dict[str, Any],
    saved: dict[str, Any],
    path: Path,
    defining: tuple[str, ...] = RUN_DEFINING,
    defaults: Mapping[str, Any] = MappingProxyType({}),
) -> None:
    """Refuse a resume whose config differs from the checkpoint's on a `defining` key (a
    prefix); sdrun-transfer passes its own keys. A key the checkpoint lacks was added to sdrun
    after that run started: the run computed what the key's schema default (`defaults`,
    `schema_defaults`) computes, so that value resumes and any other is refused."""
    now = effective_cycles(flatten(now))
    # an older sdrun's flat `distill` block: read as its method's settings
    before = settings_view(effective_cycles(flatten(saved)))
    for key in sorted(set(now) | set(before)):
        if not key.startswith(defining) or key == "distill.teacher_checkpoint":
            continue
        if key not in before and key in defaults and now.get(key) == defaults[key]:
            continue
        if now.get(key) != before.get(key):
            raise CheckpointError(
                f"resume: {key}={now.get(key)!r} but {path} was trained with {before.get(key)!r}; "
                f"drop that override to resume, or start a new run without resume="
            )


def restore(
    payload: dict[str, Any],
    model: nn.Module,
    state: StepState,
    progress: Progress,
    device: torch.device,
    counted_here: bool = True,
    *,
    path: Path,
    plan: Any,  # the run's CyclePlan or FinetunePlan
    method_state: Optional[Mapping[str, Any]] = None,  # the method's live state_dict()
) -> Optional[EpochTally]:
    """Put model, optimizer, step, scaler, progress and RNGs back; returns a partial epoch.

    A partial epoch's sums are over all processes (summed at the stop): only the process with
    `counted_here` (rank 0) takes them back, the others start that epoch's sums from zero.
    First every state of the checkpoint (`path`) is compared with the live one it replaces,
    the method's too (`check_fits`); entries that do not fit otherwise (a bad RNG state) raise
    CheckpointError in one line too."""
    check_fits(payload, path, model.state_dict(), state.optimizer, plan, method_state or {})
    try:
        model.load_state_dict(payload["model"])
        state.optimizer.load_state_dict(payload["optimizer"])
        state.step = payload["scheduler"]["step"]
        if state.scaler is not None and payload.get("scaler"):
            state.scaler.load_state_dict(payload["scaler"])
        for key, value in payload["progress"].items():
            setattr(progress, key, value)
        if "process_seconds" not in payload["progress"]:
            progress.process_seconds = None  # an older checkpoint: the count so far is unknown
        set_rng_state(payload["rng"])
        tally = None
        if payload.get("epoch_tally"):
            tally = EpochTally.from_state(payload["epoch_tally"], device)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
        detail = " ".join(str(err).split())[:200]
        raise CheckpointError(
            f"resume: the checkpoint does not fit this run ({type(err).__name__}: {detail}); "
            "it was not written by sdrun for this config: use another checkpoint"
        ) from None
    log.info("resumed after epoch %d, step %d", progress.epoch, state.step)
    if tally is None:
        return None
    if not counted_here:
        tally.sums = None  # the loop starts them at zero
    return tally


HEARTBEAT = "heartbeat.json"  # in the run's checkpoints/ folder
HEARTBEAT_S = 60.0  # a kill loses at most this much of the count of lost work


@dataclass
class Session:
    """This session of a run, written to its heartbeat file: when it started, on how many
    processes, in which cluster job, when it was last alive, and lost work of earlier sessions
    that no checkpoint holds yet. A kill leaves the file behind; the next session reads from it
    what was lost."""

    path: Path
    processes: int
    started: float  # time.time()
    carried_wall: float = 0.0
    carried_process: float = 0.0
    # the cluster job of this session (cluster_job.current_job): a restart of it continues
    # the run (requeue.continues)
    job: Optional[str] = field(default_factory=cluster_job.current_job)
    period: float = HEARTBEAT_S
    last_save: Optional[float] = None  # time.time() of this session's last checkpoint
    _next_beat: float = 0.0  # time.monotonic() of the next periodic write

    def beat(self, force: bool = False, alive: Optional[float] = None) -> None:
        now = time.monotonic()
        if not force and now < self._next_beat:
            return
        self._next_beat = now + self.period
        state = {
            "started": self.started,
            "alive": time.time() if alive is None else alive,
            "processes": self.processes,
            "carried_wall": self.carried_wall,
            "carried_process": self.carried_process,
            "job": self.job,
        }
        try:  # bookkeeping only: a failed write must never stop training
            files.ensure_dir(self.path.parent)
            files.write_text(self.path, json.dumps(state))
        except OSError as err:
            log.debug("heartbeat not written: %s", err)

    def saved(self, at: float) -> None:
        """A checkpoint now holds all work so far, lost work of earlier sessions included."""
        self.last_save = at
        self.carried_wall = self.carried_process = 0.0
        # stamped with the checkpoint's time, not after writing it: a stop that follows its
        # own checkpoint has lost nothing
        self.beat(force=True, alive=at)

    def unsaved(self) -> tuple[float, float]:
        """(wall s, process s) this session did after its last checkpoint (or its start)."""
        wall = max(0.0, time.time() - max(self.started, self.last_save or 0.0))
        return wall, wall * self.processes

    def watch(self, check: Callable[[], bool]) -> Callable[[], bool]:
        """`check` (the loop's per-step stop check), beating every `period` seconds first."""

        def watched() -> bool:
            self.beat()
            return check()

        return watched


def start_session(run_dir: Path, progress: Progress, processes: int, resuming: bool) -> Session:
    """Open this session's heartbeat; on resume, first add the work lost since the checkpoint
    (from the previous session's heartbeat) to `progress`."""
    path = run_dir / ckpt.CHECKPOINT_DIR / HEARTBEAT
    wall = process = 0.0
    if resuming:
        wall, process = lost_work(read_heartbeat(path), progress.saved_at)
        progress.add_lost(wall, process)
        if wall:
            log.info("work lost to the last stop: %.0f s (%.0f process-s), counted", wall, process)
    session = Session(path, processes, time.time(), wall, process)
    session.beat(force=True)
    return session


def read_heartbeat(path: Path) -> Optional[dict[str, Any]]:
    try:
        beat = files.read_json(path)
        float(beat["started"]), float(beat["alive"]), int(beat["processes"])
        return beat
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or damaged: nothing is known to be lost


def lost_work(beat: Optional[dict[str, Any]], saved_at: Optional[float]) -> tuple[float, float]:
    """(wall s, process s) of work lost since the checkpoint saved at `saved_at`: what the last
    session did after it (all of that session if its start came later: it saved nothing that
    survived), plus the lost work it carried from earlier sessions."""
    if beat is None:
        return 0.0, 0.0
    since = beat["started"] if saved_at is None else max(beat["started"], saved_at)
    wall = max(0.0, beat["alive"] - since)
    carried_wall = float(beat.get("carried_wall", 0.0))
    carried_process = float(beat.get("carried_process", 0.0))
    return carried_wall + wall, carried_process + wall * int(beat["processes"])


def kept_checkpoint(epochs_done: int) -> str:
    """What a stopped run keeps, for its message."""
    if not epochs_done:
        return "no epoch finished, so there is no checkpoint"
    return f"the last good checkpoint (epoch {epochs_done}) is kept"
