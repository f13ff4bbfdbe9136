"""metrics.jsonl bookkeeping and the wandb logger (real wandb, offline, no network)."""

import json
import logging
from pathlib import Path

import pytest
import wandb
from helpers import load_script
from wandb_records import by_type, history_rows

from sdrun.config import Config, LoggerConfig
from sdrun.methods import default_settings
from sdrun.runfolder.loggers import MetricsFile, NullLogger, WandbLogger, build_logger, read_metrics
from sdrun.runfolder.run_names import SweepInfo, method_of, run_identity


def test_truncate_after_keeps_each_epoch_once_and_drops_a_cut_line(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    metrics = MetricsFile(path)
    for epoch in (1, 2, 3):
        metrics.append({"epoch": epoch, "student/top1": float(epoch)})
    with open(path, "a") as f:
        f.write('{"epoch": 4, "stud')  # a kill in the middle of a write
    metrics.truncate_after(2)
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2]
    metrics.append({"epoch": 3, "student/top1": float("nan")})
    assert read_metrics(path)[-1] == {"epoch": 3, "student/top1": None}


def test_wandb_offline_gets_the_metrics_and_config(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(LoggerConfig(mode="offline"), tmp_path, {"seed": 3}, name="t")
    assert logger.run is not None
    logger.log({"student/top1": 12.625, "teacher/top1": None}, step=1)
    logger.summary({"student/best_top1": 20.375, "device": "cpu"})
    assert logger.run.config["seed"] == 3
    logger.finish()
    wandb.teardown()  # waits for wandb's service process to write out and exit
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    (row,) = [r for r in history_rows(run_file) if "student/top1" in r]
    assert (row["student/top1"], row["epoch"]) == ("12.625", "1")
    assert "teacher/top1" not in row  # None values are left out, not logged as null
    summaries = [i for s in by_type(run_file, "summary") for i in s.update]
    assert any(i.key == "student/best_top1" and i.value_json == "20.375" for i in summaries)


def test_wandb_failure_at_start_is_one_warning_and_logging_goes_on(tmp_path: Path, caplog):
    bad = LoggerConfig(mode="offline", project="no/slashes/allowed")  # wandb.init raises
    with caplog.at_level(logging.WARNING):
        logger = WandbLogger(bad, tmp_path, {}, name="t")
        logger.log({"student/top1": 1.0}, step=1)
        logger.summary({"x": 1})
        logger.finish()
    assert logger.run is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    ours = [r for r in warnings if r.name == "sdrun.runfolder.loggers"]
    assert len(ours) == 1 and "wandb" in ours[0].getMessage()


def test_a_run_that_failed_mid_way_does_not_leak_into_the_next_logger(tmp_path: Path, caplog):
    # In a Hydra multirun the jobs share one process: a wandb run left open by a failing job
    # would be handed back by the next job's wandb.init and get its metrics.
    first = WandbLogger(LoggerConfig(mode="offline"), tmp_path / "a", {}, name="a")
    first_id = first.run.id

    def broken(*args, **kwargs):
        raise RuntimeError("network down")

    first.run.log = broken
    with caplog.at_level(logging.WARNING):
        first.log({"student/top1": 1.0}, step=1)  # disabled with one warning
    assert first.run is None
    second = WandbLogger(LoggerConfig(mode="offline"), tmp_path / "b", {}, name="b")
    assert second.run is not None and second.run.id != first_id
    second.log({"student/top1": 2.0}, step=1)
    second.finish()
    wandb.teardown()
    (path,) = (tmp_path / "b" / "wandb").glob("offline-run-*/run-*.wandb")
    assert [float(r["student/top1"]) for r in history_rows(path) if "student/top1" in r] == [2.0]


@pytest.mark.parametrize("name,mode", [("none", "offline"), ("wandb", "disabled")])
def test_logger_off(tmp_path: Path, name: str, mode: str):
    assert isinstance(
        build_logger(LoggerConfig(name=name, mode=mode), tmp_path, {}, "t"), NullLogger
    )


def test_wandb_failing_mid_run_is_one_warning_and_logging_goes_on(tmp_path: Path, caplog):
    logger = WandbLogger(LoggerConfig(mode="offline"), tmp_path, {}, name="t")
    logger.log({"student/top1": 1.0}, step=1)
    logger.run.finish()  # wandb's run is gone under us: the next log call raises inside wandb
    with caplog.at_level(logging.WARNING):
        logger.log({"student/top1": 2.0}, step=2)
        logger.log({"student/top1": 3.0}, step=3)
        logger.finish()
    assert logger.run is None
    ours = [r for r in caplog.records if r.name == "sdrun.runfolder.loggers"]
    assert len(ours) == 1 and "wandb disabled" in ours[0].getMessage()


# ----------------------------------------------------------------------------- a real run
# `val_run` (conftest.py): the complete trial of a tiny Optuna search, 2 cycles of 1 epoch,
# wandb offline, log_every=1, cycle checkpoints as artifacts. Its .wandb file is read back with
# wandb's own protobufs.


def run_file(run_dir: Path) -> Path:
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    return path


def test_wandb_run_is_named_grouped_typed_and_tagged_from_the_config(val_run: Path, search):
    (run,) = by_type(run_file(val_run), "run")
    name = run.display_name  # what ran (model, method, the searched values, seed), not when
    assert name.startswith("resnet20 sd temperature=") and name.endswith(" cycles=2 lr=0.05 seed0")
    assert (run.run_group, run.job_type) == (str(search), "sd")  # the sweep directory
    assert {"cifar100", "resnet20", "sd"} <= set(run.tags)
    (exit_record,) = by_type(run_file(val_run), "exit")
    assert exit_record.exit_code == 0


def test_logger_keys_set_group_job_type_and_name_instead():
    cfg = Config(distill=default_settings("sd"))
    assert run_identity(cfg).group is None  # a single run outside any sweep
    sweep_info = SweepInfo("outputs/multirun/x", ["distill.temperature", "seed", "dataset"])
    auto = run_identity(cfg, sweep_info)
    assert auto.name == "resnet56 sd temperature=2 dataset=cifar100 seed0"
    assert (auto.group, auto.job_type) == ("outputs/multirun/x", "sd")
    cfg.logger = LoggerConfig(group="g", job_type="ablation", run_name="mine", tags=["x"])
    chosen = run_identity(cfg, sweep_info)
    assert (chosen.name, chosen.group, chosen.job_type) == ("mine", "g", "ablation")
    assert chosen.tags == ["x", "cifar100", "resnet56", "sd"]
    cfg.distill = default_settings("none")
    assert run_identity(cfg).job_type == "ablation" and method_of("none", "sd") == "cyclic"


def test_wandb_has_lr_and_loss_every_log_every_steps_on_a_step_axis(val_run: Path):
    path = run_file(val_run)
    axes = {m.name: m.step_metric for m in by_type(path, "metric") if m.name}
    assert axes["train/lr"] == axes["train/loss"] == "train/step"
    assert axes["student/top1"] == axes["val/top1"] == axes["lr"] == "epoch"
    rows = history_rows(path)
    steps = [r for r in rows if "train/step" in r]
    assert [int(r["train/step"]) for r in steps] == [1, 2, 3, 4]  # 2 epochs of 2 steps
    # SD's restart: each 1-epoch cycle starts at the peak LR and ends at lr_min
    lrs = [float(r["train/lr"]) for r in steps]
    assert lrs == pytest.approx([0.05, 0.001, 0.05, 0.001])
    assert all(float(r["train/loss"]) > 0 for r in steps)
    epochs = [r for r in rows if "student/top1" in r]
    assert [int(r["epoch"]) for r in epochs] == [1, 2]
    assert all("train/step" not in r and "train/epoch_loss" in r for r in epochs)
    metrics = read_metrics(val_run / "metrics.jsonl")
    assert [float(r["val/top1"]) for r in epochs] == [m["val/top1"] for m in metrics]


def test_wandb_gets_the_final_plots_and_the_cycle_checkpoints(val_run: Path):
    path = run_file(val_run)
    (plot,) = [r for r in history_rows(path) if "plots/curves/_type" in r]
    assert json.loads(plot["plots/curves/_type"]) == "image-file" and plot["epoch"] == "2"
    assert (val_run / "curves.png").is_file()
    artifacts = by_type(path, "artifact")
    assert [a.type for a in artifacts] == ["model", "model"]
    for cycle, artifact in enumerate(artifacts, start=1):
        assert f"cycle{cycle}" in artifact.aliases
        (entry,) = artifact.manifest.contents
        assert Path(entry.local_path) == val_run / "checkpoints" / f"cycle{cycle}.pt"


def test_reproduce_puts_a_table_in_one_wandb_group(tmp_path: Path):
    reproduce = load_script("reproduce")
    jobs = reproduce.plan(["resnet20"], ["sd", "born-again"], [0, 1], 2, tmp_path / "table")
    groups = {
        next(a for a in reproduce.command(job, "new", []) if a.startswith("logger.group="))
        for job in jobs
    }
    assert groups == {"logger.group=table/cifar100"}


def test_steps_are_logged_every_log_every_global_steps_when_epochs_are_shorter():
    """2 steps per epoch, log_every=3: the LR and loss of steps 3 and 6 (counted over the
    run), not nothing because no epoch reaches its own third step."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from sdrun.runfolder.runtime import Runtime
    from sdrun.training.batch_step import LossStep
    from sdrun.training.engine import LoopOptions, StepState, train_one_epoch
    from sdrun.training.schedule import CyclePlan

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    state = StepState(torch.optim.SGD(model.parameters(), lr=0.1), None, 0)
    plan = CyclePlan(kind="cosine", epochs=3, cycle_length=3, steps_per_epoch=2, peak=0.1)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
    logged: list[tuple[int, dict]] = []
    options = LoopOptions(log_every=3, check_every=3, on_log=lambda s, v: logged.append((s, v)))
    runtime = Runtime(torch.device("cpu"), None, False)
    step = LossStep(model, lambda m, b: (F.cross_entropy(m(b[0]), b[1]), b[0].shape[0]))
    for _ in range(3):
        train_one_epoch(model, step, batches, 2, state, plan, runtime, options=options)
    assert [step for step, _ in logged] == [3, 6]
    assert all({"train/lr", "train/loss"} <= set(values) for _, values in logged)


def test_a_resumed_search_job_keeps_its_wandb_identity_and_resends_a_killed_sessions_epochs(
    val_run: Path, tmp_path: Path
):
    """The search's trial resumed on its own (no sweep around it): its wandb name keeps the
    swept values, its group the search. Its record then says no clean end (what a kill
    leaves): the resumed session logs epochs 1-2 of metrics.jsonl again."""
    import shutil

    from helpers import sdrun_here, wandb_env

    from sdrun.runfolder import wandb_record

    run_dir = tmp_path / "trial"
    shutil.copytree(val_run, run_dir)
    kept = wandb_record.read(run_dir)
    assert kept is not None and kept.synced_epoch == 2  # the trial ended cleanly
    assert "lr=0.05" in kept.identity.name and kept.identity.group == str(val_run.parent)
    wandb_record.write(run_dir, wandb_record.WandbRecord(kept.identity, synced_epoch=0))
    before = set((run_dir / "wandb").glob("offline-run-*"))
    proc = sdrun_here(f"resume={run_dir}", cwd=tmp_path, env=wandb_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (session,) = set((run_dir / "wandb").glob("offline-run-*")) - before
    (path,) = session.glob("run-*.wandb")
    (run,) = by_type(path, "run")
    assert run.display_name == kept.identity.name and run.run_group == kept.identity.group
    assert run.job_type == kept.identity.job_type
    epochs = [int(r["epoch"]) for r in history_rows(path) if "val/top1" in r]
    assert epochs == [1, 2]  # the unsent epochs, from metrics.jsonl
    assert wandb_record.read(run_dir).synced_epoch == 2  # this session ended cleanly


def test_a_received_trial_does_not_continue_the_senders_wandb_run(
    val_run: Path, tmp_path: Path, cifar100_root: Path
):
    """The same trial as above, from someone else (its signature does not verify): the resumed
    session logs to a new wandb run of this user's destination, not the sender's run."""
    import shutil

    from helpers import sdrun_here, wandb_env

    run_dir = tmp_path / "trial"
    shutil.copytree(val_run, run_dir)
    (run_dir / ".sdrun-signature").unlink()  # received
    old = {p.name.rsplit("-", 1)[1] for p in (run_dir / "wandb").glob("offline-run-*")}
    proc = sdrun_here(f"resume={run_dir}", f"dataset.root={cifar100_root}", cwd=tmp_path,
                      env=wandb_env(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "treated as received" in proc.stderr
    new = {p.name.rsplit("-", 1)[1] for p in (run_dir / "wandb").glob("offline-run-*")} - old
    assert len(new) == 1 and not new & old  # a run of its own, not the sender's id
    from sdrun.trust import signing

    # the session ended cleanly: .hydra/ keeps what this user ran, signed as theirs
    assert signing.is_own(run_dir)
