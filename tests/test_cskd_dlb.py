"""cskd and dlb (sdrun/methods/cskd.py, dlb.py), the methods trained on partner batches: each
plug-in's loss against its paper's formula written out here, dlb's kept logits (the previous
step's, of exactly the images the step repeats), both kept bitwise through a kill and a
mid-epoch SIGTERM. (Which images the partners are, also over two processes: the loaders' tests,
tests/test_composition.py; two training processes: tests/test_selfkd.py.)"""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import train
from resume_helpers import Killed, assert_same_run, interrupt_at, kill, last, method_run
from test_selfkd import conf_distill, fixed_student, softmax_row

from sdrun.batches import Batch, Partners
from sdrun.errors import CheckpointError
from sdrun.methods import RunShape, build_method
from sdrun.runfolder.interrupt import RunStopped

K = 4


def kl(teacher: list[float], student: list[float]) -> float:
    return sum(t * math.log(t / s) for t, s in zip(teacher, student))


def ce(row: list[float], label: int) -> float:
    return -math.log(softmax_row(row)[label])


def test_cskd_is_ce_plus_the_partners_softened_prediction_without_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, K, generator=g) * 2  # rows 0-2 anchors, 3-5 their partners
    y = torch.tensor([0, 3, 1])
    calls = []

    class Recording(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = fixed_student(logits)

        def forward(self, x):
            calls.append(torch.is_grad_enabled())
            return self.inner(x)

    out = build_method(conf_distill("cskd")).forward_train(
        Recording(), Batch(torch.arange(3), y, None, Partners(torch.arange(3, 6), y, None)), None
    )
    t = 4.0
    want_ce = sum(ce(logits[i].tolist(), int(y[i])) for i in range(3)) / 3
    want_kd = (
        sum(
            t * t * kl(softmax_row(logits[i + 3].tolist(), t), softmax_row(logits[i].tolist(), t))
            for i in range(3)
        )
        / 3
    )
    assert out.loss.item() == pytest.approx(want_ce + 1.0 * want_kd, rel=1e-5)
    assert out.terms["kd"].item() == pytest.approx(want_kd, rel=1e-5)
    assert calls == [True, False]  # the partners' forward builds no graph
    assert torch.equal(out.logits, logits[:3]) and torch.equal(out.targets, y)


def dlb_step(method, logits, new, rep, y_all):
    """One dlb step with a fixed student: `new` and `rep` are rows of `logits` (image ids)."""
    new, rep = torch.tensor(new), torch.tensor(rep, dtype=torch.int64)
    batch = Batch(new, y_all[new], new, Partners(rep, y_all[rep], rep))
    return method.forward_train(fixed_student(logits), batch, None)


def test_dlb_teaches_the_repeated_images_with_their_logits_of_the_previous_step():
    method = build_method(conf_distill("dlb"))
    method.prepare(RunShape(8, K, 2, torch.device("cpu")))
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    g = torch.Generator().manual_seed(1)
    first, second = torch.randn(8, K, generator=g), torch.randn(8, K, generator=g)
    out = dlb_step(method, first, [0, 1, 2], [], y)  # the run's first step: CE alone
    want = sum(ce(first[i].tolist(), int(y[i])) for i in range(3)) / 3
    assert out.loss.item() == pytest.approx(want, rel=1e-5) and out.terms["kd"].item() == 0
    assert torch.equal(method.logits, first[:3]) and method.index.tolist() == [0, 1, 2]

    # step 2 trains on images 3-5 and repeats 0-2: the student now answers `second`
    out = dlb_step(method, second, [3, 4, 5], [0, 1, 2], y)
    t = 3.0
    rows = [0, 1, 2, 3, 4, 5]
    want_ce = sum(ce(second[i].tolist(), int(y[i])) for i in rows) / 6  # over all six rows
    want_kd = (
        sum(
            t * t * kl(softmax_row(first[i].tolist(), t), softmax_row(second[i].tolist(), t))
            for i in (0, 1, 2)
        )
        / 3
    )  # over the repeated rows, each taught by its logits of step 1
    assert out.loss.item() == pytest.approx(want_ce + want_kd, rel=1e-5)
    assert out.terms["kd"].item() == pytest.approx(want_kd, rel=1e-5)
    assert torch.equal(method.logits, second[3:6]) and method.index.tolist() == [3, 4, 5]
    assert torch.equal(out.logits, second[3:6])  # train/top1: the new images only


def test_dlb_refuses_kept_logits_that_are_not_of_this_run_in_one_line():
    method = build_method(conf_distill("dlb"))
    method.prepare(RunShape(8, K, 2, torch.device("cpu")))
    good = {"logits": torch.zeros(3, K), "index": torch.tensor([0, 1, 2])}
    bad = [
        {"logits": torch.zeros(3, K + 1), "index": good["index"]},
        {"logits": torch.zeros(3, K, dtype=torch.float64), "index": good["index"]},
        {"logits": good["logits"], "index": torch.tensor([0, 1, 8])},
        {"logits": good["logits"], "index": torch.tensor([0, 1])},
        {"logits": [[0.0] * K] * 3, "index": good["index"]},
    ]
    for state in bad:  # a checkpoint from elsewhere: untrusted
        with pytest.raises(CheckpointError, match="dlb's saved logits are not rows of 4 classes"):
            method.load_state_dict(state)
    method.load_state_dict(good)
    y = torch.zeros(8, dtype=torch.int64)
    with pytest.raises(CheckpointError, match="of other images than this step repeats"):
        dlb_step(method, torch.zeros(8, K), [4, 5, 6], [0, 1, 3], y)


PARTNERED = ["cskd", "dlb"]


def run_config(root: Path, name: str, **changes):
    """3 epochs of 3 steps: ResNet-20 on 96 images."""
    return method_run(root, name, 3, 96, **changes)


@pytest.fixture(scope="module", params=PARTNERED)
def reference(request, cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp(request.param) / "run"
    train(run_config(cifar100_root, request.param), run_dir)
    return request.param, run_dir


def test_resume_after_a_kill_mid_epoch_is_bitwise(reference, cifar100_root: Path,
                                                  tmp_path: Path, monkeypatch):  # fmt: skip
    name, ref = reference
    interrupt_at(monkeypatch, name, 5, kill)  # epoch 2's second step: last.pt is epoch 1's
    with pytest.raises(Killed):
        train(run_config(cifar100_root, name), tmp_path / "run")
    monkeypatch.undo()
    assert last(tmp_path / "run")["epoch"] == 1
    train(run_config(cifar100_root, name, resume=str(tmp_path / "run")), tmp_path / "run")
    assert_same_run(ref, tmp_path / "run")


def test_resume_after_a_mid_epoch_sigterm_is_bitwise(reference, cifar100_root: Path,
                                                     tmp_path: Path, monkeypatch):  # fmt: skip
    name, ref = reference
    interrupt_at(monkeypatch, name, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(RunStopped, match="in epoch 2 after step 2"):
        train(run_config(cifar100_root, name), tmp_path / "run")
    monkeypatch.undo()
    if name == "dlb":  # the mid-epoch checkpoint holds the logits of the step it stopped after
        assert last(tmp_path / "run")["method"]["logits"].shape == (32, 100)
    train(run_config(cifar100_root, name, resume=str(tmp_path / "run")), tmp_path / "run")
    assert_same_run(ref, tmp_path / "run")
