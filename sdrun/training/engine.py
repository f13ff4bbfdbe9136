"""The one epoch loop of every command (sdrun's classification methods, sdrun-transfer's
detection and segmentation), and test-set prediction.

What differs between them is the `BatchStep` the loop calls per batch: it runs the model
and returns a `StepOutput` (the loss to backpropagate, the batch's size, the named loss terms
to log as `train/<name>` and counts such as correct predictions). Everything else is here: the
LR of each iteration, AMP and the fp16 loss scaler, the on-device running sums, the
`log_every` reads, the progress bar, per-step logging, the stop and NaN checks agreed under
torchrun, the partial-epoch tally a mid-epoch checkpoint stores, and the device sync before
the epoch's clock is read.

The hot loop never reads a value back from the device: loss sums, counts and the non-finite
flag are accumulated as device tensors. They are read every `check_every` steps (to stop a
diverged run early), every `log_every` steps when a progress bar is shown or a step logger
listens (`on_log`: the LR and the loss of those steps), and at the epoch's end. Under DDP those
checks and the epoch's end are where the processes agree (one small all-reduce): on a
non-finite loss anywhere every process stops at the same step, and a stop request is acted on
at the same step everywhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sdrun.batches import Batch
from sdrun.runfolder.runtime import Runtime
from sdrun.training.batch_step import BatchStep, LossStep, StepOutput

__all__ = ["BatchStep", "LossStep", "StepOutput"]  # the loop's per-batch contract, re-exported

# The running sums are [loss, *terms, *counts, non-finite, skipped, images]: the loss and the
# terms weighted by batch size. (Classification's layout is the 7 slots older checkpoints hold.)
LOSS, NONFINITE, SKIPPED, IMAGES = 0, -3, -2, -1


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; `step` is the global step where it was seen."""

    def __init__(self, step: int) -> None:
        super().__init__(f"non-finite loss by step {step}")
        self.step = step


@dataclass
class EpochResult:
    loss: float
    lr: float  # LR of the epoch's last iteration
    images: int
    seconds: float
    skipped_steps: int = 0  # fp16 steps the loss scaler skipped (overflow)
    terms: dict[str, Optional[float]] = field(default_factory=dict)  # means; None: not computed
    counts: dict[str, float] = field(default_factory=dict)  # sums over the epoch

    @property
    def img_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


@dataclass
class StepState:
    """What the loop changes besides the model: the optimizer and the global iteration."""

    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    step: int  # iterations done so far in the whole run


@dataclass
class EpochTally:
    """Running totals of a possibly unfinished epoch (a mid-epoch checkpoint stores them)."""

    batches: int = 0
    images: int = 0
    seconds: float = 0.0
    # Weighted by batch size, see the layout above. Each process's own while training;
    # after a stop request, over all processes (what a mid-epoch checkpoint stores, once).
    sums: Optional[Tensor] = None
    # The terms some batch of this epoch returned (host side; a resumed epoch's next batch
    # returns the same ones: what a step computes is fixed within an epoch).
    seen: set[str] = field(default_factory=set)

    def state_dict(self) -> dict:
        sums = None if self.sums is None else self.sums.detach().cpu()
        return {"batches": self.batches, "images": self.images, "seconds": self.seconds,
                "sums": sums}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> EpochTally:
        sums = None if state["sums"] is None else state["sums"].to(device)
        return cls(state["batches"], state["images"], state["seconds"], sums)


StepLog = Callable[[int, dict[str, float]], None]


@dataclass
class LoopOptions:
    log_every: int = 50  # progress-bar refresh period (steps)
    check_every: int = 50  # non-finite loss check period (steps): one host sync
    desc: str = ""
    should_stop: Callable[[], bool] = field(default=lambda: False)  # this process's stop request
    # Several processes: act on `should_stop` only at the checks, agreed over the processes
    # (with `reduce`), so that all stop at the same step. One process polls it every step.
    sync_stop: bool = False
    nan_at_step: Optional[int] = None  # fault injection for tests: this step's loss is NaN
    # Combines the epoch's sums over processes (a sum over ranks under torchrun).
    reduce: Callable[[Tensor], Tensor] = field(default=lambda sums: sums)
    # Called every `log_every` global steps with the global step and {"train/step",
    # "train/lr", "train/loss"} (the mean loss of this process's steps since the last call or
    # the epoch's start).
    on_log: Optional[StepLog] = None


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_one_epoch(
    model: nn.Module,
    step: BatchStep,
    batches: Iterable[Any],
    num_batches: int,
    state: StepState,
    plan: Any,  # anything with lr_at(step): a CyclePlan, a FinetunePlan
    runtime: Runtime,
    tally: Optional[EpochTally] = None,
    options: Optional[LoopOptions] = None,
) -> Optional[EpochResult]:
    """Train `model` over `batches` (what is left of the epoch if `tally` says some is done),
    `step` giving each batch's loss.

    Returns None when `options.should_stop()` asked to stop early; `tally` then holds the
    partial epoch. Raises NonFiniteLoss when the loss stops being finite.
    """
    tally = tally or EpochTally()
    options = options or LoopOptions()
    model.train()
    if tally.sums is None:
        tally.sums = torch.zeros(4 + len(step.terms) + len(step.counts), device=runtime.device)
    bar = tqdm(total=num_batches, initial=tally.batches, desc=options.desc, leave=False,
               dynamic_ncols=True, disable=None)  # fmt: skip
    lr = plan.lr_at(max(state.step - 1, 0))
    start = time.perf_counter() - tally.seconds
    stopped = False
    window = _Window.start(tally)
    for batch in batches:
        lr = plan.lr_at(state.step)
        set_lr(state.optimizer, lr)
        with runtime.autocast():
            out = step(batch)
        loss = out.loss
        if state.step == options.nan_at_step:
            loss = loss * float("nan")
        skipped = _backward_step(loss, state)
        _accumulate(tally, step, out, loss, skipped, count_nonfinite=state.scaler is None)
        state.step += 1
        bar.update(1)
        if tally.batches % options.check_every == 0 and agreed_check(tally, state.step, options):
            stopped = True
            break
        if _log_due(state.step, options, bar):
            sums = tally.sums.tolist()  # this process's sums (its share under torchrun)
            _show(bar, sums, lr, time.perf_counter() - start)
            window.report(sums, state.step, lr, options.on_log)
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
    return _result(tally, step, lr, options.reduce, state.step)


