"""The `sweep.yaml` of sweep and search folders, as the report reads them: checked field by field.

SweepCallback (sdrun/sweeps/sweep.py) writes `swept` (a list of keys), and for a search
`objective`, `direction`, `space` (key -> the sweep expression as typed) and `n_trials`. A
folder from elsewhere can hold anything there (`swept: 5`): a field of another shape is left
out, with a note naming it, and the others are used, so one bad field neither stops the report
nor changes what the rest says (a search stays a search, its trials stay out of the rows).

A run belongs to the nearest search folder above it, looked for up to the folder the report
was given that holds the run, never above it: what lies above the given folders is not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from sdrun.report.run_files import READ_ERRORS, not_read, read_mapping_yaml, shorten

RECORD = "sweep.yaml"  # as sdrun.sweeps.sweep.RECORD (not imported: it brings in Hydra's parser)
DIRECTIONS = ("maximize", "minimize")


def _keys(value: Any) -> Optional[list[str]]:
    ok = isinstance(value, list) and all(isinstance(k, str) for k in value)
    return value if ok else None


def _space(value: Any) -> Optional[dict[str, str]]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None
    if not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
        return None
    return {k: str(v) for k, v in value.items()}


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value.isprintable() and len(value) < 200 else None


def _direction(value: Any) -> Optional[str]:
    return value if value in DIRECTIONS else None


def _count(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


FIELDS = {
    "swept": (_keys, "a list of keys"),
    "space": (_space, "a mapping of keys to sweep expressions"),
    "objective": (_text, "a metric name"),
    "direction": (_direction, "maximize or minimize"),
    "n_trials": (_count, "a count"),
}


def check_record(raw: dict[str, Any], where: Path) -> tuple[dict[str, Any], list[str]]:
    """(the fields of `raw` of the shape SweepCallback writes, a note per field left out)."""
    record, notes = {}, []
    for key, (check, shape) in FIELDS.items():
        if key not in raw or raw[key] is None:
            continue
        value = check(raw[key])
        if value is None:
            what = shorten(repr(raw[key]), 60)
            notes.append(f"{where}: {key} is {what}, not {shape} (sdrun writes that); ignored")
        else:
            record[key] = value
    return record, notes


class SweepRecords:
    """Each folder's checked sweep.yaml, read once; `notes` says what was left out and why."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = [Path(r) for r in roots]
        self.notes: list[str] = []
        self._cache: dict[Path, dict[str, Any]] = {}

    def of(self, folder: Path) -> dict[str, Any]:
        """The folder's checked record; empty when it has none or it cannot be read."""
        if folder not in self._cache:
            self._cache[folder] = self._read(folder / RECORD)
        return self._cache[folder]

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            raw = read_mapping_yaml(path)
        except FileNotFoundError:
            return {}
        except READ_ERRORS as err:
            self.notes.append(f"{path}: {not_read(err)}")
            return {}
        record, notes = check_record(raw, path)
        self.notes += notes
        return record

    def search_above(self, run_dir: Path) -> Optional[Path]:
        """The nearest folder above `run_dir`, up to the given folder that holds it, whose
        record names an objective (a search); None when there is none."""
        root = next((r for r in self.roots if run_dir.is_relative_to(r)), None)
        if root is None:
            return None
        for parent in run_dir.parents:
            if not parent.is_relative_to(root):
                break
            if self.of(parent).get("objective"):
                return parent
        return None
