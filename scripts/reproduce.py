"""`make reproduce`: a CIFAR-100 table (networks x methods x seeds), then the report.

The work is sdrun.reproduce's (`python scripts/reproduce.py --help`: the tables, where the runs
go, the options); this file is its command line, and keeps the names other scripts and the
tests import from it.

    python scripts/reproduce.py --models resnet56 --seeds 1
    python scripts/reproduce.py --smoke --out /tmp/smoke
    python scripts/reproduce.py --launcher slurm --slurm "partition=gpu timeout_min=1440"
"""

from __future__ import annotations

import sys

from sdrun.reproduce.cli import main, parse_gpus, parse_names, parse_seeds, parse_table
from sdrun.reproduce.here import run_one
from sdrun.reproduce.plan import (
    CYCLIC,
    DATASET,
    DEFAULT_TABLE,
    METHODS,
    MODELS,
    SELFKD,
    SMOKE_DATA,
    SMOKE_EPOCHS,
    TABLES,
    Job,
    command,
    generation_seed,
    plan,
    smoke_overrides,
    state,
    wandb_group,
    write_smoke_data,
)

__all__ = [
    "CYCLIC", "DATASET", "DEFAULT_TABLE", "METHODS", "MODELS", "SELFKD", "SMOKE_DATA",
    "SMOKE_EPOCHS", "TABLES", "Job", "command", "generation_seed", "main", "parse_gpus",
    "parse_names", "parse_seeds", "parse_table", "plan", "run_one", "smoke_overrides", "state",
    "wandb_group", "write_smoke_data",
]  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
