"""Rows: the runs that computed the same thing (the same identity, see identity.py), one per
seed, and the numbers each row shows with how many runs each number is over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdrun.report import costs, stats
from sdrun.report.references import Reference, references_for
from sdrun.report.runs import Run
from sdrun.sweeps import CHOSEN_ON_VALIDATION

# The documented order of the tables (docs/REPRODUCE.md): SD, its controls, the baselines, the
# self-distillation family as docs/SELFKD.md lists it, then kd and born-again generations.
METHOD_ORDER = ("sd", "cyclic", "cosine", "step", "ls", "tfkd", "cskd", "pskd", "dlb", "byot",
                "kd")  # fmt: skip
BORN_AGAIN = "born-again-g"
RUNTIME_COLUMNS = {
    "device": "runtime.device",
    "processes": "runtime.processes",
    "amp": "runtime.amp",
    "sync_bn": "runtime.sync_bn",
}


@dataclass
class Row:
    dataset: str
    model: str
    method: str
    signature: dict[str, Any]
    runs: list[Run]  # complete runs, one per seed
    diverged: list[Run] = field(default_factory=list)  # runs that diverged, one per seed
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

    def top1_by_seed(self) -> dict[Any, float]:
        """Final top-1 per pairing seed (a chain's root seed); when two runs share a root
        seed, by (root seed, seed), so that no run is dropped or paired twice."""
        roots = [r.root_seed for r in self.runs]
        unique = len(set(map(str, roots))) == len(roots)
        return {
            (r.root_seed if unique else (r.root_seed, r.seed)): float(r.summary["student/top1"])
            for r in self.runs
        }

    @property
    def references(self) -> list[tuple[Reference, list[str]]]:
        return references_for(self.dataset, self.model, self.method, self.signature)

    @property
    def label(self) -> str:
        label = f"{self.method} ({self.variant})" if self.variant else self.method
        if self.chosen_on_validation:
            return f"{label}, chosen on the validation split"
        return label

    @property
    def chosen_on_validation(self) -> bool:
        """The runs retrain a search's best setting (`python -m sdrun.sweeps.retrain` tags
        them): the row's setting was chosen on the validation split."""
        tagged = [CHOSEN_ON_VALIDATION in (r.config.get("logger.tags") or ()) for r in self.runs]
        return bool(tagged) and all(tagged)

    @property
    def n(self) -> int:
        return len(self.runs)


def build_rows(runs: Iterable[Run]) -> list[Row]:
    """One row per distinct computation from the complete and the diverged runs; a seed run
    twice keeps its newest run (complete or diverged), with a note."""
    groups: dict[tuple, Row] = {}
    for run in runs:
        if not (run.complete or run.diverged):
            continue
        sig = run.signature()
        key = (run.dataset, run.model, run.method, tuple(sorted(sig.items(), key=str)))
        row = groups.setdefault(key, Row(run.dataset, run.model, run.method, sig, []))
        (row.diverged if run.diverged else row.runs).append(run)
    rows = sorted(groups.values(), key=_row_order)
    for row in rows:
        _drop_duplicate_seeds(row)
    _name_variants(rows)
    return rows


def method_rank(method: str) -> tuple[int, int, str]:
    """Where a method's rows go: METHOD_ORDER, then born-again generations in order, then any
    other method by name."""
    if method in METHOD_ORDER:
        return (METHOD_ORDER.index(method), 0, "")
    generation = method.removeprefix(BORN_AGAIN)
    if method.startswith(BORN_AGAIN) and generation.isdigit():
        return (len(METHOD_ORDER), int(generation), "")
    return (len(METHOD_ORDER) + 1, 0, method)


def _row_order(row: Row) -> tuple:
    return (row.dataset, _model_order(row.model), method_rank(row.method), str(row.signature))


def _model_order(name: str) -> tuple[str, int]:
    """resnet20 < resnet56 < resnet110: by family, then by depth."""
    digits = "".join(c for c in name if c.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else 0)


