"""sdrun's Hydra configs. In a checkout they live in the top-level conf/ folder; pyproject.toml
installs that folder as this package, so `pkg://sdrun.conf` finds them from any directory."""
