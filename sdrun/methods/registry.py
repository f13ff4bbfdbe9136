"""Training methods by name, the way timm registers models: a method module decorates its
class with `@register_method("name")`, and `distill=<name>` (conf/distill/<name>.yaml) picks
it. Everything else asks the registry, so no other module names a method."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Optional, TypeVar

from sdrun.errors import ConfigError

if TYPE_CHECKING:
    from sdrun.config import DistillConfig
    from sdrun.methods.base import Method

M = TypeVar("M", bound="type[Method]")
_METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: make the method available as `distill=<name>`."""

    def add(cls: M) -> M:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"two training methods are registered as {name!r}")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return add


def method_names() -> tuple[str, ...]:
    """Every registered method's name, in registration order."""
    return tuple(_METHODS)


def find_method(name: object) -> Optional[type[Method]]:
    """The method called `name`, or None (a run folder of a method this sdrun lacks)."""
    return _METHODS.get(name) if isinstance(name, str) else None


def method_label(name: object, schedule: object) -> str:
    """A run's method as sdrun-report and wandb name it (sd, cyclic, cosine, kd, ...): the
    method's own `label` for the schedule; an unknown method's name as it is."""
    method = find_method(name)
    return str(name) if method is None else method.label(str(schedule))


def method_class(name: str) -> type[Method]:
    cls = find_method(name)
    if cls is None:
        raise ConfigError(
            f"distill.name={name!r} is not one of {', '.join(_METHODS)}; pick one of those"
        )
    return cls


def build_method(cfg: DistillConfig) -> Method:
    """The method `distill.name` names, set up from the `distill` group."""
    return method_class(cfg.name)(cfg)
