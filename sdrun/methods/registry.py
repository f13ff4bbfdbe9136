"""Training methods by name, the way timm registers models: a method module decorates its
class with `@register_method`, which registers it under the name its settings declare and its
settings as the `distill` group's option of that name in Hydra's ConfigStore (with the
method's default schedule), so `distill=<name>` composes exactly its keys. Everything else
asks the registry, so no other module names a method."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf, open_dict

from sdrun.config import MethodSettings, declared_name
from sdrun.errors import ConfigError

if TYPE_CHECKING:
    from sdrun.methods.base import Method

M = TypeVar("M", bound="type[Method]")
GROUP = "distill"  # the config group whose options are the methods' settings
_METHODS: dict[str, type[Method]] = {}


def register_method(cls: M) -> M:
    """Class decorator: make the method available as `distill=<name>`, `name` being what its
    `settings` declare."""
    name = declared_name(cls.settings)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{cls.__name__}.settings declares no method name (its `name` default)")
    if name in _METHODS and _METHODS[name] is not cls:
        raise ValueError(f"two training methods are registered as {name!r}")
    cls.name = name
    _METHODS[name] = cls
    ConfigStore.instance().store(group=GROUP, name=name, node=_option(cls))
    return cls


def unregister_method(name: str) -> None:
    """Take a method out of the registry and of the `distill` group (tests' own methods)."""
    _METHODS.pop(name, None)
    ConfigStore.instance().repo.get(GROUP, {}).pop(f"{name}.yaml", None)


def _option(cls: type[Method]) -> Any:
    """The `distill=<name>` option: the settings' schema, and, when the method declares one, a
    defaults list choosing its schedule (`schedule=` on the command line or a preset's
    `override /schedule` still wins: Hydra keeps the first choice it meets)."""
    node = OmegaConf.structured(cls.settings)
    if cls.schedule is not None:
        with open_dict(node):
            node["defaults"] = [{"override /schedule@_global_.schedule": cls.schedule}, "_self_"]
    return node


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
        raise ConfigError(f"distill={name} is not one of {', '.join(_METHODS)}; pick one of those")
    return cls


def default_settings(name: str) -> MethodSettings:
    """The settings `distill=<name>` composes with no other override: the declared defaults."""
    return method_class(name).settings()


def settings_keys(name: object) -> Optional[frozenset[str]]:
    """The keys the method `name` has, as `distill.<key>` (its name aside): what its numbers
    depend on, so what identifies its runs (sdrun/report/identity.py). None: no such method."""
    method = find_method(name)
    if method is None:
        return None
    return frozenset(f"{GROUP}.{f.name}" for f in fields(method.settings) if f.name != "name")


def build_method(settings: MethodSettings) -> Method:
    """The method whose settings these are (the `distill` group)."""
    return method_class(settings.name)(settings)
