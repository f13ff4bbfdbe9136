"""The epoch loop: one training epoch with an optional teacher, and test-set prediction.

The hot loop never reads a value back from the device: loss sums and correct counts are
accumulated as device tensors and read once at the epoch's end (the progress bar reads the
running loss only every `log_every` steps).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sdrun.distill import LossWeights, distill_loss
from sdrun.runtime import Runtime
from sdrun.schedule import CyclePlan


@dataclass
class EpochResult:
    loss: float
    ce: float
    kd: Optional[float]  # None when no teacher was active
    top1: float  # on the augmented training batches, percent
    lr: float  # LR of the epoch's last iteration
    images: int
    seconds: float

    @property
    def img_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


@dataclass
class StepState:
    """What the loop changes besides the model: the optimizer and the global iteration."""

    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    step: int  # iterations done so far in the whole run


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_one_epoch(
    student: nn.Module,
    teacher: Optional[nn.Module],
    batches: Iterable[tuple[Tensor, Tensor]],
    num_batches: int,
    state: StepState,
    plan: CyclePlan,
    weights: LossWeights,
    runtime: Runtime,
    *,
    log_every: int = 50,
    desc: str = "",
) -> EpochResult:
    student.train()
    device = runtime.device
    sums = torch.zeros(4, device=device)  # loss, ce, kd, correct (weighted by batch size)
    images = 0
    lr = plan.lr_at(state.step)
    bar = tqdm(total=num_batches, desc=desc, leave=False, dynamic_ncols=True, disable=None)
    start = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        lr = plan.lr_at(state.step)
        set_lr(state.optimizer, lr)
        with runtime.autocast():
            teacher_logits = None if teacher is None else teacher(x)  # frozen: no graph
            logits = student(x)
            loss, ce, kd = distill_loss(logits, y, teacher_logits, weights)
        _backward_step(loss, state)
        batch = y.shape[0]
        correct = logits.detach().argmax(dim=1).eq(y).sum()
        sums += torch.stack([loss.detach(), ce, kd, correct / batch]) * batch
        images += batch
        state.step += 1
        bar.update(1)
        if (i + 1) % log_every == 0 and not bar.disable:
            elapsed = time.perf_counter() - start
            bar.set_postfix(
                loss=f"{sums[0].item() / images:.3f}",
                lr=f"{lr:.4f}",
                img_s=f"{images / elapsed:.0f}",
            )
    totals = (sums / max(images, 1)).tolist()  # the epoch's one host sync
    seconds = time.perf_counter() - start
    bar.close()
    return EpochResult(
        loss=totals[0],
        ce=totals[1],
        kd=totals[2] if teacher is not None else None,
        top1=100.0 * totals[3],
        lr=lr,
        images=images,
        seconds=seconds,
    )


def _backward_step(loss: Tensor, state: StepState) -> None:
    state.optimizer.zero_grad(set_to_none=True)
    if state.scaler is None:
        loss.backward()
        state.optimizer.step()
    else:
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()


@torch.no_grad()
def predict(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], runtime: Runtime
) -> tuple[Tensor, Tensor]:
    """(logits fp32, labels) over the whole loader, kept on the device."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in batches:
        with runtime.autocast():
            logits.append(model(x).float())
        labels.append(y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)
