"""metrics.jsonl bookkeeping and the wandb logger (real wandb, offline, no network)."""

import logging
from pathlib import Path

import pytest
import wandb

from sdrun.config import LoggerConfig
from sdrun.loggers import MetricsFile, NullLogger, WandbLogger, build_logger, read_metrics


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
    # wandb has no reader for its offline files: look for the logged key and values in the bytes
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = run_file.read_bytes()
    assert b"student/top1" in data and b"12.625" in data
    assert b"student/best_top1" in data and b"20.375" in data
    assert b"teacher/top1" not in data  # None values are left out, not logged as null


def test_wandb_failure_at_start_is_one_warning_and_logging_goes_on(tmp_path: Path, caplog):
    bad = LoggerConfig(mode="offline", project="no/slashes/allowed")  # wandb.init raises
    with caplog.at_level(logging.WARNING):
        logger = WandbLogger(bad, tmp_path, {}, name="t")
        logger.log({"student/top1": 1.0}, step=1)
        logger.summary({"x": 1})
        logger.finish()
    assert logger.run is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    ours = [r for r in warnings if r.name == "sdrun.loggers"]
    assert len(ours) == 1 and "wandb" in ours[0].getMessage()


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
    ours = [r for r in caplog.records if r.name == "sdrun.loggers"]
    assert len(ours) == 1 and "wandb disabled" in ours[0].getMessage()
