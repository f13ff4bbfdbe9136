"""A device-resident loader: the whole split lives on the device as uint8, batches are
gathered, augmented (random crop + horizontal flip) and normalized there.

CIFAR is small enough that a DataLoader's workers, PIL and host-to-device copies only add
latency. All randomness for an epoch is drawn up front on the CPU from (seed, epoch), so a
resumed run replays the same batches without saved state, and CPU and CUDA runs agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from sdrun.batches import SAME_CLASS_PARTNERS, SHUFFLED, Batch, Composition, Partners
from sdrun.data.partners import (
    ClassMembers,
    partner_seed,
    previous_position,
    same_class_partners,
)
from sdrun.errors import ConfigError

Stat = Union[Sequence[float], Tensor]


def random_crop(x: Tensor, shifts: Tensor, pad: int) -> Tensor:
    """Crop each image of the zero-padded batch at its own offset, for the whole batch at once.

    `x` is (B, C, H, W); `shifts` is int64 (B, 2) of (dy, dx), each in [0, 2 * pad] (not
    checked: that would need a host sync). Offset (pad, pad) returns the image unchanged.
    """
    if pad == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = shifts[:, 0, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = shifts[:, 1, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def hflip(x: Tensor, mask: Tensor) -> Tensor:
    """Mirror left-right the images of (B, C, H, W) `x` where bool (B,) `mask` is set."""
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def normalize(x: Tensor, mean: Stat, std: Stat, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 (B, C, H, W) -> (x / 255 - mean) / std per channel, in `dtype`.

    Computed in float32 and cast last, so bf16/fp16 batches are rounded only once.
    """
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return ((x.float() / 255.0 - m) / s).to(dtype)


