"""The `sdrun` command: Hydra composes the config, sdrun validates it and runs it.

`resume=<run dir>` re-applies the overrides the run was started with (from its
`.hydra/overrides.yaml`) and writes into the same run directory, so `sdrun resume=outputs/X`
is all a user types to continue a killed run; overrides given now win over the old ones. The
saved overrides are read as data and checked first (`commandline/saved_overrides.py`): a
folder from someone else can set sdrun's settings, never Hydra's flags, files or callbacks.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.sdrun_optuna.resumable_optuna_sweeper import register as register_search_sweeper
from sdrun.commandline import hydra_errors
from sdrun.commandline.job_names import job_dirname
from sdrun.commandline.overrides import (
    CONFIG_DIR,
    distributed_overrides,
    job_run_dir,
    quote_paths,
    resume_overrides,
    show_resolved,
)
from sdrun.commandline.run_dir_guard import exit_with, run_task
from sdrun.commandline.sdrun_command import SDRUN
from sdrun.config import Config, validate
from sdrun.config_store import register_configs
from sdrun.errors import ConfigError, TrainingDiverged
from sdrun.runfolder import distributed, run_lock
from sdrun.runfolder.interrupt import StopAsked
from sdrun.schema_keys import refuse_undeclared
from sdrun.sweeps import pruning, sweep

log = logging.getLogger("sdrun")


def _task(dict_cfg: DictConfig) -> float:
    def work() -> float:
        refuse_undeclared(dict_cfg)  # a `+key=value` the schema lacks: dropped by to_object
        cfg: Config = OmegaConf.to_object(dict_cfg)
        validate(cfg)  # before any data or model is built: a typo costs a second
        from sdrun.training.runner import run

        try:
            summary = run(cfg, job_run_dir(HydraConfig.get().runtime.output_dir))
        except TrainingDiverged as err:
            if not sweep.in_search():
                raise
            # A failed trial, not a failed search: Optuna records it and goes on.
            log.error("trial failed: %s", err)  # in the trial's own sdrun.log
            raise sweep.TrialFailed(str(err)) from None
        except StopAsked as err:  # only a search's pruner asks a run to stop
            log.warning("%s%s", pruning.PRUNED, err)  # in the trial's own sdrun.log
            raise pruning.pruned_error(str(err)) from None
        return sweep.objective(summary)

    return run_task(work)


def launch(
    task: Callable[[DictConfig], Any], config_name: str, argv: list[str], prog: str = "sdrun"
) -> None:
    """Run a command's Hydra task on `argv` (already checked and completed): Hydra's
    composition errors are one line, and the run-folder lock and the process group are given
    back however the task ends. Shared by sdrun and sdrun-transfer."""
    sys.argv = [sys.argv[0], *argv]
    try:
        hydra_errors.run(
            hydra.main(config_path=CONFIG_DIR, config_name=config_name, version_base="1.3")(task)
        )
    except ConfigError as err:  # Hydra's composition errors (the task reports its own)
        exit_with(err, prog)
    finally:
        run_lock.release_all()
        distributed.shutdown()


def main() -> None:
    register_configs()
    register_search_sweeper()  # hydra_plugins/sdrun_optuna: why not found by Hydra itself
    OmegaConf.register_new_resolver("sdrun_job", job_dirname, replace=True)
    argv = distributed_overrides(resume_overrides(quote_paths(sys.argv[1:]), SDRUN))
    problem = sweep.missing_search_plugin(argv)
    if problem:
        exit_with(ConfigError(problem))
    launch(_task, "config", show_resolved(argv))


if __name__ == "__main__":
    main()
