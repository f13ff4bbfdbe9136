"""pskd (sdrun/methods/pskd.py): the per-sample predictions of the previous epoch, found by each
image's dataset index whatever the order; kept bitwise through a kill and a mid-epoch SIGTERM.
(The same on two processes: tests/test_selfkd.py.)"""

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

from sdrun.batches import Batch
from sdrun.errors import CheckpointError
from sdrun.methods import RunShape, build_method
from sdrun.runfolder.interrupt import RunStopped

N, K, EPOCHS = 6, 4, 3


def expected_loss(logits: torch.Tensor, labels: list[int], prev: list[list[float]] | None,
                  alpha: float) -> float:  # fmt: skip
    """The paper's soft CE against (1 - alpha) onehot + alpha p_{t-1}, written out."""
    total = 0.0
    for row, y, i in zip(logits.tolist(), labels, range(len(labels))):
        p = softmax_row(row)
        q = [float(k == y) for k in range(K)]
        if prev is not None:
            q = [(1 - alpha) * qk + alpha * pk for qk, pk in zip(q, prev[i])]
        total -= sum(qk * math.log(pk) for qk, pk in zip(q, p))
    return total / len(labels)


def test_the_target_of_an_image_is_its_prediction_of_the_previous_epoch_by_index():
    method = build_method(conf_distill("pskd"))
    method.prepare(RunShape(N, K, EPOCHS, torch.device("cpu")))
    labels = torch.tensor([0, 1, 2, 3, 1, 2])
    g = torch.Generator().manual_seed(0)
    seen: dict[int, list[float]] = {}  # image index -> its softmax when last trained on
    for epoch in range(1, EPOCHS + 1):
        method.start_epoch(epoch)
        alpha = 0.8 * epoch / EPOCHS
        logits = torch.randn(N, K, generator=g) * 2  # this epoch's outputs, row = image index
        order = torch.randperm(N, generator=g)
        before = dict(seen)
        for half in (order[:3], order[3:]):  # two batches in a fresh shuffled order
            out = method.forward_train(fixed_student(logits), Batch(half, labels[half], half), None)
            prev = None if epoch == 1 else [before[i] for i in half.tolist()]
            want = expected_loss(logits[half], labels[half].tolist(), prev, alpha)
            assert out.loss.item() == pytest.approx(want, rel=1e-5), (epoch, half)
            for i in half.tolist():
                seen[i] = softmax_row(logits[i].tolist())
        want = torch.tensor([seen[i] for i in range(N)])
        torch.testing.assert_close(method.latest, want)


def test_an_image_left_out_of_an_epoch_keeps_its_older_prediction():
    method = build_method(conf_distill("pskd"))
    method.prepare(RunShape(N, K, EPOCHS, torch.device("cpu")))
    labels = torch.tensor([0, 1, 2, 3, 1, 2])
    logits = torch.randn(N, K)
    everyone, first = torch.arange(N), torch.arange(3)
    method.start_epoch(1)
    method.forward_train(fixed_student(logits), Batch(everyone, labels, everyone), None)
    method.start_epoch(2)  # images 3..5 are not trained on in epoch 2 (a dropped batch)
    method.forward_train(fixed_student(logits * 0), Batch(first, labels[:3], first), None)
    method.start_epoch(3)
    kept = torch.softmax(logits[3:], dim=1)
    assert torch.allclose(method.previous[3:], kept) and torch.allclose(
        method.previous[:3], torch.full((3, K), 1 / K)
    )


def test_a_saved_table_of_another_shape_is_refused_in_one_line():
    method = build_method(conf_distill("pskd"))
    method.prepare(RunShape(N, K, EPOCHS, torch.device("cpu")))
    state = {"epoch": 1, "previous": torch.zeros(N + 1, K), "latest": torch.zeros(N + 1, K)}
    with pytest.raises(CheckpointError, match=r"pskd's saved previous predictions are \(7, 4\)"):
        method.load_state_dict(state)
    fits = {"previous": torch.zeros(N, K), "latest": torch.zeros(N, K)}
    for epoch in (None, "1", 1.0, -1, EPOCHS + 1):  # a checkpoint from elsewhere: untrusted
        bad = fits if epoch is None else {**fits, "epoch": epoch}
        with pytest.raises(CheckpointError, match="pskd's saved epoch is"):
            method.load_state_dict(bad)


def pskd_config(root: Path, **changes):
    """3 epochs of 3 steps: ResNet-20 on 96 images."""
    return method_run(root, "pskd", 3, 96, **changes)


@pytest.fixture(scope="module")
def reference(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("pskd") / "run"
    train(pskd_config(cifar100_root), run_dir)
    state = last(run_dir)["method"]
    assert state["epoch"] == 3 and bool((state["latest"].sum(dim=1) > 0.99).all())
    return run_dir


def test_resume_after_a_kill_mid_epoch_is_bitwise(reference: Path, cifar100_root: Path,
                                                  tmp_path: Path, monkeypatch):  # fmt: skip
    interrupt_at(monkeypatch, "pskd", 5, kill)  # epoch 2's second step: last.pt is epoch 1's
    with pytest.raises(Killed):
        train(pskd_config(cifar100_root), tmp_path / "run")
    monkeypatch.undo()
    assert last(tmp_path / "run")["epoch"] == 1
    train(pskd_config(cifar100_root, resume=str(tmp_path / "run")), tmp_path / "run")
    assert_same_run(reference, tmp_path / "run")


def test_resume_after_a_mid_epoch_sigterm_is_bitwise(reference: Path, cifar100_root: Path,
                                                     tmp_path: Path, monkeypatch):  # fmt: skip
    # a real signal, handled by the run's StopRequest
    interrupt_at(monkeypatch, "pskd", 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(RunStopped, match="in epoch 2 after step 2"):
        train(pskd_config(cifar100_root), tmp_path / "run")
    monkeypatch.undo()
    stopped = last(tmp_path / "run")
    assert stopped["method"]["epoch"] == 2
    train(pskd_config(cifar100_root, resume=str(tmp_path / "run")), tmp_path / "run")
    assert_same_run(reference, tmp_path / "run")
