"""sdrun-transfer end to end from an sdrun run folder: `make reproduce-transfer SMOKE=1` on the
session's finished tiny ResNet-20 SD run (detection and segmentation, real CLI processes), the
run-folder contract, the backbone's weights, the report's transfer table, a SIGTERM and
resume, and the benchmark."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import load_script, read_jsonl
from transfer_helpers import torch_threads, transfer

from sdrun.report import write_report
from sdrun.transfer.backbone import create_features, open_backbone

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "reproduce_transfer.py"


@pytest.fixture(scope="module")
def smoke(sd_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """reproduce_transfer.py --smoke on the SD run: one detection and one segmentation run."""
    out = tmp_path_factory.mktemp("transfer")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--backbones", str(sd_run), "--out", str(out),
         "--jobs", "2"],  # side by side, one thread each
        cwd=out, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


def job(out: Path, task: str) -> Path:
    return out / task / "resnet20" / "sd" / "b0_seed0"


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def student(sd_run: Path) -> dict[str, torch.Tensor]:
    return torch.load(sd_run / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_detection_end_to_end_from_an_sdrun_run(smoke: Path, sd_run: Path):
    run = job(smoke, "detection")
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert config["task"]["name"] == "detection" and config["backbone"] == str(sd_run)
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert r["train/loss"] > 0 and r["throughput/img_per_s"] > 0 and r["time/epoch_s"] > 0
        assert 0 <= r["test/map50"] <= 100 and 0 <= r["test/map50_allpoint"] <= 100
    s = summary(run)
    assert s["complete"] is True and s["test/map50"] == records[-1]["test/map50"]
    assert s["backbone/source"] == str(sd_run / "checkpoints" / "last.pt")
    assert (s["backbone/model"], s["backbone/method"], s["backbone/dataset"]) == (
        "resnet20", "sd", "cifar100"
    )  # fmt: skip
    assert s["data/test_images"] == 4 and s["seed"] == 0
    # the tiny tree has 4 classes: the others have no AP (null), not AP 0
    scored = {k for k, v in s["test/per_class"].items() if v is not None}
    assert 1 <= len(scored) <= 4 and len(s["test/per_class"]) == 20
    final = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert final["epoch"] == 2 and (run / "checkpoints" / "prev.pt").is_file()
    # stem and first stage are frozen (and BN everywhere): still exactly the SD student's
    weights = student(sd_run)
    for name in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer3.0.bn2.bias"):
        assert torch.equal(final["model"][f"backbone.body.{name}"], weights[name]), name
    assert not torch.equal(
        final["model"]["backbone.body.layer2.0.conv1.weight"], weights["layer2.0.conv1.weight"]
    )  # fmt: skip  (fine-tuned)


def test_segmentation_end_to_end_from_an_sdrun_run(smoke: Path, sd_run: Path):
    run = job(smoke, "segmentation")
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 <= r["test/miou"] <= 100 and r["train/loss"] > 0 for r in records)
    s = summary(run)
    assert s["complete"] is True and s["task"] == "segmentation"
    assert s["test/miou"] == records[-1]["test/miou"] and 0 < s["test/pixel_acc"] <= 100
    assert s["backbone/method"] == "sd" and s["data/train"] == "voc2012_train"
    assert s["backbone/frozen"] == "0 level(s), BatchNorm trained"


def test_the_backbone_holds_exactly_the_students_weights(sd_run: Path):
    backbone = open_backbone(str(sd_run))
    weights = student(sd_run)
    for stride in (None, 8):  # the CIFAR nets cannot dilate: the same net either way
        features = create_features(backbone, None, stride)
        mine = features.state_dict()
        assert set(mine) == {k for k in weights if not k.startswith("fc.")}
        assert all(torch.equal(mine[k], weights[k]) for k in mine)
        assert features.feature_info.reduction() == [1, 1, 2, 4]


def test_report_has_the_transfer_table(smoke: Path):
    with open(smoke / "report" / "transfer.csv", newline="") as f:
        rows = {r["task"]: r for r in csv.DictReader(f)}
    for task, metric in (("detection", "test/map50"), ("segmentation", "test/miou")):
        row = rows[task]
        assert (row["model"], row["pretraining"], row["n"]) == ("resnet20", "sd (cifar100)", "1")
        assert float(row["mean"]) == pytest.approx(summary(job(smoke, task))[metric], abs=1e-4)
    assert "## Transfer to PASCAL VOC" in (smoke / "report" / "RESULTS.md").read_text()


def test_report_gains_pair_by_seed(smoke: Path, sd_run: Path, tmp_path: Path):
    """Six copies of the detection run as 3 seeds of SD and 3 of a cosine backbone."""
    sd_map, cosine_map = [30.0, 34.0, 35.0], [29.0, 31.0, 33.0]
    for method, values in (("sd", sd_map), ("cosine", cosine_map)):
        for seed, value in enumerate(values):
            run = tmp_path / "runs" / f"{method}{seed}"
            shutil.copytree(job(smoke, "detection"), run, ignore=shutil.ignore_patterns("*.pt"))
            config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
            (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**config, "seed": seed}))
            s = {**summary(run), "backbone/method": method, "test/map50": value, "seed": seed}
            (run / "summary.json").write_text(json.dumps(s))
    # the backbones' run folder is read to know their recipe (the report reads only what it
    # is given)
    report = write_report([tmp_path / "runs"], tmp_path / "report", context=[sd_run.parent])
    assert len(report.transfer_runs) == 6
    with open(tmp_path / "report" / "transfer_gains.csv", newline="") as f:
        (gain,) = list(csv.DictReader(f))
    # per-seed differences 1, 3, 2: mean 2, std 1, SE 1/sqrt(3), t(0.975, 2) = 4.303
    assert (gain["sd"], gain["other"], gain["pairing"]) == ("sd (cifar100)", "cosine (cifar100)",
                                                           "paired n=3")  # fmt: skip
    assert float(gain["gain"]) == pytest.approx(2.0)
    assert float(gain["gain_se"]) == pytest.approx(3**-0.5, abs=1e-4)
    assert float(gain["gain_ci95_high"]) == pytest.approx(2.0 + 4.3027 / 3**0.5, abs=1e-3)
    assert gain["ci95_includes_0"] == "true"  # [-0.48, 4.48] with 3 seeds
    assert "SD backbone's gain" in (tmp_path / "report" / "RESULTS.md").read_text()


def test_sigterm_mid_epoch_then_resume_ends_like_the_uninterrupted_run(
    smoke: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    reference = job(smoke, "detection")
    overrides = yaml.safe_load((reference / ".hydra" / "overrides.yaml").read_text())
    args = [o for o in overrides if not o.startswith("hydra.run.dir=")]
    run = tmp_path / "run"
    with torch_threads(1):  # as the smoke's runs had: CPU sums then agree bit for bit
        monkeypatch.setenv("SDRUN_FAULT_SIGTERM_STEP", "3")  # a real SIGTERM after step 3 of 4
        code = transfer(monkeypatch, *args, f"hydra.run.dir={run}")
        err = capsys.readouterr().err
        assert code == 143 and f"sdrun-transfer resume={run}" in err and "Traceback" not in err
        stopped = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
        assert stopped["epoch"] == 1 and stopped["epoch_tally"]["batches"] == 1  # mid epoch 2
        monkeypatch.delenv("SDRUN_FAULT_SIGTERM_STEP")
        assert transfer(monkeypatch, f"resume={run}") == 0
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    final = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    expected = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(final[k], v) for k, v in expected.items())
    assert summary(run)["test/map50"] == summary(reference)["test/map50"]
    # sdrun's cost accounting, through the same run-folder code: a heartbeat, process-seconds
    # over both sessions, and the stop lost no work (it saved the partial epoch)
    assert (run / "checkpoints" / "heartbeat.json").is_file()
    cost = summary(run)
    assert cost["time/process_s"] >= cost["time/train_s"] > 0
    assert (cost["time/lost_wall_s"], cost["time/lost_process_s"]) == (0.0, 0.0)


def test_transfer_benchmark_measures_both_tasks_on_cpu():
    bench = load_script("bench_transfer")
    with torch_threads(1):
        result = bench.main(["--device", "cpu", "--backbone", "scratch:resnet20", "--image-size",
                             "32", "--batch-size", "2", "--steps", "1", "--fpn-channels", "16",
                             "--rois-per-image", "32", "--json"])  # fmt: skip
    for task in ("detection", "segmentation"):
        assert result[task]["img_per_s"] > 0 and result[task]["ms_per_step"] > 0
    assert result["device"] == "cpu"


def load_reproduce_transfer():
    return load_script("reproduce_transfer")


def test_reproduce_transfer_plans_every_backbone_of_a_tree(sd_run: Path, tmp_path: Path, capsys):
    script = load_reproduce_transfer()
    out = tmp_path / "out"
    args = ["--from", str(sd_run.parent), "--out", str(out), "--dry-run"]
    assert script.main([*args, "--backbones", "timm:resnet18", "--seeds", "0,1"]) == 0
    planned = [line for line in capsys.readouterr().out.splitlines() if ": new -> " in line]
    folders = sorted(line.split(" -> ")[1] for line in planned)
    expected = [out / task / model / method / f"{tag}_seed{seed}"
                for task in ("detection", "segmentation") for seed in (0, 1)
                for model, method, tag in (("resnet18", "timm", "pretrained"),
                                           ("resnet20", "sd", "b0"))]  # fmt: skip
    assert folders == sorted(map(str, expected))
    assert script.main([*args, "--tasks", "classification"]) == 2
    assert "pick from detection, segmentation" in capsys.readouterr().err
    # cycle checkpoints are labelled by cycle and teacher: each has its own folder
    cycles = [str(sd_run / "checkpoints" / f"cycle{k}.pt") for k in (1, 2)]
    assert script.main(["--out", str(out), "--dry-run", "--backbones", ",".join(cycles)]) == 0
    planned = capsys.readouterr().out
    assert "/cyclic@cycle1/b0_seed0" in planned and "/sd@cycle2/b0_seed0" in planned
    # two names of one backbone (same model, method and seed) would share a folder
    same = [str(sd_run), str(sd_run / "checkpoints" / "last.pt")]
    assert script.main(["--out", str(out), "--dry-run", "--backbones", ",".join(same)]) == 2
    assert "would both fine-tune into" in capsys.readouterr().err
