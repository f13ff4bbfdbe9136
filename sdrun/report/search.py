"""Selection on the validation split in the report: the test error at the epoch validation
selects (a table column), and hyperparameter searches (every trial and the best parameters).

A search is a sweep directory whose `sweep.yaml` (written by `sdrun.sweeps.sweep.SweepCallback`)
names an objective; its trials are the runs below it, complete or not: finished, pruned (the
search's pruner stopped it), failed (it diverged) or neither yet (running, or killed). The search
writes `optimization_results.yaml` when it ends; until then the best trial is the best complete
one so far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdrun.report.escape import code, md
from sdrun.report.md_format import num, table
from sdrun.report.run_files import HYDRA, READ_ERRORS, inside, read_mapping_yaml
from sdrun.report.runs import Run
from sdrun.report.sweep_record import SweepRecords
from sdrun.trust import files

RESULTS = "optimization_results.yaml"
FAILED = "trial failed: "  # what sdrun.cli logs into a trial's sdrun.log when it fails
PRUNED = "trial pruned: "  # ... and when the search's pruner stops it (sdrun/sweeps/pruning.py)
SEARCH_COLUMNS = ["search", "trial", "params", "val_top1", "val_best_epoch", "test_top1",
                  "status"]  # fmt: skip


@dataclass
class Search:
    path: Path
    record: dict[str, Any]  # sweep.yaml
    trials: list[Run] = field(default_factory=list)
    results: Optional[dict[str, Any]] = None  # optimization_results.yaml, once it has ended

    @property
    def objective(self) -> str:
        return str(self.record.get("objective", "val/top1"))

    @property
    def maximize(self) -> bool:
        return "min" not in str(self.record.get("direction", "maximize")).lower()

    @property
    def params(self) -> list[str]:
        """The searched keys: those of the space the sweep recorded as swept (Hydra's parser
        told them apart from fixed values, a list among them)."""
        space = self.record.get("space") or {}
        return [k for k in self.record.get("swept") or [] if k in space]

    def value(self, run: Run) -> Optional[float]:
        value = run.summary.get(self.objective) if run.complete else None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else None  # a summary from elsewhere can hold any value

    def best(self) -> Optional[Run]:
        scored = [r for r in self.trials if self.value(r) is not None]
        if not scored:
            return None
        pick = max if self.maximize else min
        return pick(scored, key=lambda r: self.value(r))


def find_searches(runs: Sequence[Run], records: SweepRecords) -> list[Search]:
    """The searches the runs belong to (the nearest folder above a run with a search record,
    up to the folder the report was given)."""
    searches: dict[Path, Search] = {}
    for run in runs:
        found = records.search_above(run.path)
        if found is None:
            continue
        if found not in searches:
            searches[found] = Search(found, records.of(found))
            searches[found].results = _read_yaml(found, Path(RESULTS))
        searches[found].trials.append(run)
    for search in searches.values():
        search.trials.sort(key=_trial_order)
    return sorted(searches.values(), key=lambda s: str(s.path))


def _read_yaml(folder: Path, name: Path) -> Optional[dict[str, Any]]:
    try:
        return read_mapping_yaml(inside(folder, name))
    except READ_ERRORS:
        return None


def trial_number(run: Run) -> Optional[int]:
    """Hydra's job number of a trial (from its .hydra/hydra.yaml)."""
    hydra = _read_yaml(run.path, HYDRA) or {}
    num = ((hydra.get("hydra") or {}).get("job") or {}).get("num")
    return num if isinstance(num, int) else None


def _trial_order(run: Run) -> tuple:
    num = trial_number(run)
    return (num is None, num or 0, str(run.path))


def status(run: Run) -> str:
    """complete, failed (with the reason a failed trial logged), or why the run is incomplete."""
    if run.complete:
        return "complete"
    try:
        log = files.read_text(run.path / "sdrun.log", files.METRICS_CAP, errors="replace")
    except OSError:
        log = ""
    for mark, word in ((FAILED, "failed"), (PRUNED, "pruned")):
        found = [line.split(mark, 1)[1] for line in log.splitlines() if mark in line]
        if found:
            return f"{word}: {found[-1].split(';')[0]}"
    return "diverged" if run.summary.get("diverged") else str(run.problem)


def outcome_counts(search: Search) -> dict[str, int]:
    """How many trials finished, were pruned, failed, or neither (running, or killed)."""
    counts = {"finished": 0, "pruned": 0, "failed": 0, "not finished": 0}
    for run in search.trials:
        said = status(run)
        if said == "complete":
            counts["finished"] += 1
        elif said.startswith("pruned"):
            counts["pruned"] += 1
        elif said.startswith(("failed", "diverged")):
            counts["failed"] += 1
        else:
            counts["not finished"] += 1
    return counts


def trial_record(search: Search, run: Run) -> dict[str, Any]:
    params = " ".join(f"{k}={_fmt(run.config.get(k))}" for k in search.params)
    return {
        "search": str(search.path),
        "trial": trial_number(run),
        "params": params,
        "val_top1": search.value(run),
        "val_best_epoch": run.summary.get("val/best_epoch"),
        "test_top1": run.summary.get("student/top1"),
        "status": status(run),
    }


def search_markdown(searches: Sequence[Search], link: Callable[[Path], str]) -> list[str]:
    md: list[str] = []
    for search in searches:
        md += ["", f"## Search {code(search.path)}", "", *_summary_lines(search), ""]
        header = ["trial", *(k.rsplit(".", 1)[-1] for k in search.params),
                  f"{search.objective} (objective)", "val-selected epoch",
                  "test top-1 (not used to select)", "status", "run"]  # fmt: skip
        best = search.best()
        lines = []
        for run in search.trials:
            rec = trial_record(search, run)
            mark = " (best)" if run is best else ""
            lines.append([
                f"{rec['trial'] if rec['trial'] is not None else '?'}{mark}",
                *(_fmt(run.config.get(k)) for k in search.params),
                num(rec["val_top1"]), str(rec["val_best_epoch"] or "-"),
                num(rec["test_top1"]), rec["status"], code(link(run.path)),
            ])  # fmt: skip
        md += table(header, lines)
    return md


def _summary_lines(search: Search) -> list[str]:
    rec = search.record
    space = ", ".join(f"{code(k)}: {md(v)}" for k, v in (rec.get("space") or {}).items())
    counts = ", ".join(f"{n} {what}" for what, n in outcome_counts(search).items() if n)
    lines = [
        f"{rec.get('direction', 'maximize')} {code(search.objective)} (the validation split, never "
        f"the test set) over {len(search.trials)} trials ({counts or 'none ran'}; "
        f"{rec.get('n_trials', '?')} planned). Space: {space or '?'}.",
    ]
    best = search.best()
    best_params = (search.results or {}).get("best_params")
    if isinstance(best_params, dict):
        params = md(", ".join(f"{k}={_fmt(v)}" for k, v in best_params.items()))
        lines += ["", f"**Best parameters** (Optuna, search finished): {params}; "
                  f"{md(search.objective)} {num(search.results.get('best_value'))}."]  # fmt: skip
    elif best is not None:
        params = md(", ".join(f"{k}={_fmt(best.config.get(k))}" for k in search.params))
        lines += ["", f"**Best so far** (search not finished): {params}; "
                  f"{md(search.objective)} {num(search.value(best))}."]  # fmt: skip
    return lines


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