def epoch_seed(seed: int, epoch: int) -> int:
    """A generator seed from (seed, epoch) alone; hashed so nearby pairs do not collide."""
    digest = hashlib.sha256(f"sdrun-loader:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class DeviceLoader:
    """Batches of normalized images and int64 labels, from tensors kept on `device`.

    train=True: each epoch a fresh permutation, random crops (zero padding `pad`) and
    flips; only full batches. train=False: in order, unaugmented, the last batch may be
    short. With world_size > 1, rank r takes every world_size-th sample from position r:
    for training all ranks share one permutation and get shards of equal length (the
    remainder of N / world_size is left out that epoch); for eval the shards are disjoint
    and together cover every sample once. `composition` (training only): what a batch holds
    besides images and labels (sdrun/batches.py).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        mean: Stat,
        std: Stat,
        *,
        train: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        pad: int = 4,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        composition: Composition = SHUFFLED,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
        if batch_size <= 0 or pad < 0 or not 0 <= rank < world_size:
            raise ValueError(f"bad batch_size={batch_size}, pad={pad} or rank={rank}/{world_size}")
        self.device = torch.device(device)
        # Moved once; every epoch after this only indexes on the device.
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.pad = pad
        self.dtype = dtype
        self.channels_last = channels_last
        self.rank = rank
        self.world_size = world_size
        self.composition = composition
        same_class = train and composition.partners == SAME_CLASS_PARTNERS
        self._members = ClassMembers(labels) if same_class else None

        n = images.shape[0]
        if train:
            self._shard = n // world_size
            self._batches = self._shard // batch_size
            if self._batches == 0:
                raise ConfigError(
                    f"dataset.batch_size={batch_size} is larger than the training set "
                    f"({self._shard} images per rank); lower dataset.batch_size "
                    "or raise dataset.limit_train"
                )
        else:
            self._shard = len(range(rank, n, world_size))
            self._batches = -(-self._shard // batch_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self._batches

    @property
    def dataset_size(self) -> int:
        """Samples of the split this loader was built on (indices are 0..dataset_size-1)."""
        return self.images.shape[0]

    @property
    def num_samples(self) -> int:
        """Images this rank yields per epoch (for train, after dropping the partial batch)."""
        return self._batches * self.batch_size if self.train else self._shard

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Yield batches (images in `dtype`, int64 labels) on the device for epoch `epoch`, from
        batch `start` on (a resumed epoch: the earlier batches are not built at all); training
        batches also hold what `composition` asks for (the samples' indices, partners)."""
        return self._train_epoch(epoch, start) if self.train else self._eval_epoch(start)

    def _plan(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """This rank's sample indices, crop shifts and flips for the epoch, on the device.

        Drawn in full (same on every rank) on a CPU generator, then sharded: the draws do
        not depend on the device, and ranks cannot drift apart.
        """
        n = self.images.shape[0]
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        perm = torch.randperm(n, generator=g)
        shifts, flips = self._crops_and_flips(g)
        return perm[self._positions()].to(self.device), shifts, flips

    def _augmentation(self, epoch: int, what: str) -> tuple[Tensor, Tensor]:
        """Crop shifts and flips of this rank's positions from a generator of its own: the
        partners' augmentation, drawn apart from the batches' (`_plan`)."""
        g = torch.Generator().manual_seed(partner_seed(self.seed, epoch, what))
        return self._crops_and_flips(g)

    def _crops_and_flips(self, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Crop shifts and flips drawn from `g` for every position of an epoch, then this
        rank's, on the device."""
        n = self.images.shape[0]
        shifts = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        pos = self._positions()
        return shifts[pos].to(self.device), flips[pos].to(self.device)

    def _positions(self) -> Tensor:
        """This rank's positions in an epoch's permutation (the partial batch left out)."""
        used = self._batches * self.batch_size
        return torch.arange(self.rank, self._shard * self.world_size, self.world_size)[:used]

    def _train_epoch(self, epoch: int, start: int) -> Iterator[Batch]:
        index, shifts, flips = self._plan(epoch)
        partners = self._partners(epoch, index)
        indexed = self.composition.indices
        bs = self.batch_size
        for i in range(start, self._batches):
            sel = slice(i * bs, (i + 1) * bs)
            idx = index[sel]
            x = self._finish(
                hflip(random_crop(self.images[idx], shifts[sel], self.pad), flips[sel])
            )
            yield Batch(x, self.labels[idx], idx if indexed else None,
                        None if partners is None else partners(i))  # fmt: skip

    def _partners(self, epoch: int, index: Tensor) -> Optional[Callable[[int], Partners]]:
        """Batch i -> its partners under the composition, or None."""
        rule = self.composition.partners
        if rule is None:
            return None
        if rule == SAME_CLASS_PARTNERS:
            table = same_class_partners(self._members, self.seed, epoch).to(self.device)
            plan = (table[index], *self._augmentation(epoch, "same-class-view"))
            return lambda i: self._samples(
                plan, slice(i * self.batch_size, (i + 1) * self.batch_size)
            )
        plans = {epoch: (index, *self._augmentation(epoch, "second-view"))}

        def previous(i: int) -> Partners:
            where = previous_position(epoch, i, self._batches)
            if where is None:  # the run's first batch repeats nothing
                return self._samples(plans[epoch], slice(0, 0))
            e, j = where
            if e not in plans:  # an epoch's first batch repeats the previous epoch's last
                plans[e] = (self._plan(e)[0], *self._augmentation(e, "second-view"))
            return self._samples(plans[e], slice(j * self.batch_size, (j + 1) * self.batch_size))

        return previous

    def _samples(self, plan: tuple[Tensor, Tensor, Tensor], sel: slice) -> Partners:
        """The augmented samples at positions `sel` of a partner plan (dataset indices, crop
        shifts and flips per position)."""
        idx, shifts, flips = (t[sel] for t in plan)
        x = hflip(random_crop(self.images[idx], shifts, self.pad), flips)
        return Partners(self._finish(x), self.labels[idx], idx)

    def _eval_epoch(self, start: int) -> Iterator[Batch]:
        # Strided views, not gathers: eval needs no copy beyond normalization.
        images = self.images[self.rank :: self.world_size]
        labels = self.labels[self.rank :: self.world_size]
        bs = self.batch_size
        for i in range(start, self._batches):
            yield Batch(self._finish(images[i * bs : (i + 1) * bs]), labels[i * bs : (i + 1) * bs])

    def _finish(self, x: Tensor) -> Tensor:
        x = normalize(x, self.mean, self.std, self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
