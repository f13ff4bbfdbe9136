"""A run folder's `.hydra/overrides.yaml`, read as data for `resume=`.

A run folder may come from someone else, and Hydra acts on what its command line holds: a flag
(`--experimental-rerun=<pickle>` unpickles a file), a config-group option that is a path
(`+experiment=../../<folder>/x` loads any YAML file, whose `hydra.callbacks` Hydra instantiates),
Hydra's own settings, interpolations (`${oc.env:...}`). So every saved entry is checked before
it joins the command line, and the first that is not plainly a setting of the command is
refused in one line, before Hydra runs or anything in the folder changes. An entry passes when
- it is one `key=value` (`+key=value`, `++key=value`), or a deletion `~key[=value]` (a deletion
  can only take a key of the schema out of the config; Hydra writes what the user typed, so a run
  started with one must resume);
- the key is a group of the command (its primary config's defaults, and `experiment`) whose
  value is the name of a config sdrun ships (a file of its config package, or a structured
  config registered in Hydra's ConfigStore: each training method's settings, `distill=<name>`;
  so no path can name another file), or a key of the command's structured schema (any key under
  `model.kwargs`, which is free-form; under `distill`, a key of some method's settings: the
  composition then refuses one the run's method lacks);
- the value is a plain literal: not a sweep, no unescaped `${` interpolation;
- model settings name no file (`sdrun.commandline.model_files`).
Keys of Hydra's own config (`hydra.*`, `hydra/...`) are refused, not dropped: Hydra saves them in
hydra.yaml, never in overrides.yaml (`Override.is_hydra_override`), so one there was put there by
hand, and `hydra.callbacks`, `hydra.searchpath` or the job logging's handler factories are code.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import yaml
from hydra.core.config_store import ConfigStore

from sdrun.commandline.model_files import kwargs_problem, name_problem
from sdrun.errors import ConfigError
from sdrun.trust import files

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from hydra.core.override_parser.overrides_parser import OverridesParser

SAVED = Path(".hydra") / "overrides.yaml"
# An interpolation OmegaConf would resolve: `${` after an even number of backslashes
# (`\${` is a literal `${`, `\\${` a backslash and then an interpolation).
INTERPOLATION = re.compile(r"(?<!\\)(?:\\\\)*\$\{")
_SHOWN = 300  # characters of a refused entry quoted in the error (a path can be long)


@dataclass(frozen=True)
class Command:
    """What a command's saved overrides may set."""

    prog: str  # sdrun, sdrun-transfer
    schema: type  # its structured config (a dataclass)
    primary: str  # its primary config in the config package (config, transfer)
    # Groups taken with `+` that the primary config does not list (presets).
    presets: tuple[str, ...] = ()


def read_saved_overrides(run_dir: Path, command: Command, config_dir: str) -> list[str]:
    """`run_dir`'s saved overrides, every one checked; `config_dir` is where Hydra reads the
    configs (`pkg://sdrun.conf` or a folder). Raises ConfigError naming the first refused."""
    path = run_dir / SAVED
    try:
        entries = files.read_yaml(path)  # the folder may come from someone else
    except (OSError, UnicodeError, yaml.YAMLError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{path}: not readable as YAML ({first}); {_FIX}") from None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(
            f"{path}: holds a {type(entries).__name__}, not a list of overrides; {_FIX}"
        )
    groups = shipped_options(_conf_root(config_dir), command)
    for entry in entries:
        problem = entry_problem(entry, command, groups)
        if problem:
            raise ConfigError(f"{path}: entry {_shown(entry)} {problem}; {_FIX}")
    return entries


_FIX = (
    "resume= takes only plain settings of the command from a folder, which may come from "
    "someone else: delete the entry from that file, or give hydra.run.dir=<folder> and the "
    "overrides yourself"
)


def _shown(entry: Any) -> str:
    """The entry as one short line (repr escapes newlines and control characters)."""
    text = repr(entry)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."


def entry_problem(entry: Any, command: Command, groups: dict[str, set[str]]) -> Optional[str]:
    """Why `entry` may not join the command line, or None."""
    if not isinstance(entry, str):
        return f"is not an override string (YAML reads a {type(entry).__name__})"
    if entry.lstrip().startswith("-"):
        return "is a command-line flag, not a key=value override"
    try:
        override = _parser().parse_override(entry)
    except Exception:  # noqa: BLE001 - Hydra's grammar raises several types
        return "is not a key=value override Hydra can read"
    key = override.key_or_group
    if key == "hydra" or key.startswith(("hydra.", "hydra/")):
        return "sets Hydra's own configuration (callbacks, search path, launcher), not sdrun's"
    if override.package is not None:
        return "places a config at a package (@), which sdrun's overrides never do"
    if override.is_sweep_override():
        return "is a sweep, not one value"
    value = None if override.value_type is None else override.value()
    if key in groups:
        if value is not None and (not isinstance(value, str) or value not in groups[key]):
            return f"is not one of the {key} configs sdrun ships (see {command.prog} --help)"
        return None
    if not in_schema(command.schema, key.split(".")):
        return f"is not a setting of {command.prog} (not in its schema)"
    problem = value_problem(value)
    if problem or override.is_delete():
        return problem
    return model_problem(key, value)


