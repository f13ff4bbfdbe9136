"""A key that a typed node of the config does not declare, said in one line naming the keys it
has: the method's settings for `distill.<key>` (each method has only its own keys), the
group's keys elsewhere.

Hydra refuses such a key at composition (`key=value`, or a preset's YAML), and
sdrun/commandline/hydra_errors.py words that refusal with `unknown_key_message`. An appended
`+key=value` is not refused: Hydra opens the node to add it, and building the config objects
then drops it silently (a run that ignores a setting its command line gave);
`refuse_undeclared` refuses those before a run starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from sdrun.errors import ConfigError


def unknown_key_message(full_key: str, owner: type, name: Any = None) -> str:
    """`full_key` names no key of the dataclass `owner` (a node whose `name` is `name`)."""
    group, _, key = full_key.rpartition(".")
    where = f"{group}={name}" if group and isinstance(name, str) else (group or "the config")
    keys = ", ".join(f"{group}.{f.name}" if group else f.name for f in dataclasses.fields(owner))
    return (
        f"{full_key}: {where} has no key {key!r} (its keys: {keys}); drop {full_key}, fix its "
        f"spelling, or choose a {group or 'config'} option that has it"
    )


def undeclared(cfg: DictConfig, prefix: str = "") -> Iterator[tuple[str, type, Optional[str]]]:
    """(full key, the dataclass that lacks it, that node's `name`) for every key of a typed node
    of `cfg` that its dataclass does not declare; free-form nodes (`model.kwargs`) hold any."""
    owner = OmegaConf.get_type(cfg)
    declared = (
        {f.name for f in dataclasses.fields(owner)} if dataclasses.is_dataclass(owner) else None
    )
    for key in cfg:
        full = f"{prefix}{key}"
        if declared is not None and key not in declared:
            name = cfg.get("name") if "name" in declared else None
            yield full, owner, name if isinstance(name, str) else None
            continue
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from undeclared(child, f"{full}.")


def refuse_undeclared(cfg: DictConfig) -> None:
    """Raise ConfigError for the first key `cfg`'s schema does not declare (see the module)."""
    for full, owner, name in undeclared(cfg):
        raise ConfigError(unknown_key_message(full, owner, name))
