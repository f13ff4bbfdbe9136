"""The frozen teacher: a snapshot of the student, prepared once per cycle for cheap inference.

The teacher runs a forward pass on every training batch of cycles 2..K, so its cost is SD's
overhead. Preparing it once per cycle makes that pass as cheap as possible: BN folded into the
preceding convolutions (torch.fx), weights cast to the compute dtype (so autocast does not
re-cast them every step), channels_last, no autograd, optionally compiled. `refresh` copies a
new snapshot into the same module in place, so a compiled teacher is compiled once per run.

`PrecomputedTeacher` is the other way to run it: the whole epoch's logits first, in large
batches (on a GPU a batch of 128 through a small CIFAR net is bound by kernel launches).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from sdrun.checkpoint import checkpoint_path, load_weights
from sdrun.errors import CheckpointError

log = logging.getLogger(__name__)

# torch.compile modes that capture CUDA graphs.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


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
        compile_mode: str = "default",
    ) -> None:
        super().__init__()
        self.dtype = dtype
        self.memory_format = memory_format
        self.net = self._prepare(student)
        self._forward = torch.compile(self.net, mode=compile_mode) if compile else self.net
        # A CUDA graph's output buffer is reused by its next replay (the next chunk's, when
        # precomputing), so its logits must be copied out; eager outputs are fresh already.
        self._copy_out = compile and compile_mode in CUDA_GRAPH_MODES
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
            return self._forward(x.to(self.dtype)).to(torch.float32, copy=self._copy_out)


class PrecomputedTeacher:
    """The teacher's logits for one epoch's batches, predicted `chunk` images per forward.

    Called like the teacher, once per batch and in the batches' order, it hands back that
    batch's logits. They are computed on the first call, so an epoch's timing includes them.
    `batches` must yield exactly what the training loop will get (the device-resident loader
    replays an epoch from (seed, epoch)); each call checks the batch size against it.
    """

    def __init__(
        self, teacher: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], chunk: int
    ) -> None:
        self.teacher = teacher
        self.batches = batches
        self.chunk = chunk
        self._logits: list[Tensor] | None = None
        self._next = 0

    def __call__(self, x: Tensor) -> Tensor:
        if self._logits is None:
            self._logits = predict_in_chunks(self.teacher, self.batches, self.chunk)
        if self._next >= len(self._logits) or len(self._logits[self._next]) != len(x):
            raise RuntimeError(
                f"precomputed teacher logits do not match batch {self._next} of the epoch; "
                "the loader did not replay the same batches (set trainer.teacher_precompute=0)"
            )
        logits = self._logits[self._next]
        self._next += 1
        return logits


def predict_in_chunks(
    teacher: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], chunk: int
) -> list[Tensor]:
    """`teacher`'s logits for each batch, computed over groups of batches of >= `chunk` images."""
    out: list[Tensor] = []
    group: list[Tensor] = []

    def flush() -> None:
        logits = teacher(torch.cat(group))
        out.extend(logits.split([len(x) for x in group]))
        group.clear()

    images = 0
    for x, _ in batches:
        group.append(x)
        images += len(x)
        if images >= chunk:
            flush()
            images = 0
    if group:
        flush()
    return out


def load_teacher_weights(
    student: nn.Module, checkpoint: str | Path, seed: Optional[int] = None
) -> nn.Module:
    """A frozen copy of `student`'s architecture holding a saved model's weights (classic KD).

    A student trained with its teacher's `seed` starts from the teacher's initial weights and
    sees its batches in the same order: not an independent network, so it is said in the log.
    """
    path = checkpoint_path(str(checkpoint))
    state = load_weights(path, "distill.teacher_checkpoint")  # refuses anything but tensors
    config = state.get("config")
    if seed is not None and isinstance(config, dict) and config.get("seed") == seed:
        log.warning(
            "distill.teacher_checkpoint: the teacher was trained with seed=%d too, so this "
            "student starts from its initial weights and sees its batches; pass another seed "
            "(born-again chains: one seed per generation, see scripts/reproduce.py)",
            seed,
        )
    teacher = snapshot(student)
    try:
        teacher.load_state_dict(state.get("model", state))
    except Exception as err:  # a state_dict of another model raises many types
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
