"""What a training batch is made of: the one hook through which a training method asks the
loaders for more than a shuffled batch.

Every training loader (the device-resident CIFAR and fake-data loader, sdrun/data/loader.py;
image folders, folder.py; VOC, sdrun/transfer/loader.py) takes a `Composition` and yields, per
epoch, batches of the shuffled order its sampler draws from (seed, epoch):

- `SHUFFLED` (the default): `(images, labels)` as always;
- `INDICES`: `(images, labels, indices)`, `indices` the int64 dataset index of each sample
  (its position in the training split the loader was built on, on the batch's device), so a
  method can keep per-sample state whatever the shuffling, the process or a resume.

The composition changes only what is returned with a batch, never which samples it holds or
their augmentation: batches are bitwise those of `SHUFFLED`, resumed at a batch boundary by
the sampler (`epoch(epoch, start=k)` skips the first k batches without reading them) and
sharded over torchrun processes as before (each sample once per epoch over the ranks).
Compositions that regroup samples (same-class pairs, half of the previous batch) are to be
added here as further fields, implemented once per loader in its batch order.

A method declares its composition as `Method.batches` (sdrun/methods/base.py); the runner
passes it to `build_loaders`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Composition:
    indices: bool = False  # yield each sample's dataset index as the batch's third element


SHUFFLED = Composition()
INDICES = Composition(indices=True)
