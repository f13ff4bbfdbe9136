"""Sweep cells: the rows whose runs sit in a sweep directory, keyed by the swept values.

Cells are rows (table.build_rows), so a cell holds one run per seed, like the main table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sdrun.report import stats
from sdrun.report.runs import Run
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

    @property
    def mean(self) -> Optional[float]:
        return stats.mean(self.top1())

    @property
    def val_mean(self) -> Optional[float]:
        return stats.mean(self.top1(VAL_KEY))


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


def build_sweep(path: Path, rows: list[Row]) -> Sweep:
    inside = rows_with(rows, path)
    keys = sorted({k for row, _, _ in inside for k in row.signature})
    axes = [k for k in keys if len({str(row.signature.get(k)) for row, _, _ in inside}) > 1]
    cells = [
        Cell(tuple(row.signature.get(k) for k in axes), done, failed)
        for row, done, failed in inside
    ]
    return Sweep(path, axes, cells)
