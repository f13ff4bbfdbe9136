"""What a training batch is made of, between the loaders (sdrun/data/) and the training methods
(sdrun/methods/): the one hook through which a method asks the loaders for more than a shuffled
batch, and the `Batch` they yield, read by name. (Kept out of sdrun.data, whose package imports
torchvision: the methods, and so composing a config, need only this.)

Every training loader (the device-resident CIFAR and fake-data loader, sdrun/data/loader.py;
image folders, folder.py; VOC, sdrun/transfer/loader.py) takes a `Composition` and yields, per
epoch, batches of the shuffled order its sampler draws from (seed, epoch). The classification
loaders yield a `Batch` (evaluation batches hold images and labels only):

- `SHUFFLED` (the default): `images` and `labels`;
- `INDICES`: also `indices`, the int64 dataset index of each sample (its position in the
  training split the loader was built on, on the batch's device), so a method can keep
  per-sample state whatever the shuffling, the process or a resume;
- `SAME_CLASS`: also `partners` (`Partners`: images, labels, indices): for every sample of the
  batch, another training image of its class (`sdrun.data.partners`), with its own
  augmentation;
- `PREVIOUS_BATCH`: `partners` being this process's previous batch's samples under a second
  augmentation (the batch before the epoch's first is the previous epoch's last; the run's very
  first batch, epoch 1's, has none: zero partner rows). VOC's task loader adds the indices to
  its own batches: `(*batch, indices)`.

Partners are for image classification (the device-resident and image-folder loaders); VOC's
task loader refuses them.

The composition never changes which samples a batch holds first nor their augmentation: images,
labels and indices are bitwise those of `SHUFFLED` (partners are drawn from generators of their
own), resumed at a batch boundary by the sampler (`epoch(epoch, start=k)` skips the first k
batches without reading them) and sharded over torchrun processes as before (each sample once
per epoch over the ranks as a batch's own sample; partners come on top). Partners depend only on
(seed, epoch, position), so a resumed epoch gets the partners it would have had.

A method declares its composition as `Method.batches` (sdrun/methods/base.py); the runner
passes it to `build_loaders`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

from torch import Tensor

SAME_CLASS_PARTNERS = "same_class"
PREVIOUS_BATCH_PARTNERS = "previous_batch"
PARTNER_RULES = (SAME_CLASS_PARTNERS, PREVIOUS_BATCH_PARTNERS)


@dataclass(frozen=True)
class Composition:
    indices: bool = False  # yield each sample's dataset index (`Batch.indices`)
    partners: Optional[str] = None  # one of PARTNER_RULES: yield a partner for every sample

    def __post_init__(self) -> None:
        if self.partners is not None and (self.partners not in PARTNER_RULES or not self.indices):
            raise ValueError(f"bad composition {self}: partners come with indices")


SHUFFLED = Composition()
INDICES = Composition(indices=True)
SAME_CLASS = Composition(indices=True, partners=SAME_CLASS_PARTNERS)
PREVIOUS_BATCH = Composition(indices=True, partners=PREVIOUS_BATCH_PARTNERS)


# NamedTuples: built once per batch at the cost of a tuple, read by name in the methods' steps.
class Partners(NamedTuple):
    """A partner for every sample of a batch, row by row (`SAME_CLASS`, `PREVIOUS_BATCH`)."""

    images: Tensor
    labels: Tensor  # int64
    indices: Tensor  # int64 dataset indices


class Batch(NamedTuple):
    """One batch of a classification loader, on the device; what the composition did not ask
    for is None."""

    images: Tensor  # normalized, in the loader's dtype and memory format
    labels: Tensor  # int64
    indices: Optional[Tensor] = None  # int64 dataset indices (`INDICES` and the partners')
    partners: Optional[Partners] = None
