"""Sweep cells: the rows whose runs sit in a sweep directory, keyed by the swept values.

Cells are rows (table.build_rows), so a cell holds one run per seed, like the main table, and
show what the main table shows: top-1 error (%), mean ± SE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sdrun.report import stats
from sdrun.report.runs import Run
from sdrun.report.sweep_record import SweepRecords
from sdrun.report.table import Row, rows_with

# Where a sweep's winner should be chosen: the validation split (not the test set).
VAL_KEY = "val/top1"


@dataclass
class Cell:
    values: tuple  # the swept values, in the order of Sweep.axes
    runs: list[Run]  # complete, one per seed
    diverged: list[Run]

    def top1(self, key: str = "student/top1") -> list[float]:
        return [float(r.summary[key]) for r in self.runs if r.summary.get(key) is not None]

    def errors(self, key: str = "student/top1") -> list[float]:
        """Top-1 error (%) per run, as the main table shows it."""
        return [100.0 - v for v in self.top1(key)]

    @property
    def mean(self) -> Optional[float]:
        """Mean final top-1 error (%)."""
        return stats.mean(self.errors())

    @property
    def val_mean(self) -> Optional[float]:
        """Mean final top-1 error (%) on the validation split."""
        return stats.mean(self.errors(VAL_KEY))


@dataclass
class Sweep:
    path: Path
    axes: list[str]  # the identity keys whose values differ between the cells
    cells_list: list[Cell]

    def cells(self) -> dict[tuple, Cell]:
        return {cell.values: cell for cell in self.cells_list}

    @property
    def has_val(self) -> bool:
        return any(c.val_mean is not None for c in self.cells_list)


# An SD row is identified by its epochs per cycle (identity.py); a sweep over the cycle count
# is shown in the unit it swept.
CYCLES, CYCLE_LENGTH, EPOCHS = "schedule.cycles", "schedule.cycle_length", "schedule.epochs"


def build_sweep(path: Path, rows: list[Row], records: SweepRecords) -> Sweep:
    inside = rows_with(rows, path)
    keys = sorted({k for row, _, _ in inside for k in row.signature})
    axes = [k for k in keys if len({str(row.signature.get(k)) for row, _, _ in inside}) > 1]
    in_cycles = CYCLE_LENGTH in axes and CYCLES in records.of(path).get("swept", [])
    cells = [
        Cell(
            tuple(
                _cycles(row) if in_cycles and k == CYCLE_LENGTH else row.signature.get(k)
                for k in axes
            ),
            done,
            failed,
        )  # fmt: skip
        for row, done, failed in inside
    ]
    if in_cycles:
        axes = [CYCLES if k == CYCLE_LENGTH else k for k in axes]
    return Sweep(path, axes, cells)


def _cycles(row: Row) -> object:
    """The cycle count of an SD row: its epochs over its epochs per cycle."""
    epochs, length = row.signature.get(EPOCHS), row.signature.get(CYCLE_LENGTH)
    if isinstance(epochs, int) and isinstance(length, int) and length > 0:
        return epochs // length
    return row.signature.get(CYCLE_LENGTH)
