"""A trial of the study as the overrides of its job.

Trial n is job n of the sweep: its folder, its job number, its wandb name. Its overrides are the
command's own (those the sweeper got, the space's fixed values among them) and, for each key the
space searches, the trial's value. A study is a file from elsewhere as much as a folder is (a
received sweep folder holds one; anyone with the RDB's URL can write to it): every parameter
and user attribute read back from it passes the checks of a folder's saved overrides
(`saved_overrides.setting_problem`) after its own: only keys of this search's space, values that
its distribution can draw, of their type (`space.value_problem`). Anything else stops the
search in one line naming the trial, before a job starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml
from optuna.trial import FrozenTrial

from sdrun.commandline.saved_overrides import Command, setting_problem
from sdrun.errors import ConfigError
from sdrun.sweeps.space import Space, render, value_problem
from sdrun.trust import files

FIXED_ATTR = "sdrun.fixed"  # a trial's user attribute: the space's fixed values, as typed


def fixed_attrs(space: Space) -> dict[str, str]:
    """What each trial records beside its parameters (for optuna-dashboard: what it also ran
    with)."""
    return {FIXED_ATTR: dict(space.fixed)}


def trial_overrides(
    trial: FrozenTrial, space: Space, command: Command, config_dir: str, where: str
) -> list[str]:
    """The overrides that give job `trial.number` the trial's values (a ConfigError when the
    study holds anything this search would not have drawn or set)."""
    missing = [key for key in space.searched if key not in trial.params]
    if missing:
        raise _refused(trial, where, f"has no value for {missing[0]}")
    overrides = []
    for key, value in trial.params.items():
        dist = space.searched.get(key)
        if dist is None:
            raise _refused(trial, where, f"sets {_shown(key)}, which this search does not search")
        problem = value_problem(value, dist)
        entry = f"{key}={render(value)}"
        problem = problem or setting_problem(entry, command, config_dir)
        if problem:
            raise _refused(trial, where, f"sets {key}={_shown(value)}, which {problem}")
        overrides.append(entry)
    _check_attrs(trial, space, where)
    return overrides


def _check_attrs(trial: FrozenTrial, space: Space, where: str) -> None:
    """The trial's user attributes: only what `fixed_attrs` records, equal to this search's."""
    for key, value in trial.user_attrs.items():
        if key != FIXED_ATTR:
            raise _refused(trial, where, f"has the user attribute {_shown(key)}, which sdrun "
                           "never sets")  # fmt: skip
        if value != dict(space.fixed):
            raise _refused(trial, where, f"ran with the fixed values {_shown(value)}, not "
                           f"this search's {dict(space.fixed)}")  # fmt: skip


def _refused(trial: FrozenTrial, where: str, problem: str) -> ConfigError:
    return ConfigError(
        f"trial {trial.number} of the study in {where} {problem}; sdrun takes from a study only "
        "values of this search's space (the study may come from someone else): continue with "
        "the command the search was started with, or give a new hydra.sweep.dir"
    )


def _shown(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def job_folder(sweep_dir: Path, num: int) -> Optional[Path]:
    """The run folder of job `num` of a sweep (whatever `hydra.sweep.subdir` named it): the
    folder below the sweep folder (not through a link) whose `.hydra/hydra.yaml` has that job
    number."""
    for hydra_file in sweep_dir.rglob(".hydra/hydra.yaml"):
        if _job_num(hydra_file) == num and not hydra_file.parent.parent.is_symlink():
            return hydra_file.parent.parent
    return None


def _job_num(hydra_file: Path) -> Optional[int]:
    try:
        num = files.read_yaml(hydra_file)["hydra"]["job"]["num"]
    except (OSError, UnicodeError, yaml.YAMLError, KeyError, TypeError):
        return None
    return num if isinstance(num, int) and not isinstance(num, bool) else None
