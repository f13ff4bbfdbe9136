"""What a multirun's space can give its jobs, checked before the first job: every
`schedule.cycles` (and `cycle_length`) value a sweep or search can draw must divide every
`schedule.epochs` value it can draw (`check_cycles`, called by sweep.SweepCallback). A search
would otherwise fail at the trial that draws one, possibly hours in."""

from __future__ import annotations

import math
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from sdrun.errors import ConfigError
from sdrun.training.schedule import resolve_cycle_length

# Keys whose values decide the cycles: every value a multirun gives them must fit the epochs.
CYCLE_KEYS = ("schedule.epochs", "schedule.cycles", "schedule.cycle_length")
MAX_DRAWS = 10_000  # an int range wider than this is not enumerated (its ends are checked)


def values_of(spec: str, key: str, search: bool) -> list[Any]:
    """Every value the override `key=spec` can give a job: a choice's values, a range's (the
    Optuna sweeper draws `range(a,b)` as the integers a..b, both ends included), a plain value
    itself. Hydra's intervals are floats (Optuna draws them as such): ConfigError, as a key
    that counts cycles or epochs takes whole numbers."""
    override = OverridesParser.create().parse_override(f"{key}={spec}")
    if not override.is_sweep_override():
        return [override.value()]
    if override.is_interval_sweep():
        interval = override.value()
        low, high = math.floor(interval.start), math.ceil(interval.end)
        raise ConfigError(
            f"{key}={spec} draws non-integer values, and {key} counts whole epochs or cycles; "
            f"search it with {key}=range({low},{high}) (Optuna draws {low}..{high}) or a choice"
        )
    if override.is_range_sweep() and search:  # Optuna: IntUniformDistribution(start, stop)
        rng = override.value()
        return _ints(int(rng.start), int(rng.stop), int(rng.step or 1))
    return list(override.sweep_iterator())


def _ints(low: int, high: int, step: int) -> list[int]:
    if (high - low) // max(step, 1) > MAX_DRAWS:
        return [low, high]
    return list(range(low, high + 1, max(step, 1)))


def check_cycles(space: dict[str, str], epochs: Any, search: bool) -> None:
    """Every cycles (and cycle length) value the multirun can draw must divide every epochs
    value it can draw, by the runner's own rule (`resolve_cycle_length`): a search would
    otherwise fail at the trial that draws one, possibly hours in. Raises ConfigError naming
    the space entry and a value that does not fit."""
    if not any(key in space for key in CYCLE_KEYS[1:]):
        return
    try:
        drawn = {k: values_of(space[k], k, search) for k in CYCLE_KEYS if k in space}
    except HydraException:
        return  # not an override Hydra reads: the sweeper says so itself
    for n_epochs in drawn.get("schedule.epochs", [epochs]):
        if not isinstance(n_epochs, int):
            return  # not a number here: each job's own validation says so
        for key in CYCLE_KEYS[1:]:
            values = drawn.get(key, [])
            fits = [v for v in values if _fits(key, v, n_epochs)]
            for value in values:
                if value in fits:
                    continue
                where = "search space" if search else "sweep"
                fit = ",".join(map(str, fits))
                hint = f"; the values that fit: {key}=choice({fit})" if fits else ""
                raise ConfigError(
                    f"the {where}'s {key}={space[key]} can draw {value}: "
                    f"{_problem(key, value, n_epochs)} (checked before any job starts){hint}"
                )


def _fits(key: str, value: Any, epochs: int) -> bool:
    return _problem(key, value, epochs) is None


def _problem(key: str, value: Any, epochs: int) -> Optional[str]:
    """Why `key=value` cannot run with `epochs` (the runner's own message), or None."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{key}={value!r} is not a whole number; give integers"
    try:
        if key == "schedule.cycles":
            resolve_cycle_length(epochs, None, value)
        else:
            resolve_cycle_length(epochs, value, None)
    except ConfigError as err:
        return str(err)
    return None
