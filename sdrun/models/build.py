"""`build_model`: timm.create_model with config errors reported as one-line `ConfigError`s."""

from __future__ import annotations

import difflib
from typing import Any

import timm
import torch
from timm.models import split_model_name_tag

from sdrun.errors import ConfigError

# Arguments build_model sets itself; a copy in model.kwargs would clash with them.
_RESERVED_KWARGS: dict[str, str] = {
    "num_classes": "it comes from the dataset",
    "pretrained": "use model.pretrained",
    "in_chans": "it is an argument of build_model",
}
# Keys that give timm a pretrained weight source of the user's own (e.g. a local file).
_PRETRAINED_SOURCE_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay")


def build_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    in_chans: int = 3,
    kwargs: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """Create a timm model (our CIFAR ResNets included) or raise a `ConfigError` naming the key.

    `kwargs` is passed to `timm.create_model` (e.g. drop_rate) and errors are attributed to
    `model.name`, `model.kwargs` or `model.pretrained`, the config keys the user can fix.
    """
    kwargs = dict(kwargs or {})
    _check_name(name)
    for key, why in _RESERVED_KWARGS.items():
        if key in kwargs:
            raise ConfigError(f"model.kwargs.{key} is not allowed ({why}); remove it")
    own_source = any(kwargs.get(k) for k in _PRETRAINED_SOURCE_KWARGS)
    if pretrained and not own_source and not timm.is_model_pretrained(name):
        raise ConfigError(
            f"model.pretrained=true but timm has no pretrained weights for {name!r}; "
            "set model.pretrained=false"
        )
    try:
        return timm.create_model(
            name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
    except TypeError as err:
        # timm passes unknown kwargs through to the model's __init__, which raises TypeError.
        key = "model.kwargs" if kwargs else "model.name"
        raise ConfigError(
            f"{key}: {name!r} does not accept its arguments {kwargs!r}: {_one_line(err)}"
        ) from err
    except Exception as err:
        if not pretrained:
            raise
        # Download/cache failures surface as many exception types (OSError, HTTP, hub errors).
        raise ConfigError(
            f"model.pretrained=true: could not load pretrained weights for {name!r} "
            f"({type(err).__name__}: {_one_line(err)}); set model.pretrained=false or make the "
            "weights available offline"
        ) from err


def _check_name(name: str) -> None:
    """Raise ConfigError unless `name` is a registered timm architecture (and valid tag)."""
    if not timm.is_model(name):
        raise ConfigError(
            f"model.name={name!r} is not a timm model; "
            f"{_close_matches(name, timm.list_models())}; see timm.list_models()"
        )
    arch, tag = split_model_name_tag(name)
    if tag:
        tagged = timm.list_models(arch, include_tags=True)
        if name not in tagged:
            raise ConfigError(
                f"model.name={name!r} has an unknown pretrained tag; "
                f"{_close_matches(name, tagged)}; see timm.list_models({arch!r}, include_tags=True)"
            )


def _close_matches(name: str, candidates: list[str]) -> str:
    matches = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    return f"close matches: {', '.join(matches)}" if matches else "no close matches"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
