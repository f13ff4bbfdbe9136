"""The device paths: every test runs on the CPU and, where a CUDA GPU is visible, on it too.

CI has no GPU, so there these check the CPU side of each path (and the test code itself); on a
GPU machine (`scripts/gpu_session.sh`) the same assertions cover CUDA, bf16/fp16 autocast, the
fp16 loss scaler and the compiled (CUDA-graphed) teacher.
"""

from __future__ import annotations

import itertools
from typing import Optional

import pytest
import torch

from sdrun.config import DatasetConfig, OptimConfig
from sdrun.data import build_loaders
from sdrun.methods import MethodStep, build_method, default_settings
from sdrun.models import build_model
from sdrun.runfolder.runtime import Runtime
from sdrun.training.engine import EpochResult, LoopOptions, StepState, train_one_epoch
from sdrun.training.frozen_teacher import FrozenTeacher, PrecomputedTeacher, snapshot, teacher_dtype
from sdrun.training.optim import build_optimizer
from sdrun.training.schedule import CyclePlan

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
# (device, amp dtype): fp16 needs CUDA (the loss scaler); bf16 autocast runs on both.
AMP = [("cpu", None), ("cpu", torch.bfloat16)]
if CUDA:
    AMP += [("cuda", None), ("cuda", torch.bfloat16), ("cuda", torch.float16)]
STEPS, BATCH, CLASSES = 6, 32, 10


def fake_batches(device: torch.device, channels_last: bool = True):
    cfg = DatasetConfig(name="fake", batch_size=BATCH, num_classes=CLASSES,
                        num_train=BATCH * STEPS, num_test=BATCH)  # fmt: skip
    return build_loaders(cfg, seed=0, device=device, channels_last=channels_last).train


