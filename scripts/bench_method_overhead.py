"""What a training method itself costs per step, without the network: its `forward_train` and
the backward of its loss, with a "student" that returns a fixed batch x classes logits
parameter. Measures where `bench.py --methods` puts a method's extra step time (its loss
terms, pskd's per-sample table gather and scatter, cskd's and dlb's partner rows) against plain
CE (sd without a teacher). The network's share of cskd's and dlb's partners (a second forward, a
forward of twice the images) is not here: bench.py measures it.

    python scripts/bench_method_overhead.py ls tfkd pskd cskd dlb
"""

from __future__ import annotations

import sys
import time

import torch
from bench_methods import method_config
from torch import Tensor, nn

from sdrun.batches import PREVIOUS_BATCH_PARTNERS, Batch, Partners
from sdrun.methods import RunShape, build_method, default_settings

BATCH, CLASSES, SAMPLES = 64, 100, 64 * 35  # bench.py's CPU command: batch 64, 35 steps


class FixedLogits(nn.Module):
    """The student's logits without a network: a parameter, so the loss has a backward."""

    def __init__(self) -> None:
        super().__init__()
        self.z = nn.Parameter(torch.randn(2 * BATCH, CLASSES))  # dlb: repeated + new rows

    def forward(self, x: Tensor) -> Tensor:
        return self.z[: x.shape[0]] * 1.0  # a new graph node per step, as a network's output is


def ms_per_step(name: str, steps: int = 2000) -> float:
    cfg = default_settings("sd") if name == "ce" else method_config(name)
    method = build_method(cfg)
    method.prepare(RunShape(SAMPLES, CLASSES, 2, torch.device("cpu")))
    method.start_epoch(1)
    method.start_epoch(2)  # pskd: the second epoch mixes in the stored predictions
    student, labels = FixedLogits(), torch.randint(0, CLASSES, (BATCH,))
    batch = Batch(torch.zeros(BATCH, 1), labels)
    if method.batches.indices:
        batch = batch._replace(indices=torch.randperm(SAMPLES)[:BATCH])
    if method.batches.partners == PREVIOUS_BATCH_PARTNERS:  # the run's first step repeats none
        none = Partners(*(t[:0] for t in batch[:3]))
        method.forward_train(student, batch._replace(partners=none), None)
    if method.batches.partners:  # partners: the batch's own rows stand in for them
        batch = batch._replace(partners=Partners(*batch[:3]))
    for i in range(steps + 50):  # the first 50 warm up
        if i == 50:
            start = time.perf_counter()
        method.forward_train(student, batch, None).loss.backward()
    return 1000 * (time.perf_counter() - start) / steps


if __name__ == "__main__":
    for name in ("ce", *sys.argv[1:]):
        print(f"{name:6} {ms_per_step(name):.3f} ms/step (loss and its backward, no network)")
