"""What the `distill` group of sdrun's config is: the base of every training method's settings.

Each method declares a subclass with its own keys (sdrun/methods/), registered as the group's
option `distill=<name>`; `sdrun.config.Config` types the group with this base, so composing an
option gives the method's own typed node. Kept apart from the methods package, which imports
the config: the config imports no method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

from sdrun.errors import ConfigError

if TYPE_CHECKING:
    from sdrun.config import Config


@dataclass
class MethodSettings:
    """The `distill` group: the training method `name` and its settings. Each method declares
    its own subclass (its keys, with its sources' defaults), registered as the group's option
    `distill=<name>` (sdrun/methods/registry.py), so a key the chosen method lacks is refused
    at composition; this base holds the name alone."""

    name: str = MISSING

    def check(self, cfg: Config) -> None:
        """Raise ConfigError for a value or combination the method cannot run (one line, with
        the fix). A method's settings extend it (`super().check(cfg)` first)."""
        declared = declared_name(type(self))
        if declared == MISSING:
            raise ConfigError(
                "distill holds no training method's settings; choose one with distill=<name> "
                "(sdrun --help lists them)"
            )
        if self.name != declared:
            raise ConfigError(
                f"distill.name={self.name!r} but distill holds {declared}'s settings; choose the "
                f"method with distill={self.name} (it brings its own settings), not distill.name"
            )


def declared_name(settings: type) -> Any:
    """The method name a settings class declares (the default of its `name` field)."""
    (name,) = [f for f in dataclasses.fields(settings) if f.name == "name"]
    return name.default
