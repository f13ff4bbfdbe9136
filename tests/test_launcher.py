"""Cluster sweeps: our launcher configs compose onto the submitit plugin's, a sweep run through
submitit's local executor (the SLURM launcher's code path, without SLURM) completes, and a
SLURM sweep's job stopped by SLURM's notice is requeued and continues its run (against the
fake SLURM of tests/fake_slurm.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import fake_slurm
import pytest
import yaml
from helpers import read_jsonl, sdrun_here

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


def test_a_slurm_sweep_job_stopped_by_the_notice_is_requeued_and_continues_its_run(
    cifar100_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The job gets SIGUSR2 after its third step (in epoch 2); sdrun writes a checkpoint,
    submitit requeues the job, and the requeued job - the same command, without resume= -
    continues from that checkpoint instead of being refused."""
    for name in [n for n in os.environ if n.startswith(("SLURM_", "SUBMITIT_"))]:
        monkeypatch.delenv(name)
    for name, value in fake_slurm.install(tmp_path / "bin", tmp_path / "state").items():
        monkeypatch.setenv(name, value)
    sweep = tmp_path.resolve() / "sweep"
    monkeypatch.setenv("SDRUN_FAULT_HOLD", f"{sweep}/*@3")
    monkeypatch.setenv("FAKE_SLURM_NOTICE", "holding after step")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job beside this process on a small machine
    try:
        proc = sdrun_here(
            "-m", "hydra/launcher=slurm", "+experiment=cifar100/resnet20_cosine",
            f"dataset.root={cifar100_root}", "dataset.download=false", "dataset.limit_train=64",
            "dataset.limit_test=32", "dataset.batch_size=32", "dataset.eval_batch_size=32",
            "schedule.epochs=2", "logger=none", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
        )  # fmt: skip
    finally:
        fake_slurm.cleanup()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (job,) = [p for p in sweep.iterdir() if (p / "summary.json").is_file()]
    (record,) = json.loads((tmp_path / "state" / "jobs.json").read_text()).values()
    assert record["restarts"] == 1  # one job, requeued once
    assert "resumed after epoch 1, step 3" in (job / "sdrun.log").read_text()
    assert [r["epoch"] for r in read_jsonl(job / "metrics.jsonl")] == [1, 2]
    assert json.loads((job / "summary.json").read_text())["complete"] is True
