"""What the report may read: the folders it was given (its roots), and the runs found in them.

A path a run folder names (a kd run's teacher, a transfer run's backbone, the directory Hydra
recorded it was started in) may point anywhere; the report reads it only when it lies inside a
root, and only as a run folder the walk found there (walk.py: no link followed). Paths are
compared as text, normalised, never resolved through links; a root counts both as it was given
and resolved, since runs record paths as they saw them (through a linked home folder, say).

Outside the report (sdrun-transfer naming a backbone's method) an open scope reads any run
folder a path names, as the user's own command asked for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Optional

from sdrun.report.runs import Run


class Scope:
    def __init__(self, roots: Optional[Iterable[Path]], load: Callable[[Path], Run]) -> None:
        """`roots` None: an open scope; `load` reads a run folder (runs.load_run)."""
        self.open = roots is None
        self.roots = [] if roots is None else [_forms(Path(r)) for r in roots]
        self.runs: dict[Path, Run] = {}
        self._load = load

    def within(self, path: Path) -> Optional[Path]:
        """`path` (absolute) as a path under a resolved root; None when it is outside them."""
        path = Path(os.path.normpath(path))
        if self.open:
            return path
        for given, real in self.roots:
            for base in (real, given):
                if path.is_relative_to(base):
                    return real / path.relative_to(base)
        return None

    def root_of(self, path: Path) -> Optional[Path]:
        """The resolved root `path` (one `within` gave) lies under."""
        return next((real for _, real in self.roots if path.is_relative_to(real)), None)

    def run_at(self, folder: Path) -> Optional[Run]:
        """The run in `folder` (a path `within` gave): one the walk found; in an open scope,
        any run folder, read once."""
        found = self.runs.get(folder)
        if found is None and self.open and (folder / ".hydra").is_dir():
            found = self.runs[folder] = self._load(folder)
        return found


def _forms(root: Path) -> tuple[Path, Path]:
    """(the root as given, made absolute; the root resolved)."""
    return Path(os.path.abspath(root)), root.resolve()
