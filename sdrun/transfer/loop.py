"""One fine-tuning epoch: the task's loss, AMP, the shared optimizer step, running sums kept
on the device.

sdrun's classification loop (`sdrun.engine`) computes logits and a distillation loss; here the
task computes its own loss (the detector's four, or cross-entropy). What the loops share is
reused: the step state, the partial-epoch tally a mid-epoch checkpoint stores, the stop and
NaN checks every `log_every` steps, and the optimizer step with fp16 loss-scaling accounting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sdrun.engine import (
    EpochTally,
    LoopOptions,
    StepState,
    agreed_check,
    raise_if_nonfinite,
    set_lr,
)
from sdrun.engine import _backward_step as backward_step  # the shared step (fp16 skips counted)
from sdrun.runtime import Runtime

# Slots of the on-device running sums.
LOSS, NONFINITE, SKIPPED, IMAGES = range(4)

LossFn = Callable[[nn.Module, Any], tuple[Tensor, int]]


@dataclass
class EpochResult:
    loss: float
    lr: float  # of the epoch's last iteration
    images: int
    seconds: float
    skipped_steps: int = 0

    @property
    def img_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def train_one_epoch(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    num_batches: int,
    state: StepState,
    plan,  # anything with lr_at(step): a FinetunePlan
    runtime: Runtime,
    tally: Optional[EpochTally] = None,
    options: Optional[LoopOptions] = None,
) -> Optional[EpochResult]:
    """Train over `batches`; None when `options.should_stop()` asked to stop (`tally` then
    holds the partial epoch); NonFiniteLoss when the loss stopped being finite.

    With `options.sync_stop` (several processes) the stop request and the NaN flag are read
    only every `check_every` steps, in one reduce over the processes, so that all of them stop
    (or raise) at the same step instead of one waiting for the others in a collective.
    """
    tally = tally or EpochTally()
    options = options or LoopOptions()
    model.train()
    if tally.sums is None:
        tally.sums = torch.zeros(4, device=runtime.device)
    bar = tqdm(total=num_batches, initial=tally.batches, desc=options.desc, leave=False,
               dynamic_ncols=True, disable=None)  # fmt: skip
    lr = plan.lr_at(max(state.step - 1, 0))
    start = time.perf_counter() - tally.seconds
    stopped = False
    for batch in batches:
        lr = plan.lr_at(state.step)
        set_lr(state.optimizer, lr)
        with runtime.autocast():
            loss, n = loss_fn(model, batch)
        if state.step == options.nan_at_step:
            loss = loss * float("nan")
        skipped = backward_step(loss, state)
        _accumulate(tally, loss.detach(), n, skipped, count_nonfinite=state.scaler is None)
        state.step += 1
        bar.update(1)
        if tally.batches % options.check_every == 0 and agreed_check(
            tally, state.step, options, NONFINITE
        ):
            stopped = True
            break
        if state.step % options.log_every == 0 and not bar.disable:  # the run's step
            sums = tally.sums.tolist()  # sums, not tally.images: a resumed epoch's are global
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{sums[LOSS] / max(sums[IMAGES], 1):.3f}", lr=f"{lr:.5f}",
                            img_s=f"{tally.images / elapsed:.1f}")  # fmt: skip
        if not options.sync_stop and options.should_stop():
            stopped = True
            break
    runtime.synchronize()  # the clock stops once the device has run the epoch's queued work
    tally.seconds = time.perf_counter() - start
    bar.close()
    if stopped and tally.batches < num_batches:
        tally.sums = options.reduce(tally.sums)  # all processes stopped at this same step
        raise_if_nonfinite(tally.sums[NONFINITE].item(), state.step)
        return None
    totals = options.reduce(tally.sums.clone()).tolist()  # the epoch's one read of the sums
    raise_if_nonfinite(totals[NONFINITE], state.step)
    n = max(totals[IMAGES], 1)
    return EpochResult(totals[LOSS] / n, lr, int(totals[IMAGES]), tally.seconds,
                       int(totals[SKIPPED]))  # fmt: skip


def _accumulate(tally: EpochTally, loss: Tensor, n: int, skipped: Optional[Tensor],
                count_nonfinite: bool) -> None:  # fmt: skip
    loss = loss.float()
    nonfinite = (~torch.isfinite(loss)).float() if count_nonfinite else torch.zeros_like(loss)
    skipped = torch.zeros_like(loss) if skipped is None else skipped.float()
    tally.sums += torch.stack([loss * n, nonfinite, skipped, torch.full_like(loss, n)])
    tally.images += n
    tally.batches += 1
