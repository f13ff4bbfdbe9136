"""The frozen teacher: a snapshot of the student, prepared once per cycle for cheap inference.

The teacher runs a forward pass on every training batch of cycles 2..K, so its cost is SD's
overhead. Preparing it once per cycle makes that pass as cheap as possible: BN folded into the
preceding convolutions (torch.fx), weights cast to the compute dtype (so autocast does not
re-cast them every step), channels_last, no autograd, optionally compiled. `refresh` copies a
new snapshot into the same module in place, so a compiled teacher is compiled once per run.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from sdrun.errors import CheckpointError

log = logging.getLogger(__name__)


def snapshot(student: nn.Module) -> nn.Module:
    """A frozen copy of the student: weights and BN buffers as they are now, eval mode."""
    teacher = copy.deepcopy(unwrap(student))
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold eval-mode BatchNorm into the convolutions before it (a copy; same outputs).

    Uses torch.fx; a model fx cannot trace is returned unfolded (still correct, a bit slower).
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval(), inplace=False)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: keep the plain model
        log.info(
            "teacher: BN not folded (%s: %s); using the plain snapshot", type(err).__name__, err
        )
        return copy.deepcopy(model)


class FrozenTeacher(nn.Module):
    """The prepared snapshot: folded, cast to `dtype`, returns fp32 logits, never tracks grads."""

    def __init__(
        self,
        student: nn.Module,
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.dtype = dtype
        self.memory_format = memory_format
        self.net = self._prepare(student)
        self._forward = torch.compile(self.net) if compile else self.net
        self.eval()

    def train(self, mode: bool = True) -> FrozenTeacher:
        """A teacher stays in eval mode (BN statistics frozen, no dropout), whatever is asked."""
        return super().train(False)

    def _prepare(self, student: nn.Module) -> nn.Module:
        frozen = snapshot(student)
        # The unfolded weights are what checkpoints hold and what a resume rebuilds from.
        self.snapshot_state = {
            k: v.detach().to("cpu", copy=True) for k, v in frozen.state_dict().items()
        }
        net = fold_batchnorm(frozen)
        net.requires_grad_(False)
        return net.to(dtype=self.dtype, memory_format=self.memory_format)

    @torch.no_grad()
    def refresh(self, student: nn.Module) -> None:
        """Become the snapshot of `student` now, reusing this module (and its compiled graph)."""
        self.net.load_state_dict(self._prepare(student).state_dict())  # copies in place

    def forward(self, x: Tensor) -> Tensor:
        # The weights already are in `dtype`: autocast would only add casts.
        with torch.inference_mode(), torch.autocast(x.device.type, enabled=False):
            return self._forward(x.to(self.dtype)).float()


def load_teacher_weights(student: nn.Module, checkpoint: str | Path) -> nn.Module:
    """A frozen copy of `student`'s architecture holding a saved model's weights (classic KD)."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(
            f"distill.teacher_checkpoint: no checkpoint at {path}; "
            "point it at a run directory or a .pt file written by sdrun"
        )
    teacher = snapshot(student)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        teacher.load_state_dict(state["model"])
    except Exception as err:  # a damaged file raises many types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"distill.teacher_checkpoint: cannot load a teacher for this model from {path} "
            f"({first}); use a checkpoint of the same model and dataset"
        ) from None
    return teacher


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind DDP or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def teacher_dtype(amp_dtype: Optional[torch.dtype]) -> torch.dtype:
    """bf16 under AMP; fp16 teachers are left in fp32 (fp16 logits can overflow)."""
    return torch.bfloat16 if amp_dtype is torch.bfloat16 else torch.float32
