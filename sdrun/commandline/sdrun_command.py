"""The `sdrun` command as `resume=`, a search's trials and its retrain read it: what its saved
overrides may set (its structured schema, its primary config and the presets it takes with `+`).
A module of its own so that those readers need not import the command-line entry point."""

from __future__ import annotations

from sdrun.commandline.saved_overrides import Command
from sdrun.config import Config

SDRUN = Command("sdrun", Config, "config", presets=("experiment",))
