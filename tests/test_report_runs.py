"""What the runner records for the report, on tiny real runs trained in this process: how a run
ran (AMP, SyncBN, processes), its cost per session and the work lost to a kill, and a
diverged run's summary (issue 15 items 4, 8, 9)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_config, train

from sdrun.errors import TrainingDiverged
from sdrun.report import build_report, row_record
from sdrun.runfolder import run_state
from sdrun.runfolder.checkpoint import LAST, PREV


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def finished(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(cifar100_root), run_dir)
    return run_dir


def test_summary_records_how_the_run_ran_and_its_cost(finished: Path):
    data = summary(finished)
    assert (data["device_type"], data["processes"], data["amp"], data["sync_bn"]) == (
        "cpu", 1, "off", False)  # fmt: skip
    assert data["diverged"] is False
    assert data["time/process_s"] == pytest.approx(data["time/wall_s"])  # one process
    assert (data["time/lost_wall_s"], data["time/lost_process_s"]) == (0.0, 0.0)
    beat = json.loads((finished / "checkpoints" / run_state.HEARTBEAT).read_text())
    assert beat["processes"] == 1 and beat["started"] <= beat["alive"] <= time.time()


def test_a_resume_counts_the_work_the_kill_threw_away(finished: Path, cifar100_root, tmp_path):
    """A kill 100 s after the epoch-1 checkpoint of a 2-process session: the resumed run
    counts 100 s (200 process-s) of lost work, from the heartbeat the kill left behind."""
    run_dir = Path(shutil.copytree(finished, tmp_path / "run"))
    checkpoints = run_dir / "checkpoints"
    shutil.copy(checkpoints / PREV, checkpoints / LAST)  # as if killed during epoch 2
    (run_dir / "summary.json").unlink()
    saved = torch.load(checkpoints / LAST, weights_only=False)["progress"]
    assert saved["saved_at"] is not None and saved["process_seconds"] > 0
    beat = {"started": saved["saved_at"] - 30, "alive": saved["saved_at"] + 100, "processes": 2}
    (checkpoints / run_state.HEARTBEAT).write_text(json.dumps(beat))
    train(tiny_config(cifar100_root, resume=str(run_dir)), run_dir)
    data = summary(run_dir)
    assert data["complete"] is True
    assert data["time/lost_wall_s"] == pytest.approx(100.0, abs=1e-6)
    assert data["time/lost_process_s"] == pytest.approx(200.0, abs=1e-6)
    assert data["time/process_s"] > saved["process_seconds"]  # epoch 2 was counted
    row = row_record(build_report([run_dir], tmp_path / "report").rows[0])
    assert row["process_h_lost_mean"] == pytest.approx(200.0 / 3600)
    assert row["process_h_mean"] == pytest.approx(data["time/process_s"] / 3600)


def test_lost_work_arithmetic():
    beat = {"started": 1000.0, "alive": 1500.0, "processes": 4,
            "carried_wall": 10.0, "carried_process": 40.0}  # fmt: skip
    # the session saved at 1200 and was last seen at 1500: 300 s lost, plus what it carried
    assert run_state.lost_work(beat, 1200.0) == (310.0, 1240.0)
    # its checkpoint is older than the session: the whole session was lost
    assert run_state.lost_work(beat, 900.0) == (510.0, 2040.0)
    assert run_state.lost_work(None, 900.0) == (0.0, 0.0)


def test_the_heartbeat_is_written_every_period_and_never_stops_training(tmp_path: Path):
    session = run_state.Session(tmp_path / "hb" / "heartbeat.json", 2, time.time(), period=3600)
    session.beat(force=True)
    first = json.loads(session.path.read_text())
    calls = []
    watched = session.watch(lambda: calls.append(1) or False)
    assert watched() is False and calls == [1]
    assert json.loads(session.path.read_text()) == first  # within the period: no write
    session.period, session._next_beat = 0.0, 0.0
    watched()
    assert json.loads(session.path.read_text())["alive"] >= first["alive"]
    blocked = run_state.Session(tmp_path / "file" / "hb.json", 1, time.time())
    (tmp_path / "file").write_text("a file where the folder should be")
    blocked.beat(force=True)  # no exception: bookkeeping never stops a run


def test_a_diverged_run_writes_its_summary_and_is_counted(
    finished: Path, cifar100_root: Path, tmp_path: Path, monkeypatch
):
    """The real fault injection: global step 1 (0-based: epoch 2 of 1 step) gives a NaN."""
    monkeypatch.setenv("SDRUN_FAULT_NAN_STEP", "1")
    run_dir = tmp_path / "runs" / "nan"
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        train(tiny_config(cifar100_root, seed=1), run_dir)
    data = summary(run_dir)
    assert (data["complete"], data["diverged"], data["diverged_epoch"]) == (False, True, 2)
    assert data["diverged_step"] == 2 and data["student/top1"] is not None  # epoch 1's
    assert data["time/process_s"] == pytest.approx(data["time/wall_s"])  # epoch 1
    assert data["time/lost_wall_s"] > 0  # the diverging epoch's work
    shutil.copytree(finished, tmp_path / "runs" / "ok", ignore=shutil.ignore_patterns("*.pt"))
    report = build_report([tmp_path / "runs"], tmp_path / "report")
    (row,) = report.rows
    assert (row.n, len(row.diverged), report.incomplete) == (1, 1, [])
