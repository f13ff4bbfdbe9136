"""sdrun: an experiment runner for Snapshot Distillation (Yang et al., CVPR 2019)."""

__version__ = "0.1.0"
