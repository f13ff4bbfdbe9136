"""The frozen teacher: a snapshot of the student, prepared once per cycle for cheap inference.

The teacher runs a forward pass on every training batch of cycles 2..K, so its cost is SD's
overhead. Preparing it once per cycle makes that pass as cheap as possible: BN folded into the
preceding convolutions (torch.fx), weights cast to the compute dtype (so autocast does not
re-cast them every step), channels_last, no autograd, optionally compiled. Both are checked on a
probe batch when the teacher is prepared: a fold that changes the logits is dropped, and so is
an fp16 cast that overflows. `refresh` copies a new snapshot into the same module in place, so a
compiled teacher is compiled once per run.

`PrecomputedTeacher` is the other way to run it: the whole epoch's logits first, in large
batches (on a GPU a batch of 128 through a small CIFAR net is bound by kernel launches).
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from sdrun.batches import Batch
from sdrun.errors import CheckpointError
from sdrun.runfolder.checkpoint import check_weights, checkpoint_path, load_weights
from sdrun.training.folding import fold_checked, probe_batch

log = logging.getLogger(__name__)

# torch.compile modes that capture CUDA graphs.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def snapshot(student: nn.Module) -> nn.Module:
    """A frozen copy of the student: weights and BN buffers as they are now, eval mode."""
    teacher = copy.deepcopy(unwrap(student))
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def input_shape_of(model: nn.Module) -> Optional[tuple[int, ...]]:
    """One input's shape as timm's pretrained_cfg gives it ((3, 32, 32) for sdrun's CIFAR nets;
    timm's ImageNet models say (3, 224, 224) whatever they are trained on), else None."""
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    return tuple(size) if size else None


def finite_in(model: nn.Module, probe: Tensor, dtype: torch.dtype = torch.float16) -> bool:
    """Whether `model` cast to `dtype` gives finite outputs on `probe` (fp16 overflows at 65504)."""
    with torch.no_grad():
        return bool(torch.isfinite(copy.deepcopy(model).to(dtype)(probe.to(dtype))).all())


class FrozenTeacher(nn.Module):
    """The prepared snapshot: folded, cast to `dtype`, returns fp32 logits, never tracks grads.

    `input_shape` is one input's shape (C, H, W), for the probe batch that checks the
    preparation; the runner passes the dataset's, and by default it is timm's pretrained_cfg
    `input_size` of the model. `dtype` falls back to fp32 if the probe's logits overflow in it.
    """

    def __init__(
        self,
        student: nn.Module,
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
        compile: bool = False,
        compile_mode: str = "default",
        input_shape: Optional[tuple[int, ...]] = None,
    ) -> None:
        super().__init__()
        self.requested_dtype = dtype
        self.memory_format = memory_format
        self.input_shape = input_shape or input_shape_of(unwrap(student))
        self.compile_mode = compile_mode if compile else None  # None: eager
        self._use(self._prepare(student))
        self.eval()

    def train(self, mode: bool = True) -> FrozenTeacher:
        """A teacher stays in eval mode (BN statistics frozen, no dropout), whatever is asked."""
        return super().train(False)

    def _use(self, net: nn.Module) -> None:
        self.net = net
        mode = self.compile_mode
        self._forward = net if mode is None else torch.compile(net, mode=mode)
        # A CUDA graph's output buffer is reused by its next replay (the next chunk's, when
        # precomputing), so its logits must be copied out; eager outputs are fresh already.
        self._copy_out = mode in CUDA_GRAPH_MODES

    def _prepare(self, student: nn.Module) -> nn.Module:
        """The snapshot of `student`, folded and cast where the probe batch says that is safe;
        sets `snapshot_state`, `folded` and `dtype` to match it."""
        frozen = snapshot(student)
        # The unfolded weights are what checkpoints hold and what a resume rebuilds from.
        self.snapshot_state = {
            k: v.detach().to("cpu", copy=True) for k, v in frozen.state_dict().items()
        }
        probe = None
        some = next(itertools.chain(frozen.parameters(), frozen.buffers()), None)
        if self.input_shape is not None and some is not None:
            probe = probe_batch(self.input_shape, some.device, self.memory_format)
        net, self.folded = fold_checked(frozen, probe)
        self.dtype = self.requested_dtype
        if self.dtype is torch.float16 and probe is not None and not finite_in(net, probe):
            log.warning("teacher: fp16 logits overflow on a probe batch; the teacher runs in fp32")
            self.dtype = torch.float32
        net.requires_grad_(False)
        return net.to(dtype=self.dtype, memory_format=self.memory_format)

    @torch.no_grad()
    def refresh(self, student: nn.Module) -> None:
        """Become the snapshot of `student` now, reusing this module (and its compiled graph)."""
        net = self._prepare(student)
        if _layout(net) == _layout(self.net):
            self.net.load_state_dict(net.state_dict())  # copies in place
        else:  # this snapshot's fold or dtype check came out otherwise: a new module (and graph)
            log.info("teacher: prepared differently from the last snapshot; rebuilt")
            self._use(net)

    def forward(self, x: Tensor) -> Tensor:
        # The weights already are in `dtype`: autocast would only add casts.
        with torch.inference_mode(), torch.autocast(x.device.type, enabled=False):
            return self._forward(x.to(self.dtype)).to(torch.float32, copy=self._copy_out)


@dataclass
class TeacherState:
    """A run's current teacher and its test-set predictions (it is frozen: computed once);
    sdrun/training/teaching.py decides when it changes."""

    model: FrozenTeacher
    logits: Tensor
    top1: float
    top5: float
    val: Optional[dict[int, float]] = None  # top-1/top-5 on the validation split, if any


def _layout(net: nn.Module) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    return [(k, v.dtype, tuple(v.shape)) for k, v in net.state_dict().items()]


class PrecomputedTeacher:
    """The teacher's logits for one epoch's batches, predicted `chunk` images per forward.

    Called like the teacher, once per batch and in the batches' order, it hands back that
    batch's logits. They are computed on the first call, so an epoch's timing includes them.
    `batches` must yield exactly what the training loop will get (the device-resident loader
    replays an epoch from (seed, epoch)); each call checks the batch size against it.
    """

    def __init__(self, teacher: nn.Module, batches: Iterable[Batch], chunk: int) -> None:
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


def predict_in_chunks(teacher: nn.Module, batches: Iterable[Batch], chunk: int) -> list[Tensor]:
    """`teacher`'s logits for each batch, computed over groups of batches of >= `chunk` images."""
    out: list[Tensor] = []
    group: list[Tensor] = []

    def flush() -> None:
        logits = teacher(torch.cat(group))
        out.extend(logits.split([len(x) for x in group]))
        group.clear()

    images = 0
    for batch in batches:
        group.append(batch.images)
        images += len(batch.images)
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
    weights = state.get("model", state)
    check_weights(weights, teacher.state_dict(), "distill.teacher_checkpoint", path, "model")
    try:
        teacher.load_state_dict(weights)
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
    """The teacher's weights dtype: the AMP dtype (bf16 or fp16) under AMP, else fp32.

    Its logits are returned in fp32 either way. fp16 is safe for the shipped nets (finite and
    close to fp32, tests/test_teacher.py); a teacher whose fp16 logits overflow on the probe
    batch falls back to fp32 when prepared (`FrozenTeacher`).
    """
    return amp_dtype if amp_dtype in (torch.bfloat16, torch.float16) else torch.float32
