"""Which SD row of a data set and network is the headline (its gains are the primary ones).

With a sweep in the same folder every cell is an SD row, and each would get gains over every
baseline: picking the best of them afterwards is a choice made on the test set. So one SD row
per data set and network is primary, chosen before any number is looked at:

1. the only SD row, when there is one;
2. else the one outside any sweep or search folder with sdrun's SD preset recipe (the
   schedule, optimizer, batch and distillation settings of `sdrun.config.Config`'s defaults,
   which are the CIFAR-100 recipe of conf/experiment/recipe/cifar100.yaml with distill=sd);
3. else the only SD row outside any sweep or search folder.

When none is found, every SD row is exploratory, and the report says why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Optional

from sdrun.config import Config, effective_cycles, flatten
from sdrun.report.table import Row

SD = "sd"
RECIPE_KEYS = ("schedule.", "optim.", "distill.", "dataset.batch_size")


# sd's settings' defaults (sdrun/methods/sd.py), here so that the report imports no torch;
# tests/test_report_speed.py keeps them equal to the registered ones.
SD_SETTINGS = {"name": "sd", "temperature": 2.0, "ce_weight": 1.0, "kd_weight": 1.0,
               "smooth": "teacher"}  # fmt: skip


@cache
def preset() -> dict[str, Any]:
    """SD's preset recipe as flattened settings (lists as tuples, cycles resolved)."""
    tree = {**dataclasses.asdict(Config()), "distill": dict(SD_SETTINGS)}
    return effective_cycles(flatten(tree))


def is_preset(row: Row) -> bool:
    """Whether every recipe setting the row reads is the preset's."""
    recipe = {k: v for k, v in row.signature.items() if k.startswith(RECIPE_KEYS)}
    return bool(recipe) and all(preset().get(k, v) == v for k, v in recipe.items())


def primary_row(sd_rows: Sequence[Row], sweeps: Collection[Path]) -> tuple[Optional[Row], str]:
    """(the primary SD row of one data set and network, why it is; or None and why not)."""
    if len(sd_rows) == 1:
        return sd_rows[0], "the only SD row"
    outside = [row for row in sd_rows if not any(_inside(row, s) for s in sweeps)]
    presets = [row for row in outside if is_preset(row)]
    if len(presets) == 1:
        return presets[0], "SD's preset recipe, outside any sweep"
    if len(outside) == 1:
        return outside[0], "the only SD row outside a sweep or search"
    why = "several SD rows have the preset recipe" if presets else "no SD row has the preset "
    why += "" if presets else "recipe outside a sweep"
    return None, f"no primary SD row ({why}): every SD gain here is exploratory"


def _inside(row: Row, folder: Path) -> bool:
    return any(run.path.is_relative_to(folder) for run in row.runs + row.diverged)
