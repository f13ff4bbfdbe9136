"""What Hydra composes `sdrun`'s config from besides conf/: the structured schema
(sdrun/config.py), one `distill` option per registered training method (its settings, with
its default schedule: sdrun/methods/registry.py) and the resolvers the config files use.
`register_configs` is the one call before composing (the CLI, scripts, tests)."""

from __future__ import annotations

from omegaconf import OmegaConf

from sdrun.config import register_schema


def register_configs() -> None:
    """Register the schema, every method's `distill` option (importing sdrun.methods registers
    them) and the resolvers, `sdrun_methods` among them (the method list of `--help`)."""
    from sdrun import methods  # imports torch: not at this module's import

    register_schema()
    listed = ", ".join(sorted(methods.method_names()))
    OmegaConf.register_new_resolver("sdrun_methods", lambda: listed, replace=True)
