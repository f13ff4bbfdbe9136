"""Where and how the run executes: device, mixed precision, determinism."""

from __future__ import annotations

import contextlib
import os
import random
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
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(
            "trainer.amp=fp16 needs a CUDA device; use trainer.amp=bf16 or off on CPU"
        )
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("trainer.amp=bf16 is not supported by this GPU; use trainer.amp=fp16")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels for bitwise-reproducible runs, else the fastest cuDNN choices."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


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
