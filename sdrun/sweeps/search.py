"""sdrun's hyperparameter search: a Hydra sweeper over Optuna's ask-and-tell API (the sd_optuna
preset's, through hydra_plugins/sdrun_optuna).

It asks the study for `hydra.sweeper.n_jobs` trials at a time and hands them to the configured
Hydra launcher as one batch (the basic launcher runs them one after another, submitit's local
and SLURM launchers side by side); trial n is job n, in its own folder. `hydra.sweeper.n_trials`
counts every trial of the study, so more than one `sdrun -m` process can work on one study (on
several nodes, sharing the sweep folder) and the same command run again continues a stopped
search: finished trials are not run again, a trial a kill left RUNNING is trained on from its
last checkpoint in its own folder, new trials take the next numbers (sdrun/sweeps/claims.py says
how processes share trials). Each job reports `val/top1` to its trial after every epoch, and the
pruner may stop it there (sdrun/sweeps/pruning.py). At the end, the best trial goes to
`optimization_results.yaml`; a search with no finished trial ends with one line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from sdrun.commandline.overrides import CONFIG_DIR, quote
from sdrun.commandline.sdrun_command import SDRUN
from sdrun.errors import ConfigError, SdrunError
from sdrun.runfolder.checkpoint import CHECKPOINT_DIR, LAST
from sdrun.sweeps import results
from sdrun.sweeps.claims import Claims
from sdrun.sweeps.space import Space, parse_space, suggest
from sdrun.sweeps.study import journal_path, open_study, sampler_for
from sdrun.sweeps.sweep import search_space, sweeper_params
from sdrun.sweeps.trials import fixed_attrs, job_folder, trial_overrides

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
Job = tuple[int, list[str]]  # (trial number = job number, the job's overrides)


class ResumableSearch:
    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.sweeper = config.hydra.sweeper
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        try:
            self._sweep(arguments)
        except SdrunError as err:  # before a job starts, or between batches: one line
            print(f"sdrun: error: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    def _sweep(self, arguments: list[str]) -> None:
        space = parse_space(search_space(arguments, sweeper_params(self.config.hydra)))
        base = base_overrides(arguments, space)
        study = open_study(self.sweeper, self.sweep_dir, create=True)
        self.where = where = str(self.sweeper.get("storage") or journal_path(self.sweep_dir))
        log.info("study %s in %s: %s", study.study_name, where, _counts(study))
        claims = Claims(self.sweep_dir)
        try:
            stopped = self._claim_stopped(study, claims)
            jobs = [(t.number, [*base, *trial_overrides(t, space, SDRUN, CONFIG_DIR, where),
                                *self._resume(t.number)]) for t in stopped]  # fmt: skip
            for run in consecutive(jobs, int(self.sweeper.get("n_jobs") or 1)):
                self._launch(study, claims, run)
            while True:
                trials = self._ask(study, claims, space)
                if not trials:
                    break
                jobs = [(t.number, [*base, *trial_overrides(t, space, SDRUN, CONFIG_DIR, where)])
                        for t in trials]  # fmt: skip
                for run in consecutive(jobs, len(jobs)):
                    self._launch(study, claims, run)
        finally:
            claims.release_all()
        self._finish(study)

    def _claim_stopped(self, study: optuna.Study, claims: Claims) -> list[FrozenTrial]:
        """The RUNNING trials no process is running (a kill left them), claimed for this one."""
        stopped = []
        with claims.asking():
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if not claims.claim(trial.number):
                    continue  # another process runs it
                now = _trial(study, trial.number)  # it may have ended since it was listed
                if now.state == TrialState.RUNNING:
                    stopped.append(now)
                else:
                    claims.release(trial.number)
        return stopped

    def _resume(self, number: int) -> list[str]:
        """A stopped trial is trained on from its last checkpoint, as job `number` (its own
        folder), or from the start when it has none."""
        folder = job_folder(self.sweep_dir, number)
        if folder is not None and (folder / CHECKPOINT_DIR / LAST).is_file():
            log.info("trial %d was stopped: resuming it in %s", number, folder)
            return [f"resume={quote(str(folder))}"]
        log.info("trial %d was stopped before a checkpoint: running it again", number)
        return []

    def _ask(self, study: optuna.Study, claims: Claims, space: Space) -> list[optuna.Trial]:
        """Up to n_jobs new trials, drawn and claimed, while the study has fewer than
        n_trials. Under the ask lock, so the count holds and the numbers are consecutive."""
        n_trials, n_jobs = int(self.sweeper.n_trials), int(self.sweeper.get("n_jobs") or 1)
        trials = []
        with claims.asking():
            for _ in range(n_jobs):
                number = len(study.get_trials(deepcopy=False))
                if number >= n_trials:
                    break
                study.sampler = sampler_for(self.sweeper, number)
                trial = study.ask()
                _draw(trial, space, self.where)
                for key, value in fixed_attrs(space).items():
                    trial.set_user_attr(key, value)
                if claims.claim(trial.number):
                    trials.append(trial)
        return trials

    def _launch(self, study: optuna.Study, claims: Claims, jobs: list[Job]) -> None:
        """One batch through the launcher (its job numbers are the trials'), each trial told
        how it ended and let go; too many failures in the batch stop the search."""
        first = jobs[0][0]
        overrides = [(*job, f"hydra.sweeper.trial={number}") for number, job in jobs]
        try:
            returns = self.launcher.launch(overrides, initial_job_idx=first)
            ends = [tell(study, number, ret) for (number, _), ret in zip(jobs, returns)]
        finally:
            for number, _ in jobs:
                claims.release(number)
        failed = ends.count(TrialState.FAIL)
        rate = float(self.sweeper.get("max_failure_rate", 1.0))
        if failed and failed / len(ends) > rate:
            raise ConfigError(
                f"{failed} of the {len(ends)} trial(s) from {first} failed, more than "
                f"hydra.sweeper.max_failure_rate={rate} allows; each trial's sdrun.log says "
                f"why: fix that and run the search again with hydra.sweep.dir={self.sweep_dir}"
            )

    def _finish(self, study: optuna.Study) -> None:
        best = results.best_trial(study)
        if best is None:
            raise ConfigError(
                f"no trial of the search in {self.sweep_dir} completed ({_counts(study)}); "
                "each trial's sdrun.log says why: fix that and run the search again with "
                f"hydra.sweep.dir={self.sweep_dir} and a larger hydra.sweeper.n_trials"
            )
        results.write_results(self.sweep_dir, study, best)
        log.info("best trial %d: %s; val/top1 %s (%s)", best.number, best.params, best.value,
                 _counts(study))  # fmt: skip


def base_overrides(arguments: list[str], space: Space) -> list[str]:
    """What every trial's job gets: the command line's overrides but those of searched keys,
    and the space's fixed values that the command line does not give."""
    given = {_key(a) for a in arguments}
    kept = [a for a in arguments if _key(a) not in space.searched]
    return [*(f"{k}={v}" for k, v in space.fixed.items() if k not in given), *kept]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def consecutive(jobs: list[Job], size: int) -> list[list[Job]]:
    """The jobs in launcher batches of consecutive trial numbers, at most `size` each (a
    launcher numbers a batch's jobs from its first)."""
    batches: list[list[Job]] = []
    for job in sorted(jobs):
        last = batches[-1] if batches else None
        if last and last[-1][0] + 1 == job[0] and len(last) < max(size, 1):
            last.append(job)
        else:
            batches.append([job])
    return batches


def tell(study: optuna.Study, number: int, ret: JobReturn) -> TrialState:
    """Tell the study how trial `number`'s job ended: its objective, pruned, or failed."""
    try:
        value = float(ret.return_value)  # re-raises the job's exception
    except optuna.TrialPruned as err:
        study.tell(number, state=TrialState.PRUNED)
        log.info("trial %d pruned: %s", number, err)
        return TrialState.PRUNED
    except Exception as err:  # noqa: BLE001 - the job's own error: the trial failed
        study.tell(number, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", number, err)
        return TrialState.FAIL
    study.tell(number, value)
    return TrialState.COMPLETE


def _draw(trial: optuna.Trial, space: Space, where: str) -> None:
    """The trial's values of the searched keys. A trial the study queued (`enqueue_trial`, by
    anyone who can write to it) comes with values of its own, which Optuna may refuse here."""
    for key, dist in space.searched.items():
        try:
            suggest(trial, key, dist)
        except (ValueError, TypeError) as err:
            raise ConfigError(
                f"trial {trial.number} of the study in {where} was queued with a value of {key} "
                f"that this search cannot draw ({err}); give a new hydra.sweep.dir"
            ) from None


def _trial(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _counts(study: optuna.Study) -> str:
    return results.describe(results.state_counts(study))