def _log_due(step: int, options: LoopOptions, bar: tqdm) -> bool:
    """Whether this step is one whose loss is read for the progress bar and the step log: the
    run's step, not the epoch's, so that epochs shorter than log_every still log."""
    return step % options.log_every == 0 and (options.on_log is not None or not bar.disable)


def _accumulate(tally: EpochTally, step: BatchStep, out: StepOutput, loss: Tensor,
                skipped: Optional[Tensor], count_nonfinite: bool) -> None:  # fmt: skip
    n = out.size
    loss = loss.detach().float()
    nonfinite = (~torch.isfinite(loss)).float() if count_nonfinite else torch.zeros_like(loss)
    skipped = torch.zeros_like(loss) if skipped is None else skipped.float()
    terms = [out.terms[t] * n if t in out.terms else torch.zeros_like(loss) for t in step.terms]
    counts = [out.counts[c].float() for c in step.counts]
    count = torch.full_like(loss, n)  # a fill kernel, not a host-to-device copy
    tally.sums += torch.stack([loss * n, *terms, *counts, nonfinite, skipped, count])
    tally.seen.update(out.terms)
    tally.images += n
    tally.batches += 1


def agreed_check(tally: EpochTally, step: int, options: LoopOptions) -> bool:
    """The periodic host sync: raises NonFiniteLoss if any process's loss went non-finite;
    returns whether any process asked to stop (with `sync_stop`). Both flags travel in one
    reduce, so no process raises while the others wait for it in the next collective."""
    flags = torch.cat([tally.sums[NONFINITE:SKIPPED], torch.zeros_like(tally.sums[:1])])
    if options.sync_stop and options.should_stop():
        flags[1] = 1.0  # a fill on the device, not a copy from the host
    nonfinite, stop = options.reduce(flags).tolist()
    raise_if_nonfinite(nonfinite, step)
    return stop > 0


def raise_if_nonfinite(count: float, step: int) -> None:
    if count > 0:
        raise NonFiniteLoss(step)


def _show(bar: tqdm, sums: list[float], lr: float, elapsed: float) -> None:
    if bar.disable:
        return
    images = max(sums[IMAGES], 1)
    bar.set_postfix(
        loss=f"{sums[LOSS] / images:.3f}", lr=f"{lr:.4g}", img_s=f"{images / elapsed:.0f}"
    )


@dataclass
class _Window:
    """The loss sum and image count at the last step log: the next log reports the mean loss
    of the steps in between."""

    loss: float
    images: float

    @classmethod
    def start(cls, tally: EpochTally) -> _Window:
        if tally.batches == 0:
            return cls(0.0, 0.0)
        return cls(math.nan, math.nan)  # a resumed epoch: its first window is unknown

    def report(self, sums: list[float], step: int, lr: float, on_log: Optional[StepLog]) -> None:
        images = sums[IMAGES] - self.images
        loss = (sums[LOSS] - self.loss) / images if images > 0 else math.nan
        self.loss, self.images = sums[LOSS], sums[IMAGES]
        if on_log is None:
            return
        values = {"train/step": step, "train/lr": lr}
        if math.isfinite(loss):
            values["train/loss"] = loss
        on_log(step, values)


def _result(
    tally: EpochTally, step: BatchStep, lr: float, reduce: Callable[[Tensor], Tensor], at: int
) -> EpochResult:
    totals = reduce(tally.sums.clone()).tolist()  # the epoch's one read of the running sums
    raise_if_nonfinite(totals[NONFINITE], at)  # on every process alike: the sums are shared
    n = max(totals[IMAGES], 1)
    terms = dict(zip(step.terms, totals[1 : 1 + len(step.terms)]))
    counts = dict(zip(step.counts, totals[1 + len(step.terms) : NONFINITE]))
    return EpochResult(
        loss=totals[LOSS] / n,
        lr=lr,
        images=int(totals[IMAGES]),
        seconds=tally.seconds,
        skipped_steps=int(totals[SKIPPED]),
        terms={t: (v / n if t in tally.seen else None) for t, v in terms.items()},
        counts=counts,
    )


def _backward_step(loss: Tensor, state: StepState) -> Optional[Tensor]:
    """One optimizer step; with fp16 loss scaling, returns whether the scaler skipped it."""
    state.optimizer.zero_grad(set_to_none=True)
    if state.scaler is None:
        loss.backward()
        state.optimizer.step()
        return None
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    # The scaler skips a step whose gradients overflowed; its per-device flags say so without a
    # host sync (there is no public non-syncing accessor). Read before update() clears them.
    found = state.scaler._found_inf_per_device(state.optimizer)
    skipped = sum(found.values()) if found else None
    state.scaler.update()
    return skipped


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Batch], runtime: Runtime) -> tuple[Tensor, Tensor]:
    """(logits fp32, labels) over the whole loader, kept on the device."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in batches:
        with runtime.autocast():
            logits.append(model(batch.images).float())
        labels.append(batch.labels)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)
