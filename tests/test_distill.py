"""The KD loss against a hand computation."""

import math

import pytest
import torch

from sdrun.methods.teacher_student_loss import LossWeights, distill_loss, kd_loss


def softmax(row: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def hand_kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


ZS = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]
ZT = [[1.5, 1.0, -0.5], [-1.0, 0.0, 2.0]]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_smooth_teacher_is_kl_of_softened_teacher_to_plain_student(temperature):
    expected = sum(hand_kl(softmax(t, temperature), softmax(s)) for s, t in zip(ZS, ZT)) / 2
    got = kd_loss(torch.tensor(ZS), torch.tensor(ZT), temperature, "teacher")
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kd_smooth_both_is_hinton_t_squared_kl(temperature):
    kl = sum(hand_kl(softmax(t, temperature), softmax(s, temperature)) for s, t in zip(ZS, ZT)) / 2
    got = kd_loss(torch.tensor(ZS), torch.tensor(ZT), temperature, "both")
    assert got.item() == pytest.approx(temperature**2 * kl, rel=1e-5)


def test_kd_is_zero_when_student_equals_softened_teacher():
    z = torch.randn(4, 10)
    assert kd_loss(z, z, 1.0, "teacher").item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z, z, 3.0, "both").item() == pytest.approx(0.0, abs=1e-6)


def test_distill_loss_weights_ce_and_kd():
    s, t, y = torch.tensor(ZS), torch.tensor(ZT), torch.tensor([0, 2])
    ce = -(math.log(softmax(ZS[0])[0]) + math.log(softmax(ZS[1])[2])) / 2
    kd = sum(hand_kl(softmax(b, 2.0), softmax(a)) for a, b in zip(ZS, ZT)) / 2
    total, ce_t, kd_t = distill_loss(s, y, t, LossWeights(2.0, 0.3, 0.7, "teacher"))
    assert ce_t.item() == pytest.approx(ce, rel=1e-5)
    assert kd_t.item() == pytest.approx(kd, rel=1e-5)
    assert total.item() == pytest.approx(0.3 * ce + 0.7 * kd, rel=1e-5)


def test_without_teacher_the_loss_is_plain_cross_entropy():
    s, y = torch.tensor(ZS, requires_grad=True), torch.tensor([1, 0])
    total, ce, kd = distill_loss(s, y, None, LossWeights())
    assert total.item() == pytest.approx(torch.nn.functional.cross_entropy(s, y).item())
    assert kd.item() == 0.0
    total.backward()
    assert s.grad is not None


def test_kd_gradient_flows_to_the_student_only():
    s = torch.tensor(ZS, requires_grad=True)
    t = torch.tensor(ZT, requires_grad=True)
    total, _, _ = distill_loss(s, torch.tensor([0, 1]), t.detach(), LossWeights())
    total.backward()
    assert s.grad is not None and t.grad is None
