"""Run folders and checkpoints of an sdrun before each method had its own settings: their
`distill` block holds every method's keys (one flat block of twelve), and their command line
could set a key the method never read (`distill=pskd distill.temperature=3`, or a sweep over
it). They resume, compare and report as before: the block is read as its method's settings,
and a key the method lacks, which it never read, is dropped (with a note, where a resume's
command line would otherwise be refused at composition)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import yaml

from sdrun.methods.registry import GROUP, settings_keys
from sdrun.trust import files

CONFIG = Path(".hydra") / "config.yaml"  # the composed config Hydra saved in a run folder


def settings_view(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flattened config with its `distill.*` keys cut to its method's settings; a method this
    sdrun lacks keeps them all (its keys are not known)."""
    keys = settings_keys(flat.get(f"{GROUP}.name"))
    if keys is None:
        return dict(flat)
    return {k: v for k, v in flat.items() if not _setting(k) or k in keys}


def unread_overrides(saved: list[str], run_dir: Path) -> tuple[list[str], list[str]]:
    """(kept, dropped) of a run folder's saved overrides: dropped, the `distill.<key>=...` that
    its method (as its saved config names it) does not have, so never read."""
    keys = settings_keys(_saved_method(run_dir))
    if keys is None:
        return list(saved), []
    kept, dropped = [], []
    for entry in saved:
        key = entry.split("=", 1)[0].lstrip("+~") if isinstance(entry, str) else ""
        (dropped if _setting(key) and key not in keys else kept).append(entry)
    return kept, dropped


def _setting(key: str) -> bool:
    return key.startswith(f"{GROUP}.") and key != f"{GROUP}.name"


def _saved_method(run_dir: Path) -> Optional[str]:
    """The method a run folder's saved config names (read as data: the folder may come from
    someone else), or None."""
    try:
        config = files.read_yaml(run_dir / CONFIG)
    except (OSError, UnicodeError, yaml.YAMLError):
        return None
    method = config.get(GROUP) if isinstance(config, dict) else None
    name = method.get("name") if isinstance(method, dict) else None
    return name if isinstance(name, str) else None
