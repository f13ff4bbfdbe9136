"""Sweeps and searches (Hydra multiruns): what they vary, and what a search optimises.

`SweepCallback` (listed in conf/config.yaml's hydra.callbacks) runs once before the first job
of a multirun. It refuses a hyperparameter search (sdrun's Optuna sweeper) without a
validation split, which would select on the test set, and writes `sweep.yaml` into the sweep
directory: the swept keys (for the jobs' wandb names) and, for a search, its objective and
space (for `sdrun-report`). A search's objective is the final `val/top1` (`objective`).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sdrun.errors import ConfigError
from sdrun.sweeps.space_check import check_cycles
from sdrun.trust import files
from sdrun.trust.files import UnsafeFile
from sdrun.trust.folder import check_folder

log = logging.getLogger(__name__)

RECORD = "sweep.yaml"
OBJECTIVE = "val/top1"
EXIT_USER_ERROR = 2


class TrialFailed(RuntimeError):
    """A search trial that did not finish (it diverged). Raised to Hydra, not printed as a
    user error: the search records the trial as failed and goes on (up to
    `hydra.sweeper.max_failure_rate`)."""


def is_search(hydra_cfg: Any) -> bool:
    """Whether a Hydra config (the `hydra` node) runs a hyperparameter search (Optuna)."""
    target = str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="") or "")
    return "optuna" in target.lower()


def missing_search_plugin(argv: list[str]) -> Optional[str]:
    """The error line when the command line asks for a search (`hparams_search=...`) and
    Optuna, which the search runs on, is not installed (the `optuna` extra)."""
    asked = any(
        a.split("=", 1)[0].lstrip("+~") == "hparams_search" and a.split("=", 1)[-1] != "null"
        for a in argv
    )
    if not asked or _installed("optuna"):
        return None
    return (
        "hparams_search runs on Optuna, which is not installed; "
        "pip install -e '.[optuna]' (or pip install 'optuna>=4')"
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing (no Hydra plugin at all)
        return False


def in_search() -> bool:
    """Whether this process runs a job of a hyperparameter search."""
    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode == RunMode.MULTIRUN and is_search(hydra_cfg)


def objective(summary: dict[str, Any]) -> float:
    """What a job returns to the sweeper: the final validation top-1 when the run has a
    validation split, else the final test top-1 (which only a plain sweep may see: a search
    without a validation split is refused before its first trial)."""
    value = summary.get(OBJECTIVE)
    return float(summary["student/top1"] if value is None else value)


def sweeper_params(hydra_cfg: Any) -> dict[str, Any]:
    """`hydra.sweeper.params` as a plain dict (empty when the sweeper has none)."""
    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None)
    return {} if params is None else dict(OmegaConf.to_container(params, resolve=False))


def swept_keys(overrides: list[str], params: Optional[dict[str, Any]]) -> list[str]:
    """The keys a multirun varies: sweep overrides (`a=1,2`, `a=choice(1,2)`,
    `a=interval(0,1)`) in `hydra.sweeper.params` or on the command line, which wins."""
    given = [f"{key}={value}" for key, value in (params or {}).items()] + list(overrides)
    swept: dict[str, bool] = {}  # the command line's value of a key wins, as in the sweepers
    for override in OverridesParser.create().parse_overrides(given):
        swept[override.get_key_element().lstrip("+~")] = override.is_sweep_override()
    return [key for key, is_swept in swept.items() if is_swept]


def search_space(overrides: list[str], params: Optional[dict[str, Any]]) -> dict[str, str]:
    """What the Optuna sweeper searches: `hydra.sweeper.params`, with the command line's
    overrides of those keys and its own sweep overrides on top (as the sweeper merges them)."""
    space = {str(k): str(v) for k, v in (params or {}).items()}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element().lstrip("+~")
        if override.is_delete():  # ~key: not searched
            space.pop(key, None)
        elif key in space or override.is_sweep_override():
            space[key] = str(override.input_line).split("=", 1)[1]  # as typed
    return space


def swept_first(hydra_cfg: Any, dirname: str) -> str:
    """A job's override_dirname with the keys its multirun varies first, each part sorted as
    Hydra sorts the whole (`dirname` itself when the job's overrides are not known): a folder
    name cut to a file system's limit keeps what tells the jobs apart. Swept keys are named
    even when `exclude_keys` lists them."""
    lines = OmegaConf.select(hydra_cfg, "overrides.task", default=None)
    options = OmegaConf.select(hydra_cfg, "job.config.override_dirname", default=None)
    if lines is None or options is None or hydra_cfg.mode != RunMode.MULTIRUN:
        return dirname
    swept = set(multirun_swept(hydra_cfg))
    # a swept key names the jobs even when its kind is kept out of names (a preset:
    # `+experiment=a,b` gives `0_+experiment-a`, `1_+experiment-b`)
    kept = [o for o in OverridesParser.create().parse_overrides(list(lines))
            if o.key_or_group not in options.exclude_keys
            or o.key_or_group.lstrip("+~") in swept]  # fmt: skip
    first = sorted(str(o.input_line) for o in kept if o.key_or_group.lstrip("+~") in swept)
    rest = sorted(str(o.input_line) for o in kept if o.key_or_group.lstrip("+~") not in swept)
    return str(options.item_sep).join(first + rest).replace("=", str(options.kv_sep))


def multirun_swept(hydra_cfg: Any) -> list[str]:
    """The keys a running multirun varies: from its sweep.yaml, else from the sweeper's own
    params (no SweepCallback)."""
    record = read_record(Path(str(hydra_cfg.sweep.dir)))
    if record is not None and isinstance(record.get("swept"), list):
        return [str(key) for key in record["swept"]]
    return swept_keys([], sweeper_params(hydra_cfg))


def read_record(sweep_dir: Path) -> Optional[dict[str, Any]]:
    """The sweep's `sweep.yaml`, or None when it is missing or unreadable."""
    try:
        record = files.read_yaml(sweep_dir / RECORD)
    except (OSError, UnicodeError, yaml.YAMLError):
        return None
    return record if isinstance(record, dict) else None


SAME_SEARCH = ("objective", "direction", "space")


def restart_problem(sweep_dir: Path, record: dict[str, Any], sweeper: Any) -> Optional[str]:
    """Why a search cannot run in `sweep_dir`, which holds trials already (None if it can: a
    continued search, sdrun/sweeps/search.py). It must be the same search - same objective, space
    and task overrides; hydra.* settings such as n_trials may change - and its study must be
    stored, or new trials would take the job numbers, and folders, of the old ones."""
    trials = list(sweep_dir.rglob(".hydra/hydra.yaml")) if sweep_dir.is_dir() else []
    if not trials:
        return None
    old = read_record(sweep_dir) or {}
    changed = [key for key in SAME_SEARCH if old.get(key) != record.get(key)]
    if _task_overrides(old.get("overrides")) != _task_overrides(record.get("overrides")):
        changed.append("overrides")
    if changed:
        return (
            f"hydra.sweep.dir={sweep_dir} holds {len(trials)} trial(s) of another search "
            f"({', '.join(changed)} differ from its {RECORD}); continue it with the command it "
            "was started with (only hydra.* settings such as hydra.sweeper.n_trials may "
            "change), or give a new hydra.sweep.dir"
        )
    from sdrun.sweeps.study import stored_trials  # imports optuna: only for a search

    if not stored_trials(sweeper, sweep_dir):
        storage = sweeper.get("storage") or f"null (its {sweep_dir}/optuna.journal)"
        return (
            f"hydra.sweep.dir={sweep_dir} holds {len(trials)} trial(s) of a search whose study "
            f"is not in hydra.sweeper.storage={storage} (study {sweeper.get('study_name')}), "
            "so it cannot be continued; give a new hydra.sweep.dir"
        )
    return None


def _task_overrides(overrides: Any) -> list[str]:
    """A command's overrides that decide what its jobs compute (not hydra.* settings)."""
    given = [str(o) for o in overrides] if isinstance(overrides, list) else []
    return sorted(o for o in given if not o.lstrip("+~").startswith("hydra."))


def _refuse(message: str) -> None:
    """One line on stderr and exit 2, before any job (and before sweep.yaml is written)."""
    print(f"sdrun: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # a continued sweep or search: its folder may come from someone else
            check_folder(Path(str(config.hydra.sweep.dir)), "sweep folder")
        except UnsafeFile as err:
            _refuse(str(err))
        search = is_search(config.hydra)
        if search and not OmegaConf.select(config, "dataset.val_split", default=0):
            _refuse(
                "a hyperparameter search selects on what it evaluates, and "
                "without a validation split that is the test set; add dataset.val_split=N "
                "(e.g. 5000 of CIFAR's 50000 training images)"
            )
        params = sweeper_params(config.hydra)
        overrides = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        space = search_space(overrides, params)
        try:
            check_cycles(space, OmegaConf.select(config, "schedule.epochs"), search)
        except ConfigError as err:
            _refuse(str(err))
        record: dict[str, Any] = {
            "sweeper": str(config.hydra.sweeper.get("_target_", "")),
            "swept": swept_keys(overrides, params),
            "overrides": overrides,
        }
        if search:
            storage = config.hydra.sweeper.get("storage")
            record.update(
                objective=OBJECTIVE,
                direction=str(config.hydra.sweeper.get("direction", "")),
                space=space,
                n_trials=int(config.hydra.sweeper.get("n_trials", 0)),
                storage=str(storage) if storage else "journal",  # the folder's optuna.journal
            )
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if search:
            problem = restart_problem(sweep_dir, record, config.hydra.sweeper)
            if problem:
                _refuse(problem)  # before sweep.yaml: the stopped search's stays as it was
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            files.write_text(sweep_dir / RECORD, yaml.safe_dump(record, sort_keys=False))
        except OSError as err:  # names and the report lose detail; the sweep itself is fine
            log.warning("could not write %s (%s)", sweep_dir / RECORD, err)
