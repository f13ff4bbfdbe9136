"""Hydra's composition errors as one line.

Hydra reports a value of the wrong type (`dataset.batch_size=abc`), an unknown key or an
override it cannot parse on several lines: OmegaConf's `full_key` / `reference_type` lines
and a hint about HYDRA_FULL_ERROR. With HYDRA_FULL_ERROR set it raises them instead; `run`
turns them into a `ConfigError` of one line naming the key and the type the schema wants, or,
for a key the schema lacks, the keys it has (sdrun/schema_keys.py: a method's own settings).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable
from typing import Any, Optional

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from sdrun.errors import ConfigError
from sdrun.schema_keys import unknown_key_message


def run(launch: Callable[[], Any]) -> Any:
    """Run `launch` (a command's hydra.main); its composition errors raise `ConfigError`.
    A user who set HYDRA_FULL_ERROR=1 gets Hydra's own full report."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return launch()
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return launch()
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(one_line(err)) from None
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def one_line(err: Exception) -> str:
    """Hydra's (and OmegaConf's) message as one line: the key, what is wrong, the type wanted."""
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    if not isinstance(cause, OmegaConfBaseException) or not key:
        override = getattr(err, "override", None)  # an override Hydra's grammar cannot parse
        return f"{override}: {_joined(str(err))}" if override else _joined(str(err))
    unknown = _unknown_key(cause, key)
    if unknown:
        return unknown
    text = _joined(getattr(cause, "msg", None) or str(cause))
    if cause is not err:  # Hydra's own line says which override, and may hint at the fix
        text = f"{text} ({_joined(str(err))})"
    expected = _schema_type(cause)
    hint = f"; give {key} a value of type {expected}" if expected else ""
    return f"{key}: {text}{hint}"


def _unknown_key(err: OmegaConfBaseException, full_key: str) -> Optional[str]:
    """A key the typed node does not have (`distill.temperature` with distill=pskd), named with
    the keys it has (the method's settings); None for any other error."""
    owner, key = getattr(err, "object_type", None), getattr(err, "key", None)
    if not isinstance(err, (ConfigAttributeError, ConfigKeyError)) or not isinstance(key, str):
        return None
    if not dataclasses.is_dataclass(owner) or key in {f.name for f in dataclasses.fields(owner)}:
        return None
    parent = getattr(err, "parent_node", None)
    name = parent.get("name") if isinstance(parent, DictConfig) else None
    return unknown_key_message(full_key, owner, name)


def _joined(text: str) -> str:
    """Lines as one: OmegaConf's full_key/type lines and Hydra's config search path dropped,
    an indented list (a group's options) joined by commas."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Config search path"):
            break
        if not line or line.startswith(("full_key:", "reference_type=", "object_type=")):
            continue
        if raw[:1] in (" ", "\t") and out:
            out[-1] += (" " if out[-1].endswith(":") else ", ") + line
        else:
            out.append(line)
    return " ".join(f"{p}" if p.endswith(".") else f"{p};" for p in out).rstrip(";")


def _schema_type(err: OmegaConfBaseException) -> Optional[str]:
    """The type the schema gives the key `err` is about (None: not a schema key)."""
    owner, key = getattr(err, "object_type", None), getattr(err, "key", None)
    if not dataclasses.is_dataclass(owner) or not isinstance(key, str):
        return None
    hint = typing.get_type_hints(owner).get(key)
    if hint is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return f"{getattr(args[0], '__name__', args[0])} or null"
    return getattr(hint, "__name__", str(hint))
