"""A search's Optuna study: where it is stored, its pruner, its sampler.

By default the study is a journal file in the sweep folder (`optuna.journal`, Optuna's
JournalStorage): several `sdrun -m` processes on a shared file system work on it at once, with
no database server, and `optuna-dashboard <sweep dir>/optuna.journal` shows it. An RDB URL in
`hydra.sweeper.storage` (`sqlite:///...`, `postgresql://...`) stores it there instead.

The storage and study come from the command (its `hydra.sweeper` settings), never from files in
a folder: a sweep folder may come from someone else (before the search opens its journal, the
sweep folder was checked for links and special files: sweep.SweepCallback).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sdrun.errors import ConfigError

log = logging.getLogger(__name__)

JOURNAL = "optuna.journal"
PRUNERS = ("median", "hyperband", "none")


def journal_path(sweep_dir: Path) -> Path:
    return sweep_dir / JOURNAL


def storage_of(url: Optional[str], sweep_dir: Path) -> optuna.storages.BaseStorage:
    """The study's storage: the RDB at `url`, or the sweep folder's journal file."""
    if url:
        try:
            return optuna.storages.get_storage(str(url))
        except Exception as err:  # noqa: BLE001 - SQLAlchemy and drivers raise many types
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(f"hydra.sweeper.storage={url}: cannot open it ({first}); give an "
                              "RDB URL such as sqlite:///<file>, or null for a journal file "
                              "in the sweep folder") from None  # fmt: skip
    path = journal_path(sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Optuna's lock beside the journal as a plain file (O_EXCL), not its default symlink: the
    # sweep folder's check (sdrun/trust/folder.py, when a process starts) refuses links, and a
    # second process would meet the first one's lock.
    lock = optuna.storages.journal.JournalFileOpenLock(str(path))
    backend = optuna.storages.journal.JournalFileBackend(str(path), lock_obj=lock)
    return optuna.storages.JournalStorage(backend)


def open_study(sweeper: DictConfig, sweep_dir: Path, create: bool) -> optuna.Study:
    """The search's study (created when `create` and missing), with the configured pruner.
    Raises ConfigError in one line when the storage holds something else."""
    storage = storage_of(sweeper.get("storage"), sweep_dir)
    name = str(sweeper.get("study_name") or "sdrun")
    try:
        if create:
            return optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                       direction=direction(sweeper),
                                       pruner=pruner(sweeper.get("pruner")))  # fmt: skip
        return optuna.load_study(storage=storage, study_name=name,
                                 pruner=pruner(sweeper.get("pruner")))  # fmt: skip
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - a journal of someone else's can hold anything
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        where = sweeper.get("storage") or journal_path(sweep_dir)
        raise ConfigError(f"the search's study {name} in {where} cannot be opened ({first}); "
                          "give a new hydra.sweep.dir") from None  # fmt: skip


def direction(sweeper: DictConfig) -> str:
    value = str(sweeper.get("direction") or "maximize").lower()
    if value not in ("maximize", "minimize"):
        raise ConfigError(f"hydra.sweeper.direction={value}: give maximize or minimize")
    return value


def pruner(cfg: Any) -> optuna.pruners.BasePruner:
    """`hydra.sweeper.pruner`: which Optuna pruner stops a trial whose `val/top1` lags the
    others' at the same epoch (`name`: median, hyperband or none; `startup_trials` and
    `warmup_epochs` for median, `min_epochs` and `reduction_factor` for hyperband)."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create({"name": cfg or "none"})
    name = str(cfg.get("name", "none"))
    pruners = optuna.pruners
    if name == "median":
        return pruners.MedianPruner(n_startup_trials=int(cfg.get("startup_trials", 5)),
                                    n_warmup_steps=int(cfg.get("warmup_epochs", 0)))  # fmt: skip
    if name == "hyperband":
        factor = int(cfg.get("reduction_factor", 3))
        return pruners.HyperbandPruner(min_resource=int(cfg.get("min_epochs", 1)),
                                       reduction_factor=factor)  # fmt: skip
    if name == "none":
        return pruners.NopPruner()
    raise ConfigError(f"hydra.sweeper.pruner.name={name}: give one of {', '.join(PRUNERS)}")


def sampler_for(sweeper: DictConfig, number: int) -> optuna.samplers.BaseSampler:
    """The sampler that draws trial `number`. With a seed, each trial's sampler is seeded with
    seed + its number: a search is reproducible, however many processes share it and however
    often it was stopped (one sampler seeded once would draw its first values again in each)."""
    cfg = sweeper.get("sampler")
    if cfg is None:
        return optuna.samplers.TPESampler()
    seed = cfg.get("seed")
    try:
        if seed is None:
            return instantiate(cfg)
        return instantiate(cfg, seed=int(seed) + number)
    except Exception as err:  # noqa: BLE001 - Hydra's instantiate wraps the sampler's errors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"hydra.sweeper.sampler: cannot make it ({first}); give an Optuna "
                          "sampler's _target_ and its arguments") from None  # fmt: skip


def trial_id(study: optuna.Study, number: int) -> int:
    """The storage's id of trial `number` (what `optuna.trial.Trial` takes). Optuna keeps it on
    the frozen trial only as `_trial_id`: the one private name sdrun reads."""
    for trial in study.get_trials(deepcopy=False):
        if trial.number == number:
            return trial._trial_id
    raise ConfigError(f"the search's study has no trial {number}")


def stored_trials(sweeper: Any, sweep_dir: Path) -> int:
    """How many trials the search's study holds (0 when there is none yet)."""
    if not sweeper.get("storage") and not journal_path(sweep_dir).exists():
        return 0
    try:
        return len(open_study(sweeper, sweep_dir, create=False).trials)
    except ConfigError:
        return 0
