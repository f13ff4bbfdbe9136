"""Value checks that a config's types cannot express, shared by the schemas' validations
(sdrun/config.py, sdrun-transfer's, each method's settings in sdrun/methods/): each raises
`ConfigError` in one line naming the key and how to fix it."""

from __future__ import annotations

import math
from typing import Optional

from sdrun.errors import ConfigError

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts


def choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}; pick one of those")


def positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    # `nan < 0` is False: a NaN would pass a plain comparison, and inf is no setting either.
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value} must be {bound} and finite; set {key} to such a value")


def fraction(key: str, value: float) -> None:
    """A value in [0, 1): momentum, dropout rates."""
    if not 0 <= value < 1:  # False for nan
        raise ConfigError(f"{key}={value} must be in [0, 1); set {key} to such a value")


def unit(key: str, value: float) -> None:
    """A value in [0, 1]: a probability or a mixing weight."""
    if not 0 <= value <= 1:  # False for nan
        raise ConfigError(f"{key}={value} must be in [0, 1]; set {key} to a value in [0, 1]")


def check_seed(key: str, value: Optional[int]) -> None:
    if value is not None and not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise ConfigError(f"{key}={value} does not fit in 64 bits; pick a smaller {key}")
