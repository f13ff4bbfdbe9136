"""A search's space in Hydra's override syntax, as Optuna distributions.

`hydra.sweeper.params` and the command line's overrides (which replace or add entries, and
delete them with `~key`: `sweep.search_space`) give each key either a sweep - `choice(a,b)`
(or `a,b`), `range(a,b[,step])` (integers a..b, both ends included), `interval(a,b)`,
`tag(log, interval(a,b))` - which Optuna draws from, or a plain value, which every trial gets.
Values go back to the command line through `render`, which writes what Hydra reads back as
that exact value (a string always quoted: a drawn or stored value is never Hydra syntax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sdrun.commandline.overrides import quote
from sdrun.errors import ConfigError

Scalar = Union[None, bool, int, float, str]


@dataclass(frozen=True)
class Space:
    searched: dict[str, BaseDistribution]  # what Optuna draws, key -> distribution
    fixed: dict[str, str]  # key -> the value every trial gets, as typed (an override's value)

    def fixed_overrides(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.fixed.items()]


def parse_space(space: dict[str, str]) -> Space:
    """The space `sweep.search_space` composed (key -> value as typed). Raises ConfigError
    naming an entry Optuna cannot draw from."""
    parser = OverridesParser.create()
    searched: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for key, spec in space.items():
        try:
            override = parser.parse_override(f"{key}={spec}")
        except HydraException as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError(
                f"the search space's {key}={spec} is not an override ({first})"
            ) from None
        if override.is_sweep_override():
            searched[key] = distribution(override, key, str(spec))
        else:
            fixed[key] = str(spec)
    return Space(searched, fixed)


def distribution(override: Override, key: str, spec: str) -> BaseDistribution:
    """The Optuna distribution of the sweep override `key=spec`."""
    value = override.value()
    if override.is_interval_sweep():
        low, high, log = value.start, value.end, "log" in value.tags
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if override.is_range_sweep() and not value.shuffle:
        start, stop, step = value.start, value.stop, value.step or 1
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(int(start), int(stop), step=int(step))
        return FloatDistribution(float(start), float(stop), step=float(step))
    choices = list(override.sweep_iterator())  # choice(...), a,b,c, shuffle(range(...))
    bad = [c for c in choices if not isinstance(c, (bool, int, float, str))]
    if bad:
        raise ConfigError(
            f"the search space's {key}={spec} holds {bad[0]!r}: Optuna draws numbers, "
            "booleans and strings only; give those"
        )
    return CategoricalDistribution(choices)


def suggest(trial: Any, key: str, dist: BaseDistribution) -> Scalar:
    """Draw `key` from `dist` for `trial` (Optuna's public suggest API, which its sampler
    answers)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    raise ConfigError(f"the search space's {key} has an unknown distribution {dist!r}")


def value_problem(value: Any, dist: BaseDistribution) -> str | None:
    """Why `value` (read from a study: another machine's, or a tampered one) is not a value
    `dist` can draw, of its type; None when it is."""
    if isinstance(dist, CategoricalDistribution):
        if any(type(value) is type(c) and value == c for c in dist.choices):
            return None
        return f"is not one of the choices {list(dist.choices)}"
    if isinstance(dist, IntDistribution):
        if type(value) is not int:
            return f"is a {type(value).__name__}, not an integer"
        if not dist.low <= value <= dist.high or (value - dist.low) % dist.step:
            return f"is not drawn from {dist.low}..{dist.high} (step {dist.step})"
        return None
    if isinstance(dist, FloatDistribution):
        if type(value) is not float or not math.isfinite(value):
            return f"is not a finite float ({type(value).__name__})"
        if not dist.low <= value <= dist.high:
            return f"is outside [{dist.low}, {dist.high}]"
        return None
    return "has an unknown distribution"


def render(value: Scalar) -> str:
    """`value` as an override's value that Hydra reads back as exactly `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return quote(str(value))
