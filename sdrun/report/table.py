"""Rows, SD gains and sweep cells: the numbers the report shows, from complete runs.

A row groups the runs that computed the same thing (every run-defining config value but the
seed); a gain compares an SD row with a baseline row of the same recipe, paired by seed where
both have the seed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdrun.report.runs import SUMMARY, Run
from sdrun.report.search import val_selected_err

# Keys that make up a method; rows are compared (SD gain) only if all other keys agree.
METHOD_KEYS = ("schedule.name", "schedule.cycle_length", "schedule.cycles", "distill.", "teacher")
METHOD_ORDER = ("sd", "cyclic", "cosine", "step")

# Published CIFAR-100 top-1 accuracies (DESIGN.md): (dataset, model, method) -> (low, high,
# source). The baselines are attached to `step`, the schedule those papers trained with.
REFERENCES: dict[tuple[str, str, str], tuple[float, float, str]] = {
    ("cifar100", "resnet32", "step"): (68.39, 68.39, "SD paper baseline (Gou et al. 2021)"),
    ("cifar100", "resnet32", "sd"): (71.29, 71.29, "SD paper (Gou et al. 2021)"),
    ("cifar100", "resnet20", "step"): (68.8, 69.1, "common baseline"),
    ("cifar100", "resnet56", "step"): (72.34, 72.63, "common baseline"),
    ("cifar100", "resnet110", "step"): (74.31, 74.31, "common baseline"),
}


@dataclass
class Row:
    dataset: str
    model: str
    method: str
    signature: dict[str, Any]
    runs: list[Run]
    variant: str = ""  # the values that tell this row from others of its dataset/model/method
    notes: list[str] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [float(r.summary[key]) for r in self.runs if r.summary.get(key) is not None]

    def errors(self, key: str = "student/top1") -> list[float]:
        return [100.0 - v for v in self.values(key)]

    def per_run(self, fn: Callable[[Run], Optional[float]]) -> list[float]:
        return [v for v in (fn(r) for r in self.runs) if v is not None]

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    @property
    def reference(self) -> Optional[tuple[float, float, str]]:
        return None if self.variant else REFERENCES.get((self.dataset, self.model, self.method))

    @property
    def label(self) -> str:
        return f"{self.method} ({self.variant})" if self.variant else self.method


def build_rows(runs: Iterable[Run]) -> list[Row]:
    """One row per distinct computation; duplicate seeds keep the newest run, with a note."""
    groups: dict[tuple, Row] = {}
    for run in runs:
        sig = run.signature()
        key = (run.dataset, run.model, run.method, tuple(sorted(sig.items(), key=str)))
        row = groups.setdefault(key, Row(run.dataset, run.model, run.method, sig, []))
        row.runs.append(run)
    rows = sorted(groups.values(), key=_row_order)
    for row in rows:
        _drop_duplicate_seeds(row)
    _name_variants(rows)
    return rows


def _row_order(row: Row) -> tuple:
    rank = METHOD_ORDER.index(row.method) if row.method in METHOD_ORDER else len(METHOD_ORDER)
    return (row.dataset, _model_order(row.model), rank, row.method, str(row.signature))


def _model_order(name: str) -> tuple[str, int]:
    """resnet20 < resnet56 < resnet110: by family, then by depth."""
    digits = "".join(c for c in name if c.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else 0)


def _drop_duplicate_seeds(row: Row) -> None:
    newest: dict[Any, Run] = {}
    for run in sorted(row.runs, key=lambda r: (r.path / SUMMARY).stat().st_mtime):
        if run.seed in newest:
            row.notes.append(
                f"seed {run.seed} ran twice; kept {run.path}, not {newest[run.seed].path}"
            )
        newest[run.seed] = run
    row.runs = sorted(newest.values(), key=lambda r: str(r.seed))


def _name_variants(rows: list[Row]) -> None:
    by_kind: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        by_kind.setdefault((row.dataset, row.model, row.method), []).append(row)
    for same in by_kind.values():
        if len(same) < 2:
            continue
        keys = sorted({k for r in same for k in r.signature})
        differ = [k for k in keys if len({str(r.signature.get(k)) for r in same}) > 1]
        names = _short_names(differ)
        for row in same:
            row.variant = ", ".join(
                f"{names[k]}={_fmt_value(row.signature.get(k))}" for k in differ
            )


def _short_names(keys: list[str]) -> dict[str, str]:
    """`distill.temperature` -> `temperature`, unless two keys would then read the same."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _fmt_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def recipe_of(row: Row) -> tuple:
    """The row's setting without its method: only rows that share it are compared."""
    return tuple(
        sorted((k, str(v)) for k, v in row.signature.items() if not k.startswith(METHOD_KEYS))
    )