def setting_problem(entry: str, command: Command, config_dir: str) -> Optional[str]:
    """Why one `key=value` that a stored record (an Optuna trial's parameter, a search's best
    setting) would add to `command`'s command line may not join it, or None: the rules of the
    saved overrides, for one entry."""
    return entry_problem(entry, command, _shipped(command, config_dir))


@functools.cache
def _shipped(command: Command, config_dir: str) -> dict[str, set[str]]:
    return shipped_options(_conf_root(config_dir), command)


@functools.cache
def _parser() -> OverridesParser:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def value_problem(value: Any) -> Optional[str]:
    """Why a parsed value is not a plain literal (a scalar, or lists and dicts of them)."""
    if value is None or isinstance(value, (bool, int, float)):
        return None
    if isinstance(value, str):
        return "holds an interpolation (${...})" if INTERPOLATION.search(value) else None
    if isinstance(value, list):
        return next((p for v in value if (p := value_problem(v))), None)
    if isinstance(value, dict):
        parts = [*value.keys(), *value.values()]
        return next((p for v in parts if (p := value_problem(v))), None)
    return f"has a value of type {type(value).__name__}, not a plain literal"


def model_problem(key: str, value: Any) -> Optional[str]:
    """Why a model setting may not come from a received folder (it names a file), or None."""
    if key == "model.name":
        return name_problem(value)
    if key == "model.kwargs":
        return kwargs_problem(value)
    if key.startswith("model.kwargs."):
        *path, last = key.split(".")[2:]
        nested: Any = {last: value}
        for part in reversed(path):
            nested = {part: nested}
        return kwargs_problem(nested)
    return None


def in_schema(schema: Any, parts: list[str]) -> bool:
    """Whether the dotted key `parts` names a node of the structured config `schema`: a field of
    a dataclass, any key of a dict, anything under an `Any`."""
    node = schema
    for part in parts:
        node = _without_optional(node)
        if node is Any:
            return True
        if dataclasses.is_dataclass(node):
            hints = _hints(node)
            if part not in hints:
                return False
            node = hints[part]
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return False  # a scalar or a list has no sub-keys
    return True


def _hints(schema: type) -> dict[str, Any]:
    """The fields of a dataclass and of its subclasses: a group typed with a base class takes
    any of them (`distill`: `MethodSettings`, whose subclasses are the methods' settings)."""
    hints: dict[str, Any] = {}
    for cls in reversed([schema, *_subclasses(schema)]):
        hints.update(typing.get_type_hints(cls))
    return hints


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _without_optional(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return args[0]
    return hint


def shipped_options(root: Traversable, command: Command) -> dict[str, set[str]]:
    """Each group of `command` -> the names of its configs in the config package (nested ones as
    `sub/name`, e.g. experiment's `cifar100/resnet20_sd`)."""
    primary = yaml.safe_load((root / f"{command.primary}.yaml").read_text(encoding="utf-8"))
    groups = [*command.presets]
    for item in primary.get("defaults", []):
        if isinstance(item, dict) and len(item) == 1:
            (name,) = item
            if re.fullmatch(r"\w+", str(name)):  # not hydra/..., override ..., @packages
                groups.append(str(name))
    store = ConfigStore.instance()
    return {group: {*_config_names(root / group), *_stored_names(store, group)} for group in groups}


def _stored_names(store: ConfigStore, group: str) -> list[str]:
    """The options of `group` registered in Hydra's ConfigStore (code, never a path)."""
    try:
        return [name.removesuffix(".yaml") for name in store.list(group)]
    except OSError:  # no such group in the store
        return []


def _config_names(folder: Traversable, prefix: str = "") -> list[str]:
    if not folder.is_dir():
        return []
    names = []
    for item in folder.iterdir():
        if item.is_dir():
            names += _config_names(item, f"{prefix}{item.name}/")
        elif item.name.endswith(".yaml"):
            names.append(prefix + item.name[: -len(".yaml")])
    return names


def _conf_root(config_dir: str) -> Traversable:
    if config_dir.startswith("pkg://"):
        return importlib.resources.files(config_dir[len("pkg://") :])
    return Path(config_dir)
