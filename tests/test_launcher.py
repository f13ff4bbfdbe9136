"""Cluster sweeps: our launcher configs compose onto the submitit plugin's, and a sweep run
through submitit's local executor (the SLURM launcher's code path, without SLURM) completes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import sdrun_here

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

# Two jobs of about a second of training each: the time goes to starting Python and torch.
TINY_FAKE = [
    "dataset=fake", "dataset.num_train=64", "dataset.num_test=32", "dataset.num_classes=10",
    "dataset.image_size=16", "dataset.batch_size=32", "dataset.eval_batch_size=32",
    "model=resnet20", "schedule.epochs=2", "schedule.cycle_length=1", "logger=none",
]  # fmt: skip


def launcher_config(name: str, *overrides: str, cwd: Path) -> dict:
    proc = sdrun_here(
        f"hydra/launcher={name}", *overrides, "--cfg", "hydra", "-p", "hydra.launcher", cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return yaml.safe_load(proc.stdout)


def test_slurm_config_extends_the_plugin_and_takes_overrides(tmp_path: Path):
    cfg = launcher_config(
        "slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.setup=[module load cuda]", cwd=tmp_path,
    )  # fmt: skip
    assert cfg["_target_"].endswith("SlurmLauncher")
    assert cfg["partition"] == "gpu" and cfg["gpus_per_node"] == 4
    assert cfg["setup"] == ["module load cuda"]
    assert {"timeout_min", "cpus_per_task", "mem_gb", "tasks_per_node", "qos"} <= set(cfg)


def test_local_sweep_runs_each_job_to_a_summary(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = sdrun_here(  # the driver here; submitit starts each job in a process of its own
        "-m", "hydra/launcher=local", "distill.temperature=1,2", *TINY_FAKE,
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if (p / "summary.json").is_file())
    assert len(jobs) == 2, sorted(p.name for p in sweep.iterdir())
    temperatures = set()
    for job in jobs:
        assert json.loads((job / "summary.json").read_text())["complete"] is True
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        temperatures.add(config["distill"]["temperature"])
    assert temperatures == {1.0, 2.0}
    assert (sweep / ".submitit").is_dir()  # the jobs really went through submitit
