"""Which teacher teaches when, in a run, as the method asks (`Method.teacher`): a loaded
finished model from the first epoch (`FILE`, classic KD), or none in the first cycle and at every
cycle end the student's snapshot swapped in (`SNAPSHOT`, `take_snapshot`: the heart of Snapshot
Distillation). The teacher module itself, prepared for cheap inference, is
sdrun/training/frozen_teacher.py's FrozenTeacher."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Optional

from torch import Tensor, nn

from sdrun.batches import Batch
from sdrun.methods import FILE
from sdrun.runfolder import distributed
from sdrun.training.evaluation import predict_test_set, val_accuracy
from sdrun.training.frozen_teacher import (
    FrozenTeacher,
    PrecomputedTeacher,
    TeacherState,
    load_teacher_weights,
    snapshot,
    teacher_dtype,
)
from sdrun.training.metrics import accuracy
from sdrun.training.parts import Parts, input_shape

log = logging.getLogger(__name__)


def initial_teacher(parts: Parts) -> Optional[TeacherState]:
    """A teacher from a file teaches from the start; a snapshot teacher comes at the end of
    cycle 1 (`take_snapshot`)."""
    if parts.method.teacher != FILE:
        return None
    source = load_teacher_weights(
        parts.model, parts.cfg.distill.teacher_checkpoint, seed=parts.cfg.seed
    )
    return _evaluated(parts, _frozen(parts, source))


def take_snapshot(parts: Parts, previous: Optional[TeacherState]) -> TeacherState:
    """The teacher swap: the student at this cycle end becomes the next cycle's teacher."""
    distributed.sync_state(parts.model)  # the same snapshot on every rank, BN statistics too
    if previous is None:
        teacher = _frozen(parts, parts.model)
    else:
        teacher = previous.model
        teacher.refresh(parts.model)  # in place: a compiled teacher stays compiled
    mark = distributed.check_identical(teacher.snapshot_state, "the teacher snapshot")
    log.info("teacher: snapshot %s, identical on %d process(es)", mark, parts.dist.world_size)
    return _evaluated(parts, teacher)


def restored_teacher(parts: Parts, payload: dict[str, Any]) -> Optional[TeacherState]:
    """The teacher a checkpoint holds (its unfolded snapshot), or the run's initial one."""
    if payload.get("teacher") is None:
        return initial_teacher(parts)
    source = snapshot(parts.model)
    source.load_state_dict(payload["teacher"])
    return _evaluated(parts, _frozen(parts, source))


def teacher_for_epoch(
    parts: Parts, teacher: Optional[TeacherState], batches: Iterator[Batch]
) -> Optional[Callable[[Tensor], Tensor]]:
    """What the loop calls for teacher logits: the teacher itself, or its logits of the epoch's
    `batches` (the same ones the loop gets) predicted ahead in large batches
    (trainer.teacher_precompute)."""
    if teacher is None:
        return None
    chunk = parts.cfg.trainer.teacher_precompute
    if not chunk:
        return teacher.model
    return PrecomputedTeacher(teacher.model, batches, chunk)


def _frozen(parts: Parts, source: nn.Module) -> FrozenTeacher:
    runtime = parts.runtime
    return FrozenTeacher(
        source,
        dtype=teacher_dtype(runtime.amp_dtype),
        memory_format=runtime.memory_format,
        compile=parts.cfg.trainer.compile,
        compile_mode=parts.cfg.trainer.compile_mode,
        input_shape=input_shape(parts.cfg),
    )


def _evaluated(parts: Parts, teacher: FrozenTeacher) -> TeacherState:
    logits, labels = predict_test_set(parts, teacher)
    acc = accuracy(logits, labels)
    return TeacherState(teacher, logits, acc[1], acc[5], val_accuracy(parts, teacher))
