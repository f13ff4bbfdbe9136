"""The Report: everything RESULTS.md and the CSV files show, built by write.build_report and
read by every section writer (markdown.py, md_gains.py, md_sections.py, search.py,
transfer_write.py). A module of its own, so that no section writer imports the module that
calls it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sdrun.report.gains import Gain, NotCompared
from sdrun.report.md_format import link
from sdrun.report.output import OutFolder
from sdrun.report.runs import Run
from sdrun.report.scope import Scope
from sdrun.report.search import Search
from sdrun.report.sweeps import Sweep
from sdrun.report.table import Row


@dataclass
class Report:
    roots: list[Path]
    out: Path
    runs: list[Run]  # every run found, complete or not
    rows: list[Row]
    gains: list[Gain]  # the SD rows' (primary and exploratory)
    not_compared: list[NotCompared]
    sweeps: list[Sweep]
    incomplete: list[Run]  # neither complete nor counted as diverged: not in any row
    notes: list[str]  # folders that are not runs, entries not followed, duplicate seeds
    run_plots: dict[Path, Path] = field(default_factory=dict)
    method_plots: dict[str, Path] = field(default_factory=dict)
    sweep_plots: dict[Path, Path] = field(default_factory=dict)
    transfer_runs: list[Run] = field(default_factory=list)  # sdrun-transfer's, own table
    searches: list[Search] = field(default_factory=list)  # their trials are in no row
    draw_run_plots: bool = False  # one PNG per run: most of a large report's time
    family_gains: list[Gain] = field(default_factory=list)  # self-distillation vs cosine
    primary_notes: list[str] = field(default_factory=list)  # which SD row is the headline
    scope: Scope | None = None  # what the report may read (for the transfer table's backbones)

    folder: OutFolder | None = None  # where it is written (write.py)

    def link(self, path: Path) -> str:
        """`path` relative to RESULTS.md, as text (so the report folder can be moved whole)."""
        return os.path.relpath(path, self.out)

    def href(self, path: Path) -> str:
        """`path` relative to RESULTS.md, as a Markdown link destination."""
        return link(path, self.out)
