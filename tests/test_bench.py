"""The benchmark runs on CPU and reports every phase (a smoke test, never a timing assertion)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def test_bench_json_on_cpu():
    args = ["--device", "cpu", "--model", "resnet20", "--batch-size", "8", "--steps", "2",
            "--warmup", "1", "--workers", "1", "--num-classes", "10", "--json"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for phase in ("reference", "baseline", "sd"):
        entry = result[phase]
        assert entry["img_per_s"] > 0 and entry["ms_per_step"] > 0
        assert entry["peak_mem_mb"] is None or entry["peak_mem_mb"] > 0
    assert result["sd_over_baseline_time"] > 0
    assert result["baseline_over_reference_speed"] > 0
    assert result["device"] == "cpu" and result["model"] == "resnet20"


def test_bench_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda", "--steps", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "no CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_with_precomputed_teacher_logits():
    args = ["--device", "cpu", "--model", "resnet20", "--batch-size", "8", "--steps", "3",
            "--warmup", "1", "--num-classes", "10", "--skip-reference", "--teacher-precompute",
            "16", "--json"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "reference" not in result and result["teacher_precompute"] == 16
    assert result["sd"]["img_per_s"] > 0 and result["sd_over_baseline_time"] > 0
