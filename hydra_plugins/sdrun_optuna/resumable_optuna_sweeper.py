"""The sweeper class Hydra instantiates (`hydra.sweeper._target_` of
conf/hydra/sweeper/sdrun_optuna.yaml), registered with Hydra by `register` when sdrun starts.

Hydra finds plugins by walking the folders of the `hydra_plugins` namespace package on sys.path
(pkgutil), and instantiates only classes of that namespace. An editable install (`make install`)
is setuptools' import hook, not such a folder (sdrun.conf is mapped from conf/, so setuptools
cannot simply put the checkout on sys.path): the walk missed this package everywhere but in the
checkout, and a search failed with "Unknown plugin class". Registering the class with Hydra's
own API (`Plugins.register`) needs only that it can be imported, which every install kind
(editable, wheel, run from the checkout) gives.

Optuna is imported only when a search starts: Hydra imports every module of hydra_plugins when
it looks for plugins, and sdrun registers this class at every start, also where the `optuna`
extra is not installed.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ResumableOptunaSweeper(Sweeper):
    """sdrun's Optuna search (sdrun/sweeps/search.py), as a Hydra sweeper. It reads its settings
    from the composed config (`hydra.sweeper`) in `setup`: the arguments Hydra instantiates it
    with are the same settings."""

    def __init__(self, **settings: Any) -> None:
        from sdrun.sweeps.search import ResumableSearch

        self.search = ResumableSearch()

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.search.sweep(arguments)


def register() -> None:
    """Make the sweeper known to Hydra however sdrun was installed (see above)."""
    from hydra.core.plugins import Plugins

    Plugins.instance().register(ResumableOptunaSweeper)