def _drop_duplicate_seeds(row: Row) -> None:
    newest: dict[Any, Run] = {}
    for run in sorted(row.runs + row.diverged, key=lambda r: r.summary_mtime):
        if run.seed in newest:
            row.notes.append(
                f"seed {run.seed} ran twice; kept {run.path}, not {newest[run.seed].path}"
            )
        newest[run.seed] = run
    kept = sorted(newest.values(), key=lambda r: str(r.seed))
    row.runs = [r for r in kept if not r.diverged]
    row.diverged = [r for r in kept if r.diverged]


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
    """`distill.temperature` -> `temperature`, `teacher.schedule.epochs` -> `teacher.epochs`
    (the teacher's, not the student's), unless two keys would then read the same."""
    last = [("teacher." if k.startswith("teacher.") else "") + k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _fmt_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _mean(values: list[float]) -> Optional[float]:
    return stats.mean(values)


def _std(values: list[float]) -> Optional[float]:
    return stats.sample_std(values)


def _hours(seconds: list[float]) -> Optional[float]:
    return costs.hours(stats.mean(seconds))


def ensemble_gain(row: Row) -> tuple[list[float], Optional[float], Optional[float]]:
    """Ensemble minus student top-1 (points) on the runs that have both: (differences, mean,
    SE). Positive: the snapshot ensemble is better than the final student of the same runs."""
    diffs = [
        float(r.summary["ensemble/top1"]) - float(r.summary["student/top1"])
        for r in row.runs
        if r.summary.get("ensemble/top1") is not None
    ]
    return diffs, stats.mean(diffs), stats.standard_error(diffs)


def row_record(row: Row) -> dict[str, Any]:
    """The CSV row: plain numbers, empty where there is nothing to report; every secondary
    number comes with the count of runs it is over (`*_n`)."""
    err = row.errors()
    ci = stats.mean_interval(err)
    best, teacher, ensemble = (row.errors(f"{k}/{t}") for k, t in (
        ("student", "best_top1"), ("teacher", "top1"), ("ensemble", "top1")))  # fmt: skip
    val_selected = row.errors("student/top1_at_val_best")  # the epoch chosen on validation
    diffs, ens_gain, ens_gain_se = ensemble_gain(row)
    wall, cost = row.per_run(Run.wall_s), row.per_run(Run.process_s)
    lost, chain = row.per_run(Run.lost_process_s), row.per_run(Run.process_s_with_teachers)
    refs = row.references
    record = {
        "dataset": row.dataset,
        "model": row.model,
        "method": row.method,
        "variant": row.variant,
        **{name: row.signature.get(key) for name, key in RUNTIME_COLUMNS.items()},
        "n": row.n,
        "n_diverged": len(row.diverged),
        "seed_list": " ".join(str(s) for s in row.seeds),
        "top1_err_mean": stats.mean(err),
        "top1_err_std": stats.sample_std(err),
        "top1_err_se": stats.standard_error(err),
        "top1_err_ci95_low": None if ci is None else ci[0],
        "top1_err_ci95_high": None if ci is None else ci[1],
        "best_epoch_err_mean_test_selected": stats.mean(best),
        "best_epoch_err_n": len(best),
        "val_selected_err_mean": stats.mean(val_selected),
        "val_selected_err_n": len(val_selected),
        "teacher_err_mean": stats.mean(teacher),
        "teacher_err_n": len(teacher),
        "ensemble_err_mean": stats.mean(ensemble),
        "ensemble_gain": ens_gain,
        "ensemble_gain_se": ens_gain_se,
        "ensemble_n": len(diffs),
        "wall_h_mean": _hours(wall),
        "wall_h_n": len(wall),
        "process_h_mean": _hours(cost),
        "process_h_n": len(cost),
        "process_h_lost_mean": _hours(lost),
        "process_h_lost_n": len(lost),
        "process_h_with_teachers_mean": _hours(chain),
        "process_h_with_teachers_n": len(chain),
        "published_err": " ".join(f"{ref.err:.2f}" for ref, _ in refs),
        "published_source": " | ".join(ref.source for ref, _ in refs),
        "published_recipe_differs": " | ".join("; ".join(d) for _, d in refs),
    }
    return record


RESULT_COLUMNS = list(row_record(Row("", "", "", {}, [])))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if _is_number(value) else (1, 0, str(value))


def rows_with(rows: Iterable[Row], path: Path) -> list[tuple[Row, list[Run], list[Run]]]:
    """(row, its complete runs under `path`, its diverged runs under `path`) for each row
    with a run there: a sweep's cells are rows, so a seed run twice counts once there too."""
    out = []
    for row in rows:
        done = [r for r in row.runs if r.path.is_relative_to(path)]
        failed = [r for r in row.diverged if r.path.is_relative_to(path)]
        if done or failed:
            out.append((row, done, failed))
    return out
