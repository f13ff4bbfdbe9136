"""Model settings from a received folder may not name files for timm to read.

`timm.create_model` reads a file for some of its arguments, before sdrun sees a weight:
`checkpoint_path` (loaded once the model is built), `pretrained_cfg` / `pretrained_cfg_overlay`
(their `file`, `url` and `hf_hub_id` are where pretrained weights come from), `cache_dir` (where
cached hub weights are read from), and model names with a source (`hf-hub:<repo>`,
`local-dir:<folder>`). timm 1.0.12, sdrun's floor, loads `checkpoint_path` with a bare
`torch.load`, which torch before 2.6 reads as `weights_only=False`: a pickle that runs code. So
a model's settings that come from someone else's run folder (its `.hydra/overrides.yaml` under
`resume=`, its checkpoint's config under `sdrun-transfer backbone=`) are refused when they name a
file, on every timm version; settings the user types are theirs and are not checked here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Optional

from sdrun.errors import ConfigError

# create_model arguments (and keys of pretrained_cfg dicts) that name a file, a folder or a URL.
FILE_KWARGS = frozenset(
    {"checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "file", "url",
     "hf_hub_id", "hf_hub_filename"}
)  # fmt: skip
# ...and any argument named like one (e.g. a model's own `weights_path`), at any depth.
FILE_SUFFIXES = ("_path", "_file", "_dir", "_url")
# A plain timm architecture name (with its optional `.tag`): no `hf-hub:` or `local-dir:` source.
PLAIN_MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# String values that look like a location rather than a name (timm's string arguments are names
# such as 'gelu' or 'avg').
LOCATION = re.compile(r"[/\\:~]")


def kwargs_problem(kwargs: Any, prefix: str = "model.kwargs") -> Optional[str]:
    """What in `kwargs` (model.kwargs or a part of it) names a file, or None."""
    if not isinstance(kwargs, Mapping):
        return f"{prefix} is a {type(kwargs).__name__}, not a mapping of keyword arguments"
    for key, value in kwargs.items():
        where = f"{prefix}.{key}"
        if not isinstance(key, str):
            return f"{where} has a key that is not a string"
        if key in FILE_KWARGS or key.endswith(FILE_SUFFIXES):
            return f"{where} names a file for timm to load"
        problem = value_problem(value, where)
        if problem:
            return problem
    return None


def value_problem(value: Any, where: str) -> Optional[str]:
    """What in one keyword argument's value could name a file, or None."""
    if isinstance(value, Mapping):
        return kwargs_problem(value, where)
    if isinstance(value, (list, tuple)):
        return next((p for v in value if (p := value_problem(v, where))), None)
    if isinstance(value, str) and LOCATION.search(value):
        return f"{where}={value!r} looks like a path or URL"
    return None


def name_problem(name: Any) -> Optional[str]:
    """What is wrong with a received model.name (a source prefix, a path), or None."""
    if not isinstance(name, str) or not PLAIN_MODEL_NAME.fullmatch(name):
        return f"model.name={name!r} is not a plain timm model name (hf-hub:, local-dir:, a path)"
    return None


def check_received_model(model: Any, where: str) -> None:
    """Refuse a received config's `model` node whose name or kwargs name a file (one line).

    `where` says what the node came from, e.g. `backbone: <checkpoint>`.
    """
    if not isinstance(model, Mapping):
        raise ConfigError(f"{where}: its config's model is not a mapping; use an sdrun run")
    problem = name_problem(model.get("name")) or kwargs_problem(model.get("kwargs") or {})
    if problem:
        raise ConfigError(
            f"{where}: {problem}, which sdrun does not take from a received run (timm would read "
            "that file, possibly running code); use a run without it"
        )
