"""What a search writes into its sweep folder when it ends: `optimization_results.yaml`, the best
trial, replaced whole and never written through a link (sdrun/trust/files.py): the folder may
come from someone else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from sdrun.trust import files

RESULTS = "optimization_results.yaml"


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best finished trial, None before one finished."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def write_results(sweep_dir: Path, study: optuna.Study, best: optuna.trial.FrozenTrial) -> None:
    """optimization_results.yaml: the best trial's number, parameters and objective value, and
    how many trials of each state the study holds."""
    record: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "best_trial": best.number,
        "best_params": dict(best.params),
        "best_value": best.value,
        "trials": state_counts(study),
    }
    files.write_text(sweep_dir / RESULTS, yaml.safe_dump(record, sort_keys=False))


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state: complete, pruned, fail, running, waiting (those with any)."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        name = trial.state.name.lower()
        counts[name] = counts.get(name, 0) + 1
    return counts


def describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in counts.items()) or "none ran"
