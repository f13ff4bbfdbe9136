"""The sweeper class Hydra instantiates (`hydra.sweeper._target_` of the sd_optuna preset).

Optuna is imported only when a search starts: Hydra imports every module of hydra_plugins when
it looks for plugins, also where the `optuna` extra is not installed.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ResumableOptunaSweeper(Sweeper):
    """Hydra's Optuna sweeper that continues the search stored in its sweep directory."""

    def __init__(self, **kwargs: Any) -> None:
        from sdrun.sweeps.search import ResumableSearch

        self.sweeper = ResumableSearch(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
