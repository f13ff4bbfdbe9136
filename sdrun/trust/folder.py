"""One check of a whole folder before sdrun writes anything into it (the lock included).

`resume=`, `sdrun-transfer resume=`/`backbone=`, a sweep or search continuation and
`sdrun-report` walk the folder once with `lstat` (no link followed): a symbolic link, a FIFO, a
socket, a device or a file with more than one hard link is refused in one line naming it. Hydra
(`.hydra/*.yaml`, `sdrun.log`) and wandb (`wandb/`) write into the folder with plain `open()`,
which follows links: only this walk protects those writes, so it runs before Hydra does.

wandb makes a few links of its own inside `wandb/` (`latest-run`, `debug.log`, ...) and
replaces them (unlink, then symlink) rather than writing through them: those names are allowed
there, and only there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sdrun.trust.files import UnsafeFile, kind_of

# Far more entries than any run, sweep or report folder holds: a walk has a bound.
MAX_ENTRIES = 1_000_000
WANDB_DIR = "wandb"
WANDB_LINKS = frozenset({"latest-run", "debug.log", "debug-internal.log", "debug-core.log"})


class UnsafeFolder(UnsafeFile):
    """A folder holds a link, a special file or a hard link."""


def check_folder(root: Path, what: str = "run folder") -> None:
    """Raise UnsafeFolder naming the first entry under `root` that is not a plain folder or a
    regular file with one link. `root` itself is the user's choice: it may be reached through
    links (a home folder on another disk), and a missing `root` passes."""
    root = Path(root)
    if not root.is_dir():
        return
    stack, seen = [root], 0
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                seen += 1
                if seen > MAX_ENTRIES:
                    raise UnsafeFolder(
                        f"{root} holds more than {MAX_ENTRIES} files, more than any {what} "
                        "sdrun makes: give the folder of one run, sweep or report"
                    )
                problem = _problem(entry, root)
                if problem:
                    raise UnsafeFolder(f"{Path(entry.path)} is {problem}; {_fix(what)}")
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))


def _problem(entry: os.DirEntry, root: Path) -> str | None:
    info = entry.stat(follow_symlinks=False)
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        return None
    if stat.S_ISREG(mode):
        return "a hard link to another file" if info.st_nlink > 1 else None
    if stat.S_ISLNK(mode) and _wandb_own_link(Path(entry.path), root):
        return None
    if stat.S_ISLNK(mode):
        return f"a symbolic link (to {os.readlink(entry.path)!r})"
    return f"a {kind_of(mode)}"


def _wandb_own_link(path: Path, root: Path) -> bool:
    """One of the links wandb makes under `wandb/` (and replaces, never writes through)."""
    relative = path.relative_to(root).parts
    return WANDB_DIR in relative[:-1] and path.name in WANDB_LINKS


def _fix(what: str) -> str:
    return (
        f"a {what} may come from someone else, and sdrun never follows links or special files "
        "in one (it would read or write outside the folder): replace it with the regular file "
        "it stands for, or remove it, and run again"
    )
