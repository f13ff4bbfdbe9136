"""Finding run and sweep folders under the folders sdrun-report is given, following no link.

The given folders (the roots) are the user's choice, and may themselves be reached through a
link; everything below them may come from someone else. The walk looks at each entry with
`lstat` and never follows a symbolic link: a link to a folder could lead anywhere on the disk
(or loop), so it is listed as skipped, with how to include its target (give it as a PATH).
FIFOs, sockets and devices are listed too. A run folder's own files are opened by run_files.py,
which refuses a link or special file there as that run's reason.

Skipping and listing, rather than refusing the whole report, is the report's rule everywhere:
one folder that cannot be read does not hide the results of the others, and RESULTS.md and
stderr say what was left out and why.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sdrun.errors import SdrunError
from sdrun.report.run_files import CONFIG, METRICS, SUMMARY, shorten
from sdrun.trust.files import kind_of
from sdrun.trust.folder import MAX_ENTRIES

MULTIRUN = "multirun.yaml"
# Folders inside a run that never hold runs: not worth walking (checkpoints can be large).
NOT_RUNS = {"checkpoints", "wandb", ".hydra", "report"}


@dataclass
class Found:
    runs: list[Path] = field(default_factory=list)
    sweeps: list[Path] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)  # run files but no .hydra/config.yaml
    skipped: list[str] = field(default_factory=list)  # links and special files, with why


def find_dirs(roots: Iterable[Path], skip: Collection[Path] = ()) -> Found:
    """Run folders (holding `.hydra/config.yaml`), sweep folders (holding multirun.yaml) and
    orphans under `roots`, without following links; `skip` (the report's own folder) is not
    walked."""
    found, seen, count = Found(), set(skip), 0
    for root in roots:
        stack = [Path(root)]
        while stack:
            folder = stack.pop()
            if folder in seen:
                continue
            seen.add(folder)
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
            except OSError as err:
                found.skipped.append(f"{folder}: not read ({shorten(str(err))})")
                continue
            count += len(entries)
            if count > MAX_ENTRIES:
                raise SdrunError(
                    f"{root} holds more than {MAX_ENTRIES} files, more than any tree of runs "
                    "sdrun makes: give the folders of the runs, sweeps or searches to report"
                )
            stack += _visit(folder, entries, found)
    for paths in (found.runs, found.sweeps, found.orphans):
        paths.sort()
    return found


def _visit(folder: Path, entries: list[os.DirEntry], found: Found) -> list[Path]:
    """Classify `folder`; return its subfolders to walk."""
    names = {e.name: e for e in entries}
    hydra = names.get(CONFIG.parts[0])
    if hydra is not None and (hydra.is_symlink() or os.path.lexists(folder / CONFIG)):
        found.runs.append(folder)  # a link as .hydra is this run's reason (run_files.inside)
        return []  # a run holds no other runs
    if MULTIRUN in names:
        found.sweeps.append(folder)
    elif METRICS in names or SUMMARY in names:
        found.orphans.append(folder)
    subfolders = []
    for entry in entries:
        why = _skipped(entry)
        if why:
            found.skipped.append(why)
        elif entry.is_dir(follow_symlinks=False) and entry.name not in NOT_RUNS:
            subfolders.append(Path(entry.path))
    return subfolders


def _skipped(entry: os.DirEntry) -> str | None:
    """Why the walk does not enter or read `entry` (None: a folder or a regular file)."""
    if entry.is_symlink():
        return (
            f"{entry.path} is a symbolic link (to {shorten(os.readlink(entry.path))!r}); not "
            "followed: sdrun-report reads only inside the folders it is given (give the "
            "link's target as a PATH to include it)"
        )
    if entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
        return None
    return f"{entry.path} is a {kind_of(entry.stat(follow_symlinks=False).st_mode)}; not read"
