"""The benchmark runs on CPU and reports every phase (a smoke test, never a timing assertion).
The script runs in this process: its argument handling and JSON output are what is tested."""

import json

import pytest
import torch
from helpers import load_script

bench = load_script("bench")


def run_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    bench.main([*args, "--json"])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_json_on_cpu(capsys):
    result = run_json(capsys, "--device", "cpu", "--model", "resnet20", "--batch-size", "8",
                      "--steps", "2", "--warmup", "1", "--workers", "1",
                      "--num-classes", "10")  # fmt: skip
    for phase in ("reference", "baseline", "sd"):
        entry = result[phase]
        assert entry["img_per_s"] > 0 and entry["ms_per_step"] > 0
        assert entry["peak_mem_mb"] is None or entry["peak_mem_mb"] > 0
    assert result["sd_over_baseline_time"] > 0
    assert result["baseline_over_reference_speed"] > 0
    assert result["device"] == "cpu" and result["model"] == "resnet20"
    assert "methods" not in result  # only with --methods


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_bench_refuses_cuda_without_a_gpu():
    with pytest.raises(SystemExit) as stop:
        bench.main(["--device", "cuda", "--steps", "1"])
    assert "no CUDA GPU" in str(stop.value.code)


def test_bench_with_precomputed_teacher_logits(capsys):
    result = run_json(capsys, "--device", "cpu", "--model", "resnet20", "--batch-size", "8",
                      "--steps", "3", "--warmup", "1", "--num-classes", "10", "--skip-reference",
                      "--teacher-precompute", "16")  # fmt: skip
    assert "reference" not in result and result["teacher_precompute"] == 16
    assert result["sd"]["img_per_s"] > 0 and result["sd_over_baseline_time"] > 0


def test_bench_times_registered_methods_beside_the_baseline(capsys):
    result = run_json(capsys, "--device", "cpu", "--model", "resnet20", "--batch-size", "8",
                      "--steps", "2", "--warmup", "1", "--num-classes", "10", "--skip-reference",
                      "--methods", "ls,pskd")  # fmt: skip
    assert set(result["methods"]) == {"ls", "pskd"}
    for entry in result["methods"].values():
        assert entry["img_per_s"] > 0 and entry["ms_per_step"] > 0
        assert entry["over_baseline_time"] > 0
        assert entry["over_baseline_memory"] is None or entry["over_baseline_memory"] > 0


def test_bench_refuses_an_unknown_method(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--methods", "ls,nope"])
    assert "'nope' is not a registered method" in capsys.readouterr().err
