"""A search's job talking to its trial: `val/top1` reported at every epoch, and the pruner's
verdict, which stops the run as a signal does (sdrun/runfolder/interrupt.py `StopRequest.ask`:
after the epoch's checkpoint) and ends the trial as PRUNED.

Which trial a job is comes from its own Hydra config: the sweeper sets `hydra.sweeper.trial`
for each job it launches, and the storage is the command's `hydra.sweeper.storage` (or the
sweep folder's journal). Nothing is read from the run folder, which may come from someone else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from sdrun.sweeps.sweep import OBJECTIVE, is_search

log = logging.getLogger(__name__)

PRUNED = "trial pruned: "  # what sdrun.cli logs into a pruned trial's sdrun.log


@dataclass
class SearchTrial:
    trial: Any  # optuna.trial.Trial, in this job's process
    pruner: str

    def reported(self, record: dict[str, Any]) -> Optional[str]:
        """Report the epoch's objective to the trial; why the run should stop now (the pruner
        says so), or None."""
        value = record.get(OBJECTIVE)
        if value is None:
            return None
        epoch = int(record["epoch"])
        self.trial.report(float(value), epoch)
        if not self.trial.should_prune():
            return None
        return (f"pruned by the search's {self.pruner} pruner ({OBJECTIVE} {float(value):.2f} "
                f"at epoch {epoch} lags the other trials')")  # fmt: skip


def search_trial() -> Optional[SearchTrial]:
    """This job's trial, when the process runs a job of a search; else None."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or not is_search(hydra_cfg):
        return None
    number = hydra_cfg.sweeper.get("trial")
    if number is None:
        return None
    import optuna

    from sdrun.sweeps.study import open_study, trial_id

    study = open_study(hydra_cfg.sweeper, Path(str(hydra_cfg.sweep.dir)), create=False)
    trial = optuna.trial.Trial(study, trial_id(study, int(number)))
    pruner = hydra_cfg.sweeper.get("pruner")
    name = str(pruner.get("name") if hasattr(pruner, "get") else pruner or "none")
    return SearchTrial(trial, name)


def pruned_error(message: str) -> Exception:
    """What a pruned trial's job returns to the sweeper: Optuna's own TrialPruned."""
    import optuna

    return optuna.TrialPruned(message)
