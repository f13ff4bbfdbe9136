"""The partners a composition adds to each training sample (sdrun/batches.py), as
pure functions of (seed, epoch, labels), shared by the device-resident and the image-folder
loaders.

- Same class: every training sample gets, per epoch, another training sample of its class,
  drawn uniformly from the class without the sample itself (an only member of its class is
  its own partner). The draw is one uniform number per dataset index from a generator of
  (seed, epoch): the same on every process and after a resume, whatever the shuffling. Only
  the training split is drawn from, so with `dataset.val_split` no held-out image is a partner.
- Previous batch: the batch a step repeats is the one before it in this process's order
  (`previous_position`); the loaders give it a second augmentation.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import torch
from torch import Tensor


class ClassMembers:
    """The dataset indices of every class, for same-class draws (int64 labels 0..K-1)."""

    def __init__(self, labels: Tensor) -> None:
        labels = labels.detach().to("cpu", torch.int64)
        self.labels = labels
        self.members = torch.sort(labels, stable=True).indices  # class by class, ascending
        self.counts = torch.bincount(labels)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.rank = torch.empty_like(labels)  # each index's place among its class's members
        self.rank[self.members] = torch.arange(len(labels)) - self.starts[labels[self.members]]

    def partners(self, uniform: Tensor) -> Tensor:
        """Partner of every index i: member floor(u_i * (n_c - 1)) of its class c, counted
        without i itself (i when it is its class's only member). `uniform`: float64 in [0, 1)."""
        c = self.labels
        others = self.counts[c] - 1
        pick = torch.clamp((uniform * others).long(), max=torch.clamp(others - 1, min=0))
        pick = pick + (pick >= self.rank).long()  # skip the index itself
        pick = torch.where(others > 0, pick, self.rank)  # alone in its class: itself
        return self.members[self.starts[c] + pick]


def partner_seed(seed: int, epoch: int, what: str) -> int:
    """A generator seed for the partners of (seed, epoch); `what` keeps the partner draw and
    the partners' augmentation apart from the batches' own generators."""
    digest = hashlib.sha256(f"sdrun-partners:{what}:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def same_class_partners(members: ClassMembers, seed: int, epoch: int) -> Tensor:
    """This epoch's partner of every dataset index (int64, CPU)."""
    g = torch.Generator().manual_seed(partner_seed(seed, epoch, "same-class"))
    uniform = torch.rand(len(members.labels), generator=g, dtype=torch.float64)
    return members.partners(uniform)


def previous_position(epoch: int, batch: int, batches: int) -> Optional[tuple[int, int]]:
    """(epoch, batch) of the batch before batch `batch` of `epoch` (epochs count from 1, batches
    from 0, `batches` per epoch): the previous epoch's last for an epoch's first; None for the
    run's first batch."""
    if batch > 0:
        return epoch, batch - 1
    if epoch > 1:
        return epoch - 1, batches - 1
    return None
