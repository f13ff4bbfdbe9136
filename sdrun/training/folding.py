"""BatchNorm folded into the convolutions before it, checked on a probe batch.

Folding makes the frozen teacher's forward pass cheaper with the same outputs, as long as fx's
pattern matching holds; the check makes sure it did for the model at hand.
"""

from __future__ import annotations

import copy
import itertools
import logging
from typing import Optional

import torch
from torch import Tensor, nn

from sdrun.runfolder.runtime import exact_fp32

log = logging.getLogger(__name__)

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# The probe: a few fixed inputs are enough, since a wrong fold moves the logits by O(1) while a
# right one moves them by fp32 rounding (about 1e-6 of their size for the shipped nets).
PROBE_IMAGES = 4
FOLD_RTOL = 1e-3  # allowed max |folded - unfolded| logit difference, relative to max |logit|


def probe_batch(
    shape: tuple[int, ...], device: torch.device, memory_format: torch.memory_format
) -> Tensor:
    """PROBE_IMAGES fixed N(0, 1) inputs of one image's `shape` (normalised images are about
    that), from their own generator: the run's random stream is not touched."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((PROBE_IMAGES, *shape), generator=g).to(device)
    return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold eval-mode BatchNorm into the convolutions before it (a copy).

    Uses torch.fx; a model fx cannot trace is returned unfolded (still correct, a bit slower).
    fx's `fuse` swaps a conv module for its folded copy everywhere, so a conv called twice runs
    its second call with the folded weights too: check the result (`fold_checked`).
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval(), inplace=False)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: keep the plain model
        log.info(
            "teacher: BN not folded (%s: %s); using the plain snapshot", type(err).__name__, err
        )
        return copy.deepcopy(model)


def fold_checked(model: nn.Module, probe: Optional[Tensor]) -> tuple[nn.Module, bool]:
    """(`model` with BN folded, True) if folding leaves its logits on `probe` unchanged, else
    (`model`, False). Compared in fp32 without TF32, so the tolerance is fp32 rounding's.

    SyncBatchNorm (trainer.sync_bn) is first turned back into the plain BatchNorm fx folds
    (`model` is changed in place: same buffers, same eval outputs). Without a probe nothing can
    be checked and `model` is kept unfolded.
    """
    if not any(isinstance(m, BATCHNORMS) for m in model.modules()):
        return model, False
    if probe is None:
        log.info("teacher: BN not folded (no input shape to check the fold with)")
        return model, False
    with torch.no_grad(), exact_fp32():
        try:
            expected, dims = _run_recording_syncbn_inputs(model, probe)
        except Exception as err:  # noqa: BLE001 - e.g. a pretrained_cfg input size the net rejects
            log.info("teacher: BN not folded (the probe batch of shape %s failed: %s: %s)",
                     tuple(probe.shape), type(err).__name__, err)  # fmt: skip
            return model, False
        revert_sync_batchnorm(model, dims)
        folded = fold_batchnorm(model)
        if _count(folded, BATCHNORMS) == _count(model, BATCHNORMS):
            return model, False  # nothing was folded (or fx could not trace it)
        got = folded(probe)
    error = (got.float() - expected.float()).abs().max().item()
    scale = max(expected.float().abs().max().item(), 1.0)
    if not error <= FOLD_RTOL * scale:  # also catches NaN
        log.warning(
            "teacher: folding BN changed the logits on a probe batch (max difference %.3g, "
            "max |logit| %.3g: a conv or BN is used more than once); using the unfolded snapshot",
            error,
            scale,
        )
        return model, False
    return folded, True


def revert_sync_batchnorm(model: nn.Module, input_dims: dict[nn.Module, int]) -> nn.Module:
    """Replace each SyncBatchNorm in `input_dims` (in place) by the BatchNorm1d/2d/3d its input's
    rank calls for. torch has `convert_sync_batchnorm` but no inverse, and fx folds only the
    plain classes; in eval mode they compute the same (SyncBatchNorm only syncs in training)."""
    plain: dict[nn.Module, nn.Module] = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if name and module in input_dims:
            if module not in plain:  # a shared module stays shared
                plain[module] = _plain_batchnorm(module, input_dims[module])
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, plain[module])
    return model


def _plain_batchnorm(sync: nn.SyncBatchNorm, input_dim: int) -> nn.Module:
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[input_dim]
    bn = cls(sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats)
    tensors = itertools.chain(sync.parameters(), sync.buffers())
    bn.to(next(tensors).device).load_state_dict(sync.state_dict())
    bn.train(sync.training)
    return bn.requires_grad_(False)


def _run_recording_syncbn_inputs(
    model: nn.Module, x: Tensor
) -> tuple[Tensor, dict[nn.Module, int]]:
    """model(x), and the rank of each SyncBatchNorm's input in that pass."""
    dims: dict[nn.Module, int] = {}

    def record(module: nn.Module, args: tuple) -> None:
        dims[module] = args[0].dim()

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, nn.SyncBatchNorm)]  # fmt: skip
    try:
        return model(x), dims
    finally:
        for hook in hooks:
            hook.remove()


def _count(model: nn.Module, types: tuple[type, ...]) -> int:
    return sum(isinstance(m, types) for m in model.modules())