@dataclass
class Gain:
    sd: Row
    baseline: Row
    mean: float  # top-1 points SD is better by (= error points it removes)
    spread: Optional[float]
    pairs: int  # seeds in both rows (0: rows compared unpaired)


def sd_gains(rows: list[Row]) -> list[Gain]:
    gains = []
    for sd in (r for r in rows if r.method == "sd"):
        for base in rows:
            if base.method == "sd" or (base.dataset, base.model) != (sd.dataset, sd.model):
                continue
            if recipe_of(base) == recipe_of(sd):
                gains.append(_gain(sd, base))
    return gains


def _gain(sd: Row, base: Row) -> Gain:
    """Paired by seed where the rows share seeds: the same seed gives the same initial
    weights and data order, so a per-seed difference has less noise than two means do."""
    a = {r.seed: float(r.summary["student/top1"]) for r in sd.runs}
    b = {r.seed: float(r.summary["student/top1"]) for r in base.runs}
    common = sorted(set(a) & set(b), key=str)
    if common:
        diffs = [a[s] - b[s] for s in common]
        return Gain(sd, base, statistics.fmean(diffs), _std(diffs), len(common))
    sa, sb = _std(list(a.values())), _std(list(b.values()))
    spread = None if sa is None or sb is None else math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    return Gain(sd, base, statistics.fmean(a.values()) - statistics.fmean(b.values()), spread, 0)


def _mean(values: list[float]) -> Optional[float]:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> Optional[float]:
    return statistics.stdev(values) if len(values) >= 2 else None


def _hours(seconds: list[float]) -> Optional[float]:
    return None if not seconds else statistics.fmean(seconds) / 3600.0


def row_record(row: Row) -> dict[str, Any]:
    """The CSV row: plain numbers, empty where there is nothing to report."""
    err = row.errors()
    ref = row.reference
    return {
        "dataset": row.dataset,
        "model": row.model,
        "method": row.method,
        "variant": row.variant,
        "seeds": len(row.runs),
        "seed_list": " ".join(str(s) for s in row.seeds),
        "top1_err_mean": _mean(err),
        "top1_err_std": _std(err),
        "best_epoch_err_mean_test_selected": _mean(row.errors("student/best_top1")),
        "val_selected_err_mean": val_selected_err(row.runs),
        "teacher_err_mean": _mean(row.errors("teacher/top1")),
        "ensemble_err_mean": _mean(row.errors("ensemble/top1")),
        "wall_h_mean": _hours(row.per_run(Run.wall_s)),
        "gpu_h_mean": _hours(row.per_run(Run.gpu_s)),
        "wall_h_with_teachers_mean": _hours(row.per_run(Run.wall_s_with_teachers)),
        "published_err_low": None if ref is None else round(100.0 - ref[1], 2),
        "published_err_high": None if ref is None else round(100.0 - ref[0], 2),
        "published_source": "" if ref is None else ref[2],
    }


def gain_record(gain: Gain) -> dict[str, Any]:
    return {
        "dataset": gain.sd.dataset,
        "model": gain.sd.model,
        "sd": gain.sd.label,
        "baseline": gain.baseline.label,
        "gain_top1_points": gain.mean,
        "spread": gain.spread,
        "paired_seeds": gain.pairs,
    }


RESULT_COLUMNS = list(row_record(Row("", "", "", {}, [])))
GAIN_COLUMNS = ["dataset", "model", "sd", "baseline", "gain_top1_points", "spread", "paired_seeds"]


@dataclass
class Sweep:
    path: Path
    runs: list[Run]
    axes: list[str]  # the swept config keys (the seed aside)

    def cells(self) -> dict[tuple, list[float]]:
        out: dict[tuple, list[float]] = {}
        for run in self.runs:
            key = tuple(run.config.get(k) for k in self.axes)
            out.setdefault(key, []).append(float(run.summary["student/top1"]))
        return out


def build_sweep(path: Path, runs: list[Run]) -> Sweep:
    inside = [r for r in runs if r.complete and r.path.is_relative_to(path)]
    keys = sorted({k for r in inside for k in r.signature()})
    axes = [k for k in keys if len({str(r.signature().get(k)) for r in inside}) > 1]
    return Sweep(path, inside, axes)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if _is_number(value) else (1, 0, str(value))
