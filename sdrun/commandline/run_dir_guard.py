"""What a command does around its Hydra task: the run directory checked (and locked) before
Hydra writes into it, a user error as one line and exit code 2, and a refused run undone (a
resume's `.hydra/` files put back, a folder this command created and left empty removed).
Shared by sdrun and sdrun-transfer (`RunDirGuard` is a Hydra callback in both primary configs).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Optional, TypeVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sdrun.errors import SdrunError, TrainingDiverged
from sdrun.runfolder import distributed, requeue, run_lock
from sdrun.runfolder.checkpoint import CHECKPOINT_DIR, LAST, guard_run_dir
from sdrun.runfolder.interrupt import RunStopped
from sdrun.trust import files
from sdrun.trust.folder import check_folder

EXIT_USER_ERROR = 2
log = logging.getLogger("sdrun")

HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")
# The copy of a resumed run's .hydra/ files made before Hydra wrote this session's over them,
# and the state of its last.pt then (a session that saved a checkpoint keeps its own files).
_resume_backup: Optional[Path] = None
_last_at_start: Optional[tuple[int, int]] = None
# The run dir and the outermost of its folders this command created (none existed before
# Hydra made them), or None.
_created_run_dir: Optional[tuple[Path, Path]] = None
# What Hydra (and the run folder's lock) put into a run dir before the task runs.
HYDRA_ONLY = {".hydra", "sdrun.log", run_lock.LOCK_FILE}


class RunDirGuard(Callback):
    """Checks the run dir before Hydra writes `.hydra/` into it (the task would be too late)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _resume_backup, _created_run_dir, _last_at_start
        _resume_backup = _created_run_dir = None
        run_dir = Path(config.hydra.run.dir)
        is_main = distributed.from_env().is_main
        created = None if run_dir.exists() else (run_dir, _first_missing(run_dir))
        try:
            # Before anything is written (the lock, Hydra's .hydra/ files and log, which Hydra
            # opens following links): a folder from elsewhere may hold links out of it.
            check_folder(run_dir)
            if is_main:  # before Hydra writes a file: a second process must change nothing
                run_lock.acquire(run_dir)  # held until the task ends (`run_task`)
            resuming = config.resume is not None or requeue.continues(run_dir)
            guard_run_dir(run_dir, resuming=resuming)
        except SdrunError as err:
            run_lock.release_all(refused=True)
            exit_with(err)
        if not is_main:
            return  # the run dir's files are rank 0's under torchrun: one backup, one undo
        _created_run_dir = created
        hydra_dir = run_dir / ".hydra"
        if (hydra_dir / "config.yaml").exists():  # resuming: keep what the run was started with
            _last_at_start = _stamp(run_dir / CHECKPOINT_DIR / LAST)
            backup = hydra_dir / f"before-resume-{time.strftime('%Y%m%d-%H%M%S')}"
            files.ensure_dir(backup)
            _copy_files(hydra_dir, backup)
            _resume_backup = backup

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _created_run_dir
        _created_run_dir = None


def _undo_resume_files() -> None:
    """A refused resume leaves the run's .hydra/ as it was: Hydra has already written this
    session's composition over it, and the next `resume=` reads its overrides from there."""
    global _resume_backup
    if _resume_backup is None or not _resume_backup.is_dir():
        return
    if _stamp(_resume_backup.parent.parent / CHECKPOINT_DIR / LAST) != _last_at_start:
        # this session got as far as a checkpoint: the checkpoint holds its config now, and so
        # must .hydra/ (what the next resume= reads)
        _resume_backup = None
        return
    _copy_files(_resume_backup, _resume_backup.parent)
    shutil.rmtree(_resume_backup, ignore_errors=True)  # removes links as links, never targets
    _resume_backup = None


def _copy_files(source: Path, target: Path) -> None:
    """Hydra's files of `source` copied into `target` (through the trust boundary: no link
    followed either way)."""
    for name in HYDRA_FILES:
        if os.path.lexists(source / name):
            files.write_bytes(target / name, files.read_bytes(source / name))


def _stamp(path: Path) -> Optional[tuple[int, int]]:
    """A file's (mtime in ns, size), None if absent: enough to tell it was rewritten."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _first_missing(path: Path) -> Path:
    """The outermost folder of `path` that does not exist yet."""
    top = path.absolute()
    while not top.parent.exists():
        top = top.parent
    return top


def _drop_unused_run_dir() -> None:
    """A run refused before it wrote anything (a bad config, missing data) leaves no folder
    behind, which sdrun-report would otherwise list as an incomplete run. Only folders this
    command created are removed: the run dir if it holds nothing but Hydra's own files, then
    its parents that it created and that are empty."""
    global _created_run_dir
    created, _created_run_dir = _created_run_dir, None
    if created is None or not created[0].is_dir():
        return
    run_dir, top = created
    if not {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for folder in run_dir.absolute().parents:
        if not folder.is_relative_to(top):
            break
        try:
            folder.rmdir()  # only when empty: another run may have appeared beside it
        except OSError:
            break


def exit_with(err: SdrunError, prog: str = "sdrun") -> NoReturn:
    _log_to_files(f"{prog}: error: {err}")
    print(f"{prog}: error: {err}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _log_to_files(message: str) -> None:
    """The reason a run stopped, into its sdrun.log too (Hydra's file handler), so that the
    folder says why it ended; the console has it once already, on stderr."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


T = TypeVar("T")


def run_task(work: Callable[[], T], prog: str = "sdrun") -> T:
    """Run a command's Hydra task body: a user error becomes one line on stderr and exit code 2
    (a stop signal: its own code), and a refused resume leaves the run folder as it was."""
    try:
        return work()
    except RunStopped as err:
        print(f"{prog}: {err}", file=sys.stderr)
        requeue.hand_over(err.notice, err.resume_hint)  # on the cluster's notice: requeued
        sys.exit(err.exit_code)
    except TrainingDiverged as err:  # it trained with this config: that stays on record
        exit_with(err, prog)
    except SdrunError as err:
        _undo_resume_files()  # refused (a changed key, a bad file...): the run stays as it was
        run_lock.release_all(refused=True)
        _drop_unused_run_dir()
        exit_with(err, prog)
    finally:
        run_lock.release_all()  # the run is over (a process that lives on must not hold it)