def train(
    runtime: Runtime, teacher: Optional[FrozenTeacher] = None, nan_at_step: Optional[int] = None
) -> tuple[EpochResult, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("resnet20", CLASSES).to(runtime.device, memory_format=runtime.memory_format)
    state = StepState(build_optimizer(model, OptimConfig(lr=0.05), runtime.device),
                      runtime.grad_scaler(), step=0)  # fmt: skip
    plan = CyclePlan("sd", 1, 1, STEPS, peak=0.05)
    options = LoopOptions(log_every=2, check_every=2, nan_at_step=nan_at_step)
    loader = fake_batches(runtime.device)
    step = MethodStep(build_method(default_settings("sd")), model, teacher)
    result = train_one_epoch(model, step, loader.epoch(0), len(loader), state, plan, runtime,
                             None, options)  # fmt: skip
    return result, model


@pytest.mark.parametrize("device,amp", AMP, ids=[f"{d}-{a}" for d, a in AMP])
def test_training_step_runs_under_each_precision(device, amp):
    runtime = Runtime(torch.device(device), amp, channels_last=True)
    result, model = train(runtime)
    assert result.images == STEPS * BATCH and result.terms["kd"] is None
    assert torch.isfinite(torch.tensor(result.loss))
    assert 0.0 <= 100.0 * result.counts["correct"] / result.images <= 100.0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # AMP keeps fp32 masters
    if amp is torch.float16:  # the scaler may skip the first steps while it finds its scale
        assert result.skipped_steps < STEPS
    else:
        assert result.skipped_steps == 0


@pytest.mark.parametrize("device,amp", AMP, ids=[f"{d}-{a}" for d, a in AMP])
def test_snapshot_teacher_under_each_precision_gives_fp32_logits_and_a_kd_term(device, amp):
    runtime = Runtime(torch.device(device), amp, channels_last=True)
    torch.manual_seed(1)
    source = build_model("resnet20", CLASSES).to(runtime.device, memory_format=torch.channels_last)
    teacher = FrozenTeacher(source, teacher_dtype(amp), torch.channels_last)
    result, _ = train(runtime, teacher)
    assert result.terms["kd"] is not None and result.terms["kd"] > 0
    assert torch.isfinite(torch.tensor(result.loss))


@pytest.mark.parametrize("device", DEVICES)
def test_the_epoch_clock_waits_for_the_device_once_per_epoch(device, monkeypatch):
    """img/s must count the device's work, not just its queueing: one synchronize per epoch,
    before the clock is read, none per step."""
    calls = []
    real = Runtime.synchronize

    def counted(self: Runtime) -> None:
        calls.append(self.device.type)
        real(self)

    monkeypatch.setattr(Runtime, "synchronize", counted)
    result, _ = train(Runtime(torch.device(device), None, channels_last=True))
    assert result.images == STEPS * BATCH
    assert calls == [device]


@pytest.mark.skipif(not CUDA, reason="fp16 loss scaling needs a CUDA GPU")
def test_fp16_overflow_step_is_skipped_and_counted_not_fatal():
    runtime = Runtime(torch.device("cuda"), torch.float16, channels_last=True)
    result, model = train(runtime, nan_at_step=2)  # the scaler sees inf/NaN gradients there
    assert result.skipped_steps >= 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_prepared_bf16_and_fp16_teachers_are_close_to_the_fp32_snapshot(device):
    torch.manual_seed(0)
    student = build_model("resnet20", CLASSES).to(device)
    student.train()
    with torch.no_grad():  # BN statistics away from their initial values
        for _ in range(3):
            student(torch.randn(16, 3, 32, 32, device=device) * 2 + 0.5)
    x = torch.randn(64, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = snapshot(student)(x)
    fp32 = FrozenTeacher(student, torch.float32, torch.channels_last)(x)
    bf16 = FrozenTeacher(student, torch.bfloat16, torch.channels_last)(x)
    fp16_teacher = FrozenTeacher(student, torch.float16, torch.channels_last)
    fp16 = fp16_teacher(x)
    assert fp32.dtype == bf16.dtype == fp16.dtype == torch.float32
    # TF32 convolutions on a GPU round more than the CPU's fp32.
    assert (fp32 - expected).abs().max().item() < (1e-4 if device == "cpu" else 5e-2)
    assert torch.allclose(bf16, expected, atol=0.15, rtol=0.05)
    assert (bf16.argmax(1) == expected.argmax(1)).float().mean().item() > 0.9
    # fp16 (trainer.amp=fp16): finite, no fallback to fp32, closer than bf16 (10 mantissa bits)
    assert fp16_teacher.dtype is torch.float16 and torch.isfinite(fp16).all()
    assert torch.allclose(fp16, expected, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("device", DEVICES)
def test_device_loader_gives_the_same_batches_on_every_device(device):
    here = list(itertools.islice(fake_batches(torch.device(device)).epoch(3), 2))
    cpu = list(itertools.islice(fake_batches(torch.device("cpu")).epoch(3), 2))
    for (x, y, *_), (xc, yc, *_) in zip(here, cpu):
        assert x.device.type == device and x.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(y.cpu(), yc)
        assert torch.allclose(x.cpu(), xc, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_precomputed_logits_match_the_teacher_beside_each_step(device):
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    source = build_model("resnet20", CLASSES).to(device, memory_format=torch.channels_last)
    teacher = FrozenTeacher(source, dtype, torch.channels_last)
    loader = fake_batches(torch.device(device))
    replay = PrecomputedTeacher(teacher, loader.epoch(0), chunk=4 * BATCH)
    # bf16 kernels picked for a batch of 128 and of 32 may round differently.
    tol = 5e-2 if device == "cuda" else 1e-4
    for x, *_ in loader.epoch(0):
        assert torch.allclose(replay(x), teacher(x), atol=tol, rtol=tol)


@pytest.mark.skipif(not CUDA, reason="compiling for CUDA needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_cuda_teacher_takes_a_refresh_in_place(mode):
    torch.manual_seed(0)
    student = build_model("resnet20", CLASSES).cuda().to(memory_format=torch.channels_last)
    teacher = FrozenTeacher(student, torch.bfloat16, torch.channels_last, compile=True,
                            compile_mode=mode)  # fmt: skip
    x = torch.randn(BATCH, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    for _ in range(3):  # reduce-overhead records its CUDA graph after warm-up calls
        before = teacher(x).clone()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    teacher.refresh(student)
    after = teacher(x).clone()
    expected = FrozenTeacher(student, torch.bfloat16, torch.channels_last)(x)
    assert (after - before).abs().max().item() > 1e-2
    assert torch.allclose(after, expected, atol=5e-2, rtol=5e-2)


@pytest.mark.skipif(not CUDA, reason="compiling for CUDA needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_cuda_teacher_precomputes_an_epoch_without_aliasing_its_outputs(mode):
    """fp32 weights: the compiled graph's output is fp32 already, so only the teacher's copy keeps
    one chunk's logits from being overwritten by the next chunk's CUDA-graph replay."""
    torch.manual_seed(0)
    source = build_model("resnet20", CLASSES).cuda().to(memory_format=torch.channels_last)
    eager = FrozenTeacher(source, torch.float32, torch.channels_last)
    compiled = FrozenTeacher(source, torch.float32, torch.channels_last, compile=True,
                             compile_mode=mode)  # fmt: skip
    loader = fake_batches(torch.device("cuda"))
    for _ in range(2):  # the second epoch replays recorded graphs
        replay = PrecomputedTeacher(compiled, loader.epoch(0), chunk=2 * BATCH)
        for x, *_ in loader.epoch(0):
            assert torch.allclose(replay(x), eager(x), atol=5e-2, rtol=5e-2)


@pytest.mark.skipif(not CUDA, reason="host syncs are a CUDA notion")
@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_training_loop_does_not_sync_with_the_host_per_step(amp):
    """CUDA's sync debug mode reports every synchronizing call. The epoch reads its sums once at
    its end, so the count must not grow with the number of steps (fused SGD keeps even the
    fp16 scaler's overflow check on the device)."""
    import warnings

    runtime = Runtime(torch.device("cuda"), amp, channels_last=True)
    torch.manual_seed(1)
    source = build_model("resnet20", CLASSES).cuda().to(memory_format=torch.channels_last)
    teacher = FrozenTeacher(source, teacher_dtype(amp), torch.channels_last)

    def syncs(steps: int) -> int:
        torch.manual_seed(0)
        model = build_model("resnet20", CLASSES).cuda().to(memory_format=torch.channels_last)
        state = StepState(build_optimizer(model, OptimConfig(lr=0.05), runtime.device),
                          runtime.grad_scaler(), step=0)  # fmt: skip
        plan = CyclePlan("sd", 1, 1, STEPS, peak=0.05)
        batches = list(itertools.islice(fake_batches(runtime.device).epoch(0), steps))
        quiet = LoopOptions(log_every=10**9, check_every=10**9)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step = MethodStep(build_method(default_settings("sd")), model, teacher)
                train_one_epoch(model, step, batches, steps, state, plan, runtime, None,
                                quiet)  # fmt: skip
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchronizing" in str(w.message) for w in caught)

    syncs(2)  # warm-up: cuDNN autotuning and first-call allocations
    assert syncs(2) == syncs(STEPS)
