"""The self-distillation losses against each paper's formula, written out with explicit loops.

The references below use only exp/log and Python sums over images and classes (no
F.cross_entropy / F.kl_div), so they do not share code with sdrun/methods/selfkd_losses.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from sdrun.methods import selfkd_losses as m

K = 7  # classes


def probs(row: torch.Tensor, t: float = 1.0) -> list[float]:
    e = [math.exp(float(v) / t) for v in row.detach()]
    return [v / sum(e) for v in e]


def ce_row(row: torch.Tensor, y: int) -> float:
    return -math.log(probs(row)[y])


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def soft_ce_row(row: torch.Tensor, q: list[float]) -> float:
    p = probs(row)
    return -sum(qi * math.log(pi) for qi, pi in zip(q, p))


def close(got: torch.Tensor, expected: float) -> None:
    assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, K, generator=g) * 2, torch.randint(0, K, (6,), generator=g)


# --- ls ---


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_ls_is_ce_against_szegedy_smoothed_targets(batch, eps):
    z, y = batch
    expected = 0.0
    for b in range(len(y)):
        q = [eps / K + (1 - eps if k == y[b] else 0.0) for k in range(K)]
        expected += soft_ce_row(z[b], q)
    close(m.label_smoothing_loss(z, y, eps).total, expected / len(y))


def test_ls_with_eps_zero_is_cross_entropy(batch):
    z, y = batch
    ce = sum(ce_row(z[b], int(y[b])) for b in range(6)) / 6
    close(m.label_smoothing_loss(z, y, 0.0).total, ce)


# --- tfkd ---


def test_tfkd_virtual_teacher_is_softmax_of_softened_probabilities():
    y = torch.tensor([2, 0])
    a, t = 0.99, 20.0
    got = m.tfkd_teacher_probs(y, K, a, t)
    for b in range(2):
        pd = [a if k == y[b] else (1 - a) / (K - 1) for k in range(K)]
        assert_close(got[b].double(), torch.tensor(probs(torch.tensor(pd), t)).double())
    # almost uniform at T = 20 (why docs/SELFKD.md calls it a confidence penalty)
    assert got.max() - got.min() < 0.01


def test_tfkd_reg_matches_official_scaling(batch):
    z, y = batch
    alpha, t, mult, a = 0.1, 20.0, 100.0, 0.99
    ce = sum(ce_row(z[b], int(y[b])) for b in range(6)) / 6
    kl_sum = 0.0
    for b in range(6):
        pd = [a if k == y[b] else (1 - a) / (K - 1) for k in range(K)]
        kl_sum += kl(probs(torch.tensor(pd), t), probs(z[b]))  # student not softened
    expected = (1 - alpha) * ce + alpha * mult * kl_sum / (6 * K)  # nn.KLDivLoss(): / (B * K)
    close(m.tfkd_reg_loss(z, y, alpha, t, mult, a).total, expected)


def test_tfkd_multiplier_equal_to_num_classes_gives_batchmean_kl(batch):
    z, y = batch
    teacher = m.tfkd_teacher_probs(y, K, 0.99, 20.0)
    batchmean = F.kl_div(F.log_softmax(z, 1), teacher, reduction="batchmean")
    got = m.tfkd_reg_loss(z, y, alpha=1.0, temperature=20.0, multiplier=float(K)).total
    assert_close(got, batchmean)


# --- cskd ---


@pytest.mark.parametrize("t,lam", [(4.0, 1.0), (2.0, 3.0)])
def test_cskd_is_ce_plus_lambda_t2_kl_to_the_pair_over_the_anchors(batch, t, lam):
    z, y = batch
    pair = torch.randn(6, K, generator=torch.Generator().manual_seed(1))
    ce = sum(ce_row(z[b], int(y[b])) for b in range(6)) / 6
    kd = sum(kl(probs(pair[b], t), probs(z[b], t)) for b in range(6)) / 6
    close(m.cskd_loss(z, pair, y, t, lam).total, ce + lam * t * t * kd)


def test_cskd_sends_no_gradient_into_the_pair(batch):
    z, y = batch
    z = z.clone().requires_grad_()
    pair = torch.randn(6, K, requires_grad=True)
    m.cskd_loss(z, pair, y, 4.0, 1.0).total.backward()
    assert z.grad is not None and pair.grad is None


# --- pskd ---


def test_pskd_alpha_rises_linearly_to_alpha_T_in_the_last_epoch():
    assert m.pskd_alpha(0, 300, 0.8) == pytest.approx(0.8 / 300)  # t = 1 of T = 300
    assert m.pskd_alpha(149, 300, 0.8) == pytest.approx(0.4)
    assert m.pskd_alpha(299, 300, 0.8) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        m.pskd_alpha(300, 300, 0.8)


def test_pskd_loss_is_soft_ce_against_the_mixed_targets(batch):
    z, y = batch
    prev = torch.softmax(torch.randn(6, K, generator=torch.Generator().manual_seed(2)), 1)
    a = 0.37
    expected = 0.0
    for b in range(6):
        q = [(1 - a) * (1.0 if k == y[b] else 0.0) + a * float(prev[b, k]) for k in range(K)]
        expected += soft_ce_row(z[b], q)
    got = m.pskd_loss(z, m.pskd_targets(y, prev, a), y)
    close(got.total, expected / 6)
    assert_close(got.terms["ce"], F.cross_entropy(z, y))  # train/ce: CE against the labels
    assert_close(m.pskd_store_probs(z), torch.softmax(z, 1))


def test_pskd_alpha_zero_or_first_epoch_is_cross_entropy(batch):
    z, y = batch
    ce = F.cross_entropy(z, y)
    prev = torch.softmax(torch.randn(6, K), 1)
    assert_close(m.pskd_loss(z, m.pskd_targets(y, prev, 0.0), y).total, ce)
    none_yet = torch.zeros(6, K)  # no stored prediction yet (the first epoch): the label alone
    assert_close(m.pskd_loss(z, m.pskd_targets(y, none_yet, 0.5), y).total, ce)


def test_pskd_targets_mix_only_the_rows_that_have_a_prediction(batch):
    _, y = batch
    prev = torch.softmax(torch.randn(6, K), 1)
    prev[2] = 0  # image 2 was never trained on (left out of the last epoch's batches)
    got = m.pskd_targets(y, prev, 0.5)
    onehot = F.one_hot(y, K).float()
    assert_close(got[2], onehot[2])
    assert_close(got[[0, 1, 3, 4, 5]], (0.5 * onehot + 0.5 * prev)[[0, 1, 3, 4, 5]])


def test_pskd_stored_predictions_carry_no_gradient(batch):
    z, y = batch
    z = z.clone().requires_grad_()
    raw = torch.randn(6, K, requires_grad=True)
    m.pskd_loss(z, m.pskd_targets(y, torch.softmax(raw, 1), 0.5), y).total.backward()
    assert z.grad is not None and raw.grad is None  # the stored prediction is a fixed target
    assert not m.pskd_store_probs(z).requires_grad


# --- dlb ---


def test_dlb_is_ce_over_all_plus_alpha_t2_kl_over_the_repeated_half(batch):
    z, y = batch
    prev = torch.randn(3, K, generator=torch.Generator().manual_seed(3))
    t, alpha = 3.0, 1.0
    ce = sum(ce_row(z[b], int(y[b])) for b in range(6)) / 6  # all 6 images
    kd = sum(kl(probs(prev[b], t), probs(z[b], t)) for b in range(3)) / 3  # the 3 repeated
    close(m.dlb_loss(z, y, 3, prev, t, alpha).total, ce + alpha * t * t * kd)


def test_dlb_without_a_previous_batch_is_cross_entropy(batch):
    z, y = batch
    assert_close(m.dlb_loss(z, y, 3, None, 3.0, 1.0).total, F.cross_entropy(z, y))


def test_dlb_previous_logits_get_no_gradient_and_the_new_half_no_kd(batch):
    z, y = batch
    z = z.clone().requires_grad_()
    prev = torch.randn(3, K, requires_grad=True)
    m.dlb_loss(z, y, 3, prev, 3.0, 1.0).total.backward()
    assert prev.grad is None
    ce_only = torch.autograd.grad(F.cross_entropy(z, y), z)[0]
    assert_close(z.grad[3:], ce_only[3:])  # the new half feels the CE alone
    assert not torch.allclose(z.grad[:3], ce_only[:3])


def test_dlb_refuses_a_mismatched_previous_half(batch):
    z, y = batch
    with pytest.raises(ValueError):
        m.dlb_loss(z, y, 3, torch.randn(2, K), 3.0, 1.0)


# --- byot ---


def byot_parts(n: int = 3) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(4)
    logits = [torch.randn(6, K, generator=g, requires_grad=True) for _ in range(n)]
    feats = [torch.randn(6, 5, generator=g).relu().requires_grad_() for _ in range(n)]
    return logits, feats


def test_byot_matches_the_paper_sum_over_classifiers(batch):
    _, y = batch
    logits, feats = byot_parts()
    alpha, t, lam = 0.3, 3.0, 0.05
    deep = logits[-1]
    expected = sum(ce_row(deep[b], int(y[b])) for b in range(6)) / 6  # deepest: CE only
    for z_i, f_i in zip(logits[:-1], feats[:-1]):
        ce = sum(ce_row(z_i[b], int(y[b])) for b in range(6)) / 6
        kd = sum(kl(probs(deep[b], t), probs(z_i[b], t)) for b in range(6)) / 6
        diff = (f_i - feats[-1]).detach()
        l2 = sum(float(diff[b, d]) ** 2 for b in range(6) for d in range(diff.shape[1])) / 6
        expected += (1 - alpha) * ce + alpha * t * t * kd + lam * l2
    close(m.byot_loss(logits, feats, y, alpha, t, lam).total, expected)


def test_byot_deepest_classifier_is_not_pulled_towards_the_shallow_ones(batch):
    _, y = batch
    logits, feats = byot_parts()
    m.byot_loss(logits, feats, y, 0.3, 3.0, 0.05).total.backward()
    ce_grad = torch.autograd.grad(F.cross_entropy(logits[-1], y), logits[-1])[0]
    assert_close(logits[-1].grad, ce_grad)  # CE alone reaches z_C
    assert feats[-1].grad is None  # F_C detached
    assert feats[0].grad is not None and logits[0].grad is not None


def test_byot_with_alpha_and_lambda_zero_is_the_sum_of_ces(batch):
    _, y = batch
    logits, feats = byot_parts()
    expected = sum(F.cross_entropy(z, y) for z in logits)
    assert_close(m.byot_loss(logits, feats, y, 0.0, 3.0, 0.0).total, expected)


def test_byot_refuses_features_of_another_shape(batch):
    _, y = batch
    logits, feats = byot_parts()
    feats[0] = torch.randn(6, 4)
    with pytest.raises(ValueError):
        m.byot_loss(logits, feats, y, 0.3, 3.0, 0.05)
