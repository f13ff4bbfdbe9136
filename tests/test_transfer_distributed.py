"""sdrun-transfer under torchrun, 2 CPU processes (gloo): one run directory, and a test split
that does not divide by the processes scored exactly as one process scores it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import read_jsonl
from omegaconf import OmegaConf
from transfer_helpers import TINY, torch_threads

from sdrun.runfolder.distributed import Dist
from sdrun.runfolder.runtime import resolve_runtime
from sdrun.transfer.config import TransferConfig
from sdrun.transfer.parts import build


def test_detection_under_torchrun_scores_every_test_image_once(voc_root: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = [*TINY, "backbone=scratch:resnet20", f"dataset.root={voc_root}", "dataset.limit_test=5",
            "trainer.device=cpu", "schedule.epochs=1", f"hydra.run.dir={run}"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sdrun.transfer", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["data/test_images"] == 5  # 3 + 2 images
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1]
    # the same weights scored by one process: the gathered detections gave the same mAP
    config = OmegaConf.merge(
        OmegaConf.structured(TransferConfig),
        yaml.safe_load((run / ".hydra" / "config.yaml").read_text()),
    )
    cfg: TransferConfig = OmegaConf.to_object(config)  # fmt: skip
    runtime = resolve_runtime(cfg.trainer)
    with torch_threads(1):
        parts = build(cfg, runtime, Dist())
        weights = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
        parts.model.load_state_dict(weights)
        scores = parts.task.evaluate(parts.model, parts.test_loader.epoch(0), runtime)
    assert scores["test/images"] == 5
    assert scores["test/map50"] == pytest.approx(summary["test/map50"], abs=1e-6)
