"""Which `sdrun -m` process runs which trial, when several work on one study.

A process that runs a trial holds `fcntl.flock` on the trial's claim file in the sweep folder
(`.trials/<number>.lock`) until the study is told how the trial ended. A RUNNING trial whose
claim nobody holds was left by a kill: the next process to claim it resumes it. The kernel
lets go of a claim when its process ends, however it ends, so a claim is never stale; flock
works across the nodes of a shared file system that supports it (NFSv4, Lustre with `flock`),
as the run folders' own lock does (sdrun/runfolder/run_lock.py).

Asking Optuna for trials and claiming them happen under one more flock (`.trials/ask.lock`):
a batch's trials then get consecutive numbers (Hydra's launchers number a batch's jobs from
its first), and no process can see a trial between its ask and its claim and take it for a
killed one.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from sdrun.trust import files

log = logging.getLogger(__name__)

CLAIMS = ".trials"
ASK_LOCK = "ask.lock"


class Claims:
    """The claims this process holds (trial number -> open claim file)."""

    def __init__(self, sweep_dir: Path) -> None:
        self.folder = sweep_dir / CLAIMS
        self.held: dict[int, int] = {}

    def claim(self, number: int) -> bool:
        """Take trial `number` for this process; False when another process holds it."""
        if number in self.held:
            return True
        fd = _open_lock(self.folder / f"{number}.lock")
        if not _flock(fd):
            os.close(fd)
            return False
        self.held[number] = fd
        return True

    def release(self, number: int) -> None:
        """After the study was told how the trial ended."""
        fd = self.held.pop(number, None)
        if fd is not None:
            os.close(fd)  # closing the file lets go of the lock

    def release_all(self) -> None:
        for number in list(self.held):
            self.release(number)

    @contextmanager
    def asking(self) -> Iterator[None]:
        """Hold the study's ask lock for the block (other processes wait for it)."""
        fd = _open_lock(self.folder / ASK_LOCK)
        try:
            _flock(fd, blocking=True)
            yield
        finally:
            os.close(fd)


def _open_lock(path: Path) -> int:
    """A claim file, created if missing, never through a link (sdrun/trust/files.py)."""
    files.ensure_dir(path.parent)
    return files.open_lock_file(path)[0]


def _flock(fd: int, blocking: bool = False) -> bool:
    """Lock `fd`; False when another process holds it (only when not `blocking`)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return False
        _warn_unlocked(err)
    return True


_warned: Optional[bool] = None


def _warn_unlocked(err: OSError) -> None:
    """A file system without locks (some network or FUSE mounts): one process per study."""
    global _warned
    if not _warned:
        log.warning("the search's files cannot be locked here (%s): run one sdrun -m process "
                    "per study, or a trial may run twice", err.strerror)  # fmt: skip
        _warned = True
