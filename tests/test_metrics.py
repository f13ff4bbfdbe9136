"""Accuracy, agreement, KL and the snapshot-ensemble average against hand computations."""

import math

import pytest
import torch

from sdrun.training.metrics import accuracy, agreement, mean_kl, softmax_ensemble, topk_correct

LOGITS = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 3.0, 2.0], [1.0, 0.0, 0.5, 2.0]])


def test_topk_accuracy():
    labels = torch.tensor([0, 3, 2])  # top1 hit, top2 hit, top3 hit
    acc = accuracy(LOGITS, labels, ks=(1, 2, 3))
    assert acc[1] == pytest.approx(100 / 3)
    assert acc[2] == pytest.approx(200 / 3)
    assert acc[3] == pytest.approx(100.0)


def test_top5_with_fewer_classes_counts_every_sample():
    counts = topk_correct(LOGITS, torch.tensor([3, 0, 1]), ks=(5,))
    assert counts[5].item() == 3


def test_agreement_counts_equal_argmax():
    other = torch.tensor([[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert agreement(LOGITS, other) == pytest.approx(200 / 3)


def test_mean_kl_by_hand():
    t = torch.tensor([[1.0, 0.0]])
    s = torch.tensor([[0.0, 1.0]])
    p = [math.exp(1) / (1 + math.exp(1)), 1 / (1 + math.exp(1))]
    q = [p[1], p[0]]
    expected = sum(a * math.log(a / b) for a, b in zip(p, q))
    assert mean_kl(t, s) == pytest.approx(expected, rel=1e-6)
    assert mean_kl(t, t) == pytest.approx(0.0, abs=1e-7)


def test_softmax_ensemble_is_the_mean_of_probabilities():
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[math.log(3.0), 0.0]])  # softmax = [0.75, 0.25]
    assert softmax_ensemble([a, b])[0].tolist() == pytest.approx([0.625, 0.375])
