"""Where and how the run executes: device, mixed precision, determinism."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

import torch

from sdrun.config import TrainerConfig
from sdrun.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: Optional[torch.dtype]  # None: fp32
    channels_last: bool

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return "cpu"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        if self.amp_dtype is torch.float16:
            return torch.amp.GradScaler(self.device.type)
        return None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def synchronize(self) -> None:
        """Wait until the device has run all queued work: CUDA kernels run asynchronously, so a
        clock read right after queueing them measures the queueing. The CPU runs eagerly."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def amp_name(dtype: Optional[torch.dtype]) -> str:
    """How summaries and logs name an AMP dtype: bf16, fp16 or off."""
    return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def resolve_runtime(cfg: TrainerConfig) -> Runtime:
    """Pick the device and AMP dtype; fail before training if the request cannot be met."""
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise ConfigError(
            "trainer.device=cuda but no CUDA GPU is visible; use trainer.device=auto or cpu"
        )
    device = torch.device(
        "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and cuda) else "cpu"
    )
    return Runtime(
        device=device, amp_dtype=resolve_amp(cfg.amp, device), channels_last=cfg.channels_last
    )


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == "off":
        return None
    if amp == "auto":
        # CPU autocast is slower than fp32 on most CPUs, so auto means AMP on GPUs only.
        if device.type != "cuda":
            return None
        return torch.bfloat16 if has_bf16_hardware() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(
            "trainer.amp=fp16 needs a CUDA device; use trainer.amp=bf16 or off on CPU"
        )
    if amp == "bf16" and device.type == "cuda" and not has_bf16_hardware():
        raise ConfigError(
            "trainer.amp=bf16: this GPU has no bf16 hardware (compute capability < 8.0, "
            "bf16 would be emulated and slow); use trainer.amp=fp16 or trainer.amp=auto"
        )
    return torch.bfloat16 if amp == "bf16" else torch.float16


def has_bf16_hardware() -> bool:
    """bf16 tensor cores (Ampere and later). A plain is_bf16_supported() also counts GPUs that
    only emulate bf16 (V100, T4), where it is much slower than fp16."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


@dataclass(frozen=True)
class NumericsFlags:
    """torch's process-wide numerics switches that a run sets (and gives back afterwards)."""

    deterministic: bool
    deterministic_warn_only: bool
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    tf32: tuple[bool, bool]  # (cuBLAS matmuls, cuDNN convolutions)


def current_flags() -> NumericsFlags:
    return NumericsFlags(
        deterministic=torch.are_deterministic_algorithms_enabled(),
        deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        cudnn_deterministic=torch.backends.cudnn.deterministic,
        tf32=_tf32(),
    )


def run_flags(
    deterministic: bool, device: torch.device, amp_dtype: Optional[torch.dtype], now: NumericsFlags
) -> NumericsFlags:
    """What a run sets, given what is set `now`.

    Deterministic kernels as asked. On CUDA: cuDNN's autotuner unless deterministic, and TF32
    only under AMP: with trainer.amp=off a user expects fp32 numerics, while under AMP the few
    fp32 matmuls and convolutions left may as well use the tensor cores.
    """
    if device.type != "cuda":  # the cuDNN / cuBLAS switches do not touch a CPU run
        return NumericsFlags(deterministic, False, now.cudnn_benchmark, now.cudnn_deterministic,
                             now.tf32)  # fmt: skip
    tf32 = amp_dtype is not None
    return NumericsFlags(deterministic, False, not deterministic, deterministic, (tf32, tf32))


def apply_flags(flags: NumericsFlags) -> None:
    torch.use_deterministic_algorithms(flags.deterministic, warn_only=flags.deterministic_warn_only)
    torch.backends.cudnn.benchmark = flags.cudnn_benchmark
    torch.backends.cudnn.deterministic = flags.cudnn_deterministic
    _set_tf32(*flags.tf32)


@contextlib.contextmanager
def configure_numerics(
    deterministic: bool, device: torch.device, amp_dtype: Optional[torch.dtype]
) -> Iterator[NumericsFlags]:
    """Set the run's numerics (`run_flags`) inside the block, and on leaving it, by return or by
    error, give back what was there before: the next job of a Hydra multirun runs in the same
    process and must not inherit this run's deterministic mode or TF32 choice."""
    before = current_flags()
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    flags = run_flags(deterministic, device, amp_dtype, before)
    if deterministic and workspace is None:
        # cuBLAS is deterministic only with a fixed workspace (cuBLAS docs, "Results
        # reproducibility"); it is read when cuBLAS creates its handle.
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    try:
        apply_flags(flags)
        yield flags
    finally:
        apply_flags(before)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 matmuls and convolutions without TF32 inside the block (for comparing two models'
    outputs at fp32 precision), the previous setting restored afterwards."""
    before = _tf32()
    _set_tf32(False, False)
    try:
        yield
    finally:
        _set_tf32(*before)


# TF32 through the allow_tf32 switches, not the newer fp32_precision ones: in torch 2.14 a value
# set through fp32_precision leaves the allow_tf32 getters and get_float32_matmul_precision()
# raising ("mix of the legacy and new APIs"), and Inductor reads those; setting allow_tf32 keeps
# both views consistent.
def _tf32() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_tf32(matmul: bool, cudnn: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
