"""One process per run folder: an advisory lock held for the run's life.

Two commands training in one folder (a resume started twice, the same hydra.run.dir) would
both write every epoch into metrics.jsonl and overwrite each other's checkpoints. The first
to start holds `fcntl.flock` on the folder's `.sdrun.lock`, which records who holds it; the
second stops in one line naming the holder. The kernel releases the lock when the holder's
process ends, however it ends (a kill included), so a lock is never left stale.

Under torchrun only rank 0 locks: the processes of one run share its folder.
The file itself stays after the run (removing it would race with a process opening it).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path

from sdrun.errors import SdrunError
from sdrun.trust import files

log = logging.getLogger(__name__)

LOCK_FILE = ".sdrun.lock"

# run folder (resolved) -> the open lock file this process holds, and whether it created it
_held: dict[Path, tuple[int, bool]] = {}


class RunFolderBusy(SdrunError):
    """Another process is training in the run folder."""


def acquire(run_dir: Path) -> bool:
    """Lock `run_dir` for this process (creating it); False if this process already held it.

    Raises RunFolderBusy naming the holder if another process holds it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _held:
        return False
    path = key / LOCK_FILE
    fd, created = files.open_lock_file(path)  # never through a link a folder holds
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise RunFolderBusy(
                f"{run_dir} is in use by {_holder(path)}; wait for it to end or stop it, "
                "or choose another hydra.run.dir"
            ) from None
        # A file system without locks (some network or FUSE mounts): run as before.
        log.warning("could not lock %s (%s); not guarded against a second process", run_dir, err)
        return False
    os.ftruncate(fd, 0)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
    _held[key] = (fd, created)
    return True


def release(run_dir: Path) -> None:
    held = _held.pop(run_dir.resolve(), None)
    if held is not None:
        os.close(held[0])  # closing the file releases the lock


def release_all(refused: bool = False) -> None:
    """At the end of a command (a process that lives on, as a test's, must not keep them).
    `refused`: the run never started, so a lock file it created goes too (a folder the user
    made stays as it was)."""
    while _held:
        key, (fd, created) = _held.popitem()
        if refused and created:
            files.remove_file(key / LOCK_FILE)
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        text = files.read_text(path, cap=4096, errors="replace").strip()
    except OSError:
        text = ""
    return f"another sdrun process ({text})" if text else "another sdrun process"
