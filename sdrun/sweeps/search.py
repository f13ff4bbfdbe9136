"""A hyperparameter search that survives being stopped (the sd_optuna preset's sweeper).

The study lives in the sweep directory (`hydra.sweeper.storage`, by default
`sqlite:///<sweep dir>/optuna.db`). The same search command run again with
`hydra.sweep.dir=<that directory>` continues it: `hydra.sweeper.n_trials` counts every trial
of the study, so finished trials are not run again and a larger n_trials adds trials; a trial
that a kill left running is trained on from its last checkpoint (`resume=` of its own folder;
from the start when it has none) as the same trial, in the same folder; new trials take the
next job numbers. A search whose trials all failed ends with one line.

Trial i of the study is job i of the sweep (its folder's `.hydra/hydra.yaml` says so).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

import optuna
import yaml
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from sdrun.runfolder.checkpoint import CHECKPOINT_DIR, LAST

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2


class ResumableSearch(OptunaSweeperImpl):
    def sweep(self, arguments: list[str]) -> None:
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            directions=self._get_directions(),
            load_if_exists=True,
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self._finish_stopped_trial(study, trial, sweep_dir)
        done = len(study.trials)
        if done:
            log.info("continuing the search in %s: %d trial(s) done", sweep_dir, done)
            self.sampler = _reseeded(self.sampler, self.config, done)
        self.job_idx = done  # trial i is job i
        self.n_trials = max(0, self.n_trials - done)  # n_trials counts the whole study
        try:
            super().sweep(arguments)
        except ValueError:
            # Optuna's study.best_trial when no trial completed: one line, not a traceback
            if any(t.state == TrialState.COMPLETE for t in study.trials):
                raise
            states = done_states(study)
            print(
                f"sdrun: error: no trial of the search in {sweep_dir} completed ({states}); "
                "each trial's sdrun.log says why: fix that and run the search again with "
                f"hydra.sweep.dir={sweep_dir} and a larger hydra.sweeper.n_trials",
                file=sys.stderr,
            )
            sys.exit(EXIT_USER_ERROR)

    def _finish_stopped_trial(
        self, study: optuna.Study, trial: FrozenTrial, sweep_dir: Path
    ) -> None:
        """Run a trial a kill left RUNNING again, as job `trial.number` (its own folder), from
        its last checkpoint when it has one, and tell the study how it ended."""
        from sdrun.commandline.overrides import quote

        params = {**trial.params, **trial.user_attrs}  # as the sweeper sets them up
        overrides = [f"{name}={value}" for name, value in params.items()]
        folder = job_folder(sweep_dir, trial.number)
        if folder is not None and (folder / CHECKPOINT_DIR / LAST).is_file():
            overrides.append(f"resume={quote(str(folder))}")
            log.info("trial %d was stopped: resuming it in %s", trial.number, folder)
        else:
            log.info("trial %d was stopped before a checkpoint: running it again", trial.number)
        (ret,) = self.launcher.launch([tuple(overrides)], initial_job_idx=trial.number)
        try:
            study.tell(trial.number, float(ret.return_value))
        except Exception as err:  # noqa: BLE001 - as the sweeper does: the trial failed
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning("Failed experiment: %s", err)


def done_states(study: optuna.Study) -> str:
    counts: dict[str, int] = {}
    for trial in study.trials:
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items()) or "none ran"


def job_folder(sweep_dir: Path, num: int) -> Optional[Path]:
    """The run folder of job `num` of a sweep (whatever `hydra.sweep.subdir` named it)."""
    for hydra_file in sweep_dir.rglob(".hydra/hydra.yaml"):
        if _job_num(hydra_file) == num:
            return hydra_file.parent.parent
    return None


def _job_num(hydra_file: Path) -> Optional[int]:
    try:
        num = yaml.safe_load(hydra_file.read_text())["hydra"]["job"]["num"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return num if isinstance(num, int) else None


def _reseeded(sampler: Any, config: Any, done: int) -> Any:
    """A seeded sampler started again would draw its first trials' values again: the
    continued search's sampler is seeded with seed + trials done (still reproducible)."""
    sampler_cfg = OmegaConf.select(config, "hydra.sweeper.sampler", default=None)
    seed = OmegaConf.select(config, "hydra.sweeper.sampler.seed", default=None)
    if sampler_cfg is None or seed is None:
        return sampler
    return instantiate(sampler_cfg, seed=int(seed) + done)


def stored_trials(storage: Optional[str], study_name: Optional[str]) -> int:
    """How many trials the study at `storage` holds (0 when it has none or is in memory)."""
    if not storage or not study_name:
        return 0
    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:  # no such study (yet)
        return 0
