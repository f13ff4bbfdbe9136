"""Per-batch losses of the one-run self-distillation family, as pure functions.

Nothing here knows the training loop: each function takes logits (and, where the method needs
them, the pair's / previous iteration's / deepest classifier's outputs) and returns a `Loss`.
Sources, defaults and every place where a paper and its code disagree: docs/SELFKD.md.

Conventions, the same in every function:
- logits are cast to float32 (bf16 logits under AMP would make the softmax/KL noisy);
- a "teacher" side (pair logits, last iteration's logits, the deepest classifier, a stored
  prediction) is detached here, so a caller cannot leak a gradient into it by mistake;
- KL(p_t || p_s) is reduced as `batchmean`: summed over classes, averaged over the images that
  carry the term (never over images x classes), unless a method's official code does otherwise
  (Tf-KD, documented at `tfkd_reg_loss`);
- `Loss.terms` are detached, unweighted values for logging; `Loss.total` is what to backprop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Loss:
    total: Tensor  # scalar to backpropagate
    terms: dict[str, Tensor]  # detached, unweighted parts (e.g. "ce", "kd"), for logging


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """-sum_k q_k log softmax(z)_k, averaged over the batch; the target is detached."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(target_probs.detach().float() * logp).sum(dim=1).mean()


def kl_batchmean(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), summed over classes, mean over rows.

    The T^2 factor keeps the gradient's size independent of T (Hinton et al. 2015); the
    teacher is detached."""
    t = temperature
    s = F.log_softmax(student_logits.float() / t, dim=1)
    q = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
    return t * t * F.kl_div(s, q, reduction="batchmean", log_target=True)


# --- ls: label smoothing (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016) ---


def label_smoothing_loss(logits: Tensor, targets: Tensor, eps: float) -> Loss:
    """CE against q = (1 - eps) * onehot(y) + eps / K (uniform over ALL K classes, Szegedy).

    Tf-KD's and Self-KD-Lib's `loss_label_smoothing` put eps / (K - 1) on the wrong classes and
    1 - eps on the right one instead; we follow the paper (and torch's `label_smoothing`), so the
    right class gets 1 - eps + eps / K. eps = 0 is plain CE."""
    z = logits.float()
    ce = F.cross_entropy(z, targets)
    total = F.cross_entropy(z, targets, label_smoothing=eps)
    return Loss(total, {"ce": ce.detach()})


# --- tfkd: Tf-KD_reg (Yuan et al., "Revisiting Knowledge Distillation via Label Smoothing
#     Regularization", CVPR 2020) ---


def tfkd_teacher_probs(
    targets: Tensor, num_classes: int, correct_prob: float, temperature: float
) -> Tensor:
    """The virtual teacher as the official code builds it: softmax(p^d / T).

    p^d is a *probability* vector (a on the label, (1 - a) / (K - 1) elsewhere), and the code
    softens it by dividing the probabilities (not logits) by T before a softmax. With a = 0.99,
    T = 20, K = 100 the result is almost uniform: ~0.0105 on the label vs ~0.00999 elsewhere.
    The paper's text only says "p^d softened by temperature tau"; we follow the code, whose
    hyperparameters (T, multiplier) were tuned for exactly this teacher."""
    k = num_classes
    pd = torch.full((targets.shape[0], k), (1.0 - correct_prob) / (k - 1), device=targets.device)
    pd.scatter_(1, targets.unsqueeze(1), correct_prob)
    return F.softmax(pd / temperature, dim=1)


def tfkd_reg_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float,
    temperature: float,
    multiplier: float,
    correct_prob: float = 0.99,
) -> Loss:
    """(1 - alpha) * CE + alpha * multiplier * KL(p^d_T || softmax(z)) / (B * K).

    As `loss_kd_regularization` in the official code (my_loss_function.py):
    - the student is NOT softened (log_softmax(z), T = 1), although the paper writes p_tau;
    - `nn.KLDivLoss()` with its default reduction averages over every element, i.e. the summed
      KL is divided by B * K, not by B (batchmean). So `multiplier` absorbs a 1/K: for CIFAR-100
      (K = 100) ResNet-18's multiplier 100 makes the term exactly a batchmean KL;
    - no T^2 factor; correct_prob a = 0.99 is hard-coded there (the paper asks a >= 0.9)."""
    z = logits.float()
    b, k = z.shape
    ce = F.cross_entropy(z, targets)
    teacher = tfkd_teacher_probs(targets, k, correct_prob, temperature)
    kl_sum = F.kl_div(F.log_softmax(z, dim=1), teacher, reduction="sum")
    reg = multiplier * kl_sum / (b * k)
    total = (1.0 - alpha) * ce + alpha * reg
    return Loss(total, {"ce": ce.detach(), "kd": reg.detach()})


# --- cskd: class-wise self-KD (Yun et al., "Regularizing Class-wise Predictions via
#     Self-knowledge Distillation", CVPR 2020) ---


def cskd_loss(
    logits: Tensor, pair_logits: Tensor, targets: Tensor, temperature: float, kd_weight: float
) -> Loss:
    """CE(z, y) + kd_weight * T^2 * KL(softmax(z_pair / T) || softmax(z / T)), over the B anchors.

    `logits`/`targets`: the B anchor images (the sampler's first half); `pair_logits`: for each
    anchor, another image of the same class (the second half), computed without gradient (the
    paper's fixed copy theta~). The official train.py takes CE over the anchors only (the pairs
    get no CE) and divides the summed KL by the number of anchors (`input.size(0)`), so both terms
    are means over the same B images. `kd_weight` is the paper's lambda_cls."""
    if pair_logits.shape != logits.shape:
        raise ValueError(f"cskd: {tuple(pair_logits.shape)} pair logits for {tuple(logits.shape)}")
    z = logits.float()
    ce = F.cross_entropy(z, targets)
    kd = kl_batchmean(z, pair_logits, temperature)
    return Loss(ce + kd_weight * kd, {"ce": ce.detach(), "kd": kd.detach()})


# --- pskd: progressive self-KD (Kim et al., "Self-Knowledge Distillation with Progressive
#     Refinement of Targets", ICCV 2021) ---


def pskd_alpha(epoch: int, epochs: int, alpha_T: float) -> float:
    """alpha_t = alpha_T * t / T with t the 1-based epoch: `epoch` is sdrun's 0-based epoch.

    The official main.py computes alpha_T * (epoch + 1) / end_epoch with a 0-based epoch, the
    paper's t / T with t = 1..T: the same value, reaching alpha_T in the last epoch."""
    if not 0 <= epoch < epochs:
        raise ValueError(f"pskd: epoch {epoch} outside 0..{epochs - 1}")
    return alpha_T * (epoch + 1) / epochs


def pskd_targets(targets: Tensor, prev_probs: Tensor, alpha_t: float) -> Tensor:
    """(1 - alpha_t) * onehot(y) + alpha_t * p_{t-1}(x): the soft targets of this step.

    `prev_probs` (B x K, float32): softmax(z) each image got when it was last trained on (its
    row of the method's table, found by its dataset index; detached here). A zero row is an
    image not trained on yet, so every row of the first epoch: its target is the label alone,
    as the official code's store, filled with one-hot labels before epoch 0."""
    prev = prev_probs.detach()
    known = (prev.sum(dim=1, keepdim=True) > 0).float()
    onehot = F.one_hot(targets, prev.shape[1]).float()
    return (1.0 - alpha_t * known) * onehot + alpha_t * prev


def pskd_loss(logits: Tensor, soft_targets: Tensor, targets: Tensor) -> Loss:
    """Soft-target CE, -sum_k q_k log p_k averaged over the batch (official pskd_loss.py:
    `(-targets * log_probs).mean(0).sum()`, the same number). The term `ce` is the plain
    cross-entropy against the labels `targets`, as every method logs it (not backpropagated)."""
    total = soft_cross_entropy(logits, soft_targets)
    with torch.no_grad():
        ce = F.cross_entropy(logits.detach().float(), targets)
    return Loss(total, {"ce": ce})


def pskd_store_probs(logits: Tensor) -> Tensor:
    """What to store for each image for the next epoch: softmax of the logits it was trained on
    in this step (train mode, this step's crop), float32, detached, as the official main.py."""
    return F.softmax(logits.detach().float(), dim=1)


# --- dlb: self-distillation from the last mini-batch (Shen et al., CVPR 2022) ---


def dlb_loss(
    logits: Tensor,
    targets: Tensor,
    repeated: int,
    prev_logits: Optional[Tensor],
    temperature: float,
    kd_weight: float,
) -> Loss:
    """CE over the whole batch + kd_weight * T^2 * KL(softmax(z_prev / T) || softmax(z_rep / T)).

    The batch's first `repeated` rows are the images repeated from the previous iteration (a new
    augmentation of them); `prev_logits` are the logits those images got in the previous
    iteration (before that step's update), detached. As the official dlb.py: CE is the mean over
    all rows (repeated + new), KL is batchmean over the repeated rows only, times T^2. Without a
    previous iteration (the run's first step) `prev_logits` is None and the loss is CE.
    `kd_weight` is the paper's alpha."""
    z = logits.float()
    ce = F.cross_entropy(z, targets)
    if prev_logits is None:
        return Loss(ce, {"ce": ce.detach(), "kd": torch.zeros((), device=z.device)})
    if prev_logits.shape[0] != repeated or not 0 < repeated <= z.shape[0]:
        raise ValueError(f"dlb: {prev_logits.shape[0]} previous logits for {repeated} repeated")
    kd = kl_batchmean(z[:repeated], prev_logits, temperature)
    return Loss(ce + kd_weight * kd, {"ce": ce.detach(), "kd": kd.detach()})


# --- byot: Be Your Own Teacher (Zhang et al., ICCV 2019) ---


def byot_loss(
    logits: Sequence[Tensor],
    features: Sequence[Tensor],
    targets: Tensor,
    alpha: float,
    temperature: float,
    feat_weight: float,
) -> Loss:
    """Classifiers shallow to deep; the last of `logits` / `features` is the deepest (the model's
    own head and its pooled feature). For every shallower classifier i:

        (1 - alpha) * CE(z_i, y) + alpha * T^2 * KL(softmax(z_C / T) || softmax(z_i / T))
        + feat_weight * mean_b ||F_i - F_C||_2^2

    and CE(z_C, y) for the deepest (the paper: no KL / L2 term, alpha = lambda = 0, for it).
    z_C and F_C are detached (the deepest teaches, it is not pulled towards the shallow ones).
    F_i is auxiliary head i's feature after its bottleneck, the same shape as F_C; the squared
    L2 distance is summed per image and averaged over the batch."""
    if len(logits) != len(features) or len(logits) < 2:
        raise ValueError(f"byot: {len(logits)} classifiers and {len(features)} features (>= 2)")
    z_c, f_c = logits[-1].float(), features[-1].detach().float()
    ce_deep = F.cross_entropy(z_c, targets)
    ce_aux = z_c.new_zeros(())
    kd = z_c.new_zeros(())
    feat = z_c.new_zeros(())
    for z_i, f_i in zip(logits[:-1], features[:-1]):
        if f_i.shape != f_c.shape:
            raise ValueError(f"byot: feature {tuple(f_i.shape)} vs deepest {tuple(f_c.shape)}")
        ce_aux = ce_aux + F.cross_entropy(z_i.float(), targets)
        kd = kd + kl_batchmean(z_i, z_c, temperature)
        feat = feat + (f_i.float() - f_c).pow(2).flatten(1).sum(dim=1).mean()
    total = ce_deep + (1.0 - alpha) * ce_aux + alpha * kd + feat_weight * feat
    terms = {"ce": ce_deep.detach(), "ce_aux": ce_aux.detach(), "kd": kd.detach()}
    terms["feat"] = feat.detach()
    return Loss(total, terms)
