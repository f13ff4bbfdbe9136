"""Retrain a finished search's best setting on the whole training set, on several seeds:

    python -m sdrun.sweeps.retrain <sweep dir> [--seeds 3] [overrides ...]

is `sdrun -m` over seed=0,1,2 with the search's own command (its dataset, model, method and
fixed values, from its sweep.yaml), the best trial's parameters (optimization_results.yaml),
and `dataset.val_split=0`: the protocol a paper reports, the setting chosen on the validation
split and its test accuracy measured by runs that never saw the test set decide anything. The
runs go to `<sweep dir>-best` (or the given hydra.sweep.dir), are tagged `chosen-on-val`, and
sdrun-report shows them as one table row labelled "chosen on the validation split".

A sweep folder may come from someone else: every setting taken from it passes the checks of a
folder's saved overrides (`saved_overrides.setting_problem`), and each best parameter must be a
value of the search's space. Overrides given here win over the search's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from sdrun.commandline.overrides import CONFIG_DIR, quote
from sdrun.commandline.run_dir_guard import exit_with
from sdrun.commandline.saved_overrides import setting_problem
from sdrun.commandline.sdrun_command import SDRUN
from sdrun.errors import ConfigError, SdrunError
from sdrun.sweeps import CHOSEN_ON_VALIDATION
from sdrun.sweeps.results import RESULTS
from sdrun.sweeps.space import parse_space, render, value_problem
from sdrun.sweeps.sweep import read_record
from sdrun.trust import files

# The search's own overrides that the retrain replaces: the search itself, its split, its seed.
REPLACED = ("hparams_search", "dataset.val_split", "seed", "logger.tags")


def retrain_argv(sweep_dir: Path, seeds: int, extra: list[str]) -> list[str]:
    """The `sdrun` command line that retrains the search in `sweep_dir`'s best setting."""
    record = read_record(sweep_dir)
    if not record or not record.get("objective"):
        raise ConfigError(f"{sweep_dir}: no search's sweep.yaml there; give the sweep folder of "
                          "a search (hparams_search=...)")  # fmt: skip
    best = _best_params(sweep_dir)
    space = parse_space(_strings(record.get("space"), "space", sweep_dir))
    given = {_key(o) for o in extra}
    saved = [str(o) for o in record.get("overrides") or []]
    kept = [o for o in saved if _key(o) not in (*space.searched, *space.fixed, *REPLACED)
            and not _key(o).startswith("hydra")]  # fmt: skip
    settings = [*kept, *space.fixed_overrides()]
    for key, dist in space.searched.items():
        if key not in best:
            raise ConfigError(f"{sweep_dir / RESULTS}: no best value of {key}; {_FIX}")
        problem = value_problem(best[key], dist)
        if problem:
            raise ConfigError(f"{sweep_dir / RESULTS}: {key}={best[key]!r} {problem}; {_FIX}")
        settings.append(f"{key}={render(best[key])}")
    settings.append(_tags(saved))
    for entry in settings:
        problem = setting_problem(entry, SDRUN, CONFIG_DIR)
        if problem:
            raise ConfigError(f"{sweep_dir}: the search's {entry!r} {problem}; {_FIX}")
    ours = [*settings, "dataset.val_split=0", f"seed={','.join(map(str, range(seeds)))}",
            f"hydra.sweep.dir={quote(f'{sweep_dir}-best')}"]  # fmt: skip
    return ["-m", *(o for o in ours if _key(o) not in given), *extra]


_FIX = (
    "retrain takes only plain settings of the search's space from a sweep folder, which may "
    "come from someone else; retrain a search of your own, or give the settings to sdrun"
)


def _best_params(sweep_dir: Path) -> dict[str, Any]:
    try:
        results = files.read_yaml(sweep_dir / RESULTS)
    except files.UnsafeFile:
        raise
    except (OSError, UnicodeError, yaml.YAMLError):
        results = None
    best = results.get("best_params") if isinstance(results, dict) else None
    if not isinstance(best, dict):
        raise ConfigError(
            f"{sweep_dir / RESULTS}: no best parameters there (the search has not finished); "
            f"continue it with hydra.sweep.dir={sweep_dir} first"
        )
    return best


def _strings(value: Any, what: str, sweep_dir: Path) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{sweep_dir}: sweep.yaml has no {what}; {_FIX}")
    return {str(k): str(v) for k, v in value.items()}


def _tags(saved: list[str]) -> str:
    """The search's own logger tags (if its command gave some) and `chosen-on-val`."""
    tags: list[Any] = []
    for entry in saved:
        if _key(entry) == "logger.tags":
            try:
                value = OverridesParser.create().parse_override(entry).value()
            except Exception:  # noqa: BLE001 - not Hydra's syntax: no tags taken from it
                value = []
            tags = value if isinstance(value, list) else []
    rendered = [render(t) for t in tags if isinstance(t, str)] + [CHOSEN_ON_VALIDATION]
    return f"logger.tags=[{','.join(rendered)}]"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sdrun.sweeps.retrain",
        description="Train a finished search's best setting on N seeds with "
        "dataset.val_split=0 (its test accuracy, chosen on the validation split).",
    )
    parser.add_argument("sweep_dir", type=Path, help="the search's hydra.sweep.dir")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("overrides", nargs="*", help="sdrun overrides, e.g. hydra/launcher=slurm")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    try:
        command = retrain_argv(args.sweep_dir, args.seeds, list(args.overrides))
    except SdrunError as err:  # a setting refused, a file that is not sdrun's
        exit_with(err)
    from sdrun.cli import main as sdrun_main

    sys.argv = ["sdrun", *command]
    sdrun_main()


if __name__ == "__main__":
    main()
