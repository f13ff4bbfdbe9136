"""Where and how a run executes: the AMP dtype per GPU, and torch's process-wide numerics
switches (deterministic kernels, cuDNN autotuning, TF32), set per run and given back after it.

No GPU is needed: the capability query is patched, and the switches are plain process state
that CPU builds of torch can set too (a `torch.device("cuda")` object touches no GPU).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdrun.config import (
    Config,
    DatasetConfig,
    LoggerConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainerConfig,
)
from sdrun.errors import ConfigError
from sdrun.methods import default_settings
from sdrun.runfolder import runtime
from sdrun.runfolder.runtime import Runtime, resolve_amp
from sdrun.training.runner import run

CUDA = torch.device("cuda")


def fake_gpu(monkeypatch: pytest.MonkeyPatch, bf16_hardware: bool) -> None:
    """torch.cuda.is_bf16_supported as an Ampere-or-later GPU answers it (bf16 hardware), or a
    V100 / T4 (bf16 only emulated: True unless emulation is excluded)."""

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return bf16_hardware or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")  # the scaler on a CPU-only host
@pytest.mark.parametrize("hardware,expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_amp_auto_picks_bf16_only_on_bf16_hardware_and_fp16_with_loss_scaling_elsewhere(
    monkeypatch, hardware, expected
):
    fake_gpu(monkeypatch, hardware)
    dtype = resolve_amp("auto", CUDA)
    assert dtype is expected
    has_scaler = Runtime(CUDA, dtype, channels_last=True).grad_scaler() is not None
    assert has_scaler == (dtype is torch.float16)


def test_amp_bf16_is_refused_on_a_gpu_without_bf16_hardware(monkeypatch):
    fake_gpu(monkeypatch, bf16_hardware=False)
    with pytest.raises(ConfigError, match=r"^trainer\.amp=bf16: .*use trainer\.amp=fp16 or "):
        resolve_amp("bf16", CUDA)
    assert resolve_amp("fp16", CUDA) is torch.float16
    fake_gpu(monkeypatch, bf16_hardware=True)
    assert resolve_amp("bf16", CUDA) is torch.bfloat16


@pytest.mark.parametrize("amp", [None, torch.bfloat16, torch.float16], ids=["off", "bf16", "fp16"])
def test_tf32_is_on_only_under_amp_and_cpu_runs_leave_the_cuda_switches_alone(amp):
    now = runtime.current_flags()
    on = amp is not None
    fast = runtime.run_flags(False, CUDA, amp, now)
    assert fast.tf32 == (on, on)
    assert fast.cudnn_benchmark and not fast.cudnn_deterministic and not fast.deterministic
    exact = runtime.run_flags(True, CUDA, amp, now)
    assert exact.tf32 == (on, on)
    assert exact.deterministic and exact.cudnn_deterministic and not exact.cudnn_benchmark
    cpu = runtime.run_flags(True, torch.device("cpu"), amp, now)
    assert cpu.deterministic and cpu.tf32 == now.tf32
    assert (cpu.cudnn_benchmark, cpu.cudnn_deterministic) == (
        now.cudnn_benchmark,
        now.cudnn_deterministic,
    )


def test_the_run_numerics_are_set_inside_the_block_and_given_back_after_it(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = runtime.current_flags()
    with runtime.configure_numerics(True, CUDA, None):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert "CUBLAS_WORKSPACE_CONFIG" in runtime.os.environ
    assert runtime.current_flags() == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in runtime.os.environ
    with runtime.configure_numerics(False, CUDA, torch.bfloat16):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert runtime.current_flags() == before


def test_the_numerics_are_given_back_when_the_run_fails():
    before = runtime.current_flags()
    failing = pytest.raises(RuntimeError, match="the run failed")
    with failing, runtime.configure_numerics(True, CUDA, torch.float16):
        raise RuntimeError("the run failed")
    assert runtime.current_flags() == before


def test_a_deterministic_run_leaves_the_process_as_it_found_it(tmp_path: Path):
    """What the next job of a Hydra multirun (same process) starts from: not deterministic."""
    assert not torch.are_deterministic_algorithms_enabled()
    cfg = Config(
        dataset=DatasetConfig(name="fake", batch_size=32, eval_batch_size=64, num_classes=10,
                              num_train=64, num_test=32),
        model=ModelConfig(name="resnet20"),
        schedule=ScheduleConfig(epochs=2, cycle_length=1),
        distill=default_settings("sd"),
        optim=OptimConfig(lr=0.05),
        trainer=TrainerConfig(device="cpu", deterministic=True),
        logger=LoggerConfig(name="none"),
    )  # fmt: skip
    summary = run(cfg, tmp_path / "run")
    assert summary["complete"] and summary["teacher/top1"] is not None  # the SD teacher ran
    assert not torch.are_deterministic_algorithms_enabled()
