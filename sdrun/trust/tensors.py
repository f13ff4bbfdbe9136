"""Tensors read from a checkpoint, checked before anything uses them.

`torch.load(weights_only=True)` runs no code, but it rebuilds whatever tensors the file
describes: sparse, quantized and nested tensors, tensors on the `meta` device (no data at all),
and views whose sizes and strides the file chooses. A view of 4e9 rows with stride 0 over a
few KB of storage loads in microseconds and becomes 4 GB at its first copy, comparison or
reduction. So each tensor is checked from its metadata alone first (`tensor_problem`: plain
dense CPU tensor whose elements are exactly its stored bytes, each once), and only then read
(`nonfinite`, without allocating). `state_problem` and `optimizer_problem` compare a saved
state dict with the live object's own one (keys, shapes, dtypes) right before it is loaded.

Each problem is returned as words that start with the entry's quoted name, for the caller's
one-line error (which names the file and the fix).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Optional

import torch
from torch import Tensor, nn

# torch.load(weights_only=True) rebuilds parameters as nn.Parameter: both are plain tensors.
PLAIN = (Tensor, nn.Parameter)


def describe(t: Tensor) -> str:
    """A tensor's shape and dtype in words: `16x3x3x3 float32`, `scalar int64`."""
    shape = "x".join(map(str, t.shape)) or "scalar"
    return f"{shape} {str(t.dtype).removeprefix('torch.')}"


def tensor_problem(t: Tensor) -> Optional[str]:
    """What makes `t` unfit to use, from its metadata only (nothing is read or allocated), or
    None. A fit tensor is a plain strided CPU tensor whose elements lie in its storage, each
    once: dense (contiguous in some order of its dimensions, as channels_last weights are),
    neither overlapping (stride 0) nor reaching past its storage."""
    if type(t) not in PLAIN:
        return f"a {type(t).__name__}, not a plain tensor"
    if t.is_nested:
        return "a nested tensor"
    if t.layout != torch.strided:
        return f"a {str(t.layout).removeprefix('torch.')} tensor, not a dense one"
    if t.is_quantized:
        return "a quantized tensor"
    if t.device.type != "cpu":
        return f"a tensor on the {t.device.type} device (checkpoints are loaded onto the CPU)"
    if t.is_conj() or t.is_neg():
        return "a lazily conjugated or negated view"
    if not _dense(t):
        strides = ", ".join(map(str, t.stride()))
        return f"a {describe(t)} view with strides ({strides}) that repeats or skips elements"
    needed = (t.storage_offset() + t.numel()) * t.element_size()
    stored = t.untyped_storage().nbytes()
    if t.numel() and needed > stored:
        return f"a {describe(t)} tensor over {stored} stored bytes (it needs {needed})"
    return None


def _dense(t: Tensor) -> bool:
    """Whether `t`'s elements fill numel consecutive slots of its storage: its strides, sorted,
    are the running products of the sizes (dimensions of size 1 have any stride)."""
    if t.numel() == 0:
        return True
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def nonfinite(t: Tensor) -> bool:
    """Whether a tensor fit to use (`tensor_problem` is None) holds NaN or infinity. Its min and
    max are read in one pass, allocating nothing the size of the tensor (NaN propagates)."""
    if t.numel() == 0 or not (t.is_floating_point() or t.is_complex()):
        return False
    if t.is_complex():
        return nonfinite(torch.view_as_real(t))
    low, high = torch.aminmax(t.detach())
    return not (bool(torch.isfinite(low)) and bool(torch.isfinite(high)))


def tensors_in(tree: Any, prefix: str) -> Iterator[tuple[str, Tensor]]:
    """Every tensor in nested dicts, lists and tuples, with its dotted entry name."""
    stack = [(prefix, tree)]
    while stack:
        name, node = stack.pop()
        if isinstance(node, Tensor):
            yield name, node
        elif isinstance(node, Mapping):
            stack.extend((_join(name, k), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, (list, tuple)):
            stack.extend((_join(name, i), v) for i, v in reversed(list(enumerate(node))))


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def tree_problem(tree: Any, prefix: str) -> Optional[str]:
    """The first tensor in `tree` unfit to use (`tensor_problem`), named, or None."""
    for name, t in tensors_in(tree, prefix):
        problem = tensor_problem(t)
        if problem:
            return f"'{name}' is {problem}"
    return None


def nonfinite_entry(tree: Any, prefix: str) -> Optional[str]:
    """The name of the first tensor in `tree` that holds NaN or infinity, or None. Call it on
    trees that passed `tree_problem` only."""
    return next((name for name, t in tensors_in(tree, prefix) if nonfinite(t)), None)


def state_problem(
    saved: Any, live: Mapping[str, Any], prefix: str, exact: bool = True
) -> Optional[str]:
    """Why a saved state dict does not fit the live object whose `state_dict()` is `live`, or
    None: other keys (with `exact`; without, the keys `live` lacks are only checked as tensors
    by `tree_problem`), a tensor of another shape or dtype, a plain value of another type."""
    if not isinstance(saved, Mapping):
        return f"'{prefix}' is a {type(saved).__name__}, not a state dict"
    missing = [k for k in live if k not in saved]
    unknown = [k for k in saved if k not in live] if exact else []
    if missing:
        instead = f" and holds '{unknown[0]}' instead" if unknown else ""
        return f"'{prefix}' lacks '{missing[0]}'{instead} ({len(missing)} of this run's missing)"
    if unknown:
        return f"'{prefix}' holds '{unknown[0]}', which this run's {prefix} has not"
    for key, want in live.items():
        problem = _entry_problem(saved[key], want)
        if problem:
            return f"'{_join(prefix, key)}' is {problem}"
    return None


def _entry_problem(got: Any, want: Any) -> Optional[str]:
    if isinstance(want, Tensor):
        if not isinstance(got, Tensor):
            return f"a {type(got).__name__}, not a tensor"
        problem = tensor_problem(got)
        if problem:
            return problem
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"{describe(got)}, this run's is {describe(want)}"
        return None
    if type(got) is not type(want) and not (want is None or got is None):
        return f"of type {type(got).__name__}, this run's is of type {type(want).__name__}"
    return None


def optimizer_problem(saved: Any, optimizer: torch.optim.Optimizer) -> Optional[str]:
    """Why a saved optimizer state does not fit `optimizer` (built for this run, no step taken
    yet), or None: its parameter groups must list the same parameters, and each parameter's
    state hold tensors of that parameter's shape and dtype (momentum buffers, Adam's moments)
    or scalars (Adam's step count)."""
    live = optimizer.state_dict()
    if not isinstance(saved, Mapping) or not isinstance(saved.get("state"), Mapping):
        return "'optimizer' has no per-parameter 'state'"
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(live["param_groups"]):
        return f"'optimizer' does not hold {len(live['param_groups'])} parameter group(s)"
    params: dict[int, Tensor] = {}
    for i, (group, ours) in enumerate(zip(groups, optimizer.param_groups)):
        ids = live["param_groups"][i]["params"]
        if not isinstance(group, Mapping) or group.get("params") != ids:
            return f"'optimizer.param_groups.{i}' lists other parameters than this run's"
        problem = _group_problem(group, live["param_groups"][i])
        if problem:
            return f"'optimizer.param_groups.{i}.{problem}"
        params.update(zip(ids, ours["params"]))
    for key, state in saved["state"].items():
        if key not in params or not isinstance(state, Mapping):
            return f"'optimizer.state' has an entry {key!r} for no parameter of this run"
        for name, value in state.items():
            problem = _buffer_problem(value, params[key])
            if problem:
                return f"'optimizer.state.{key}.{name}' is {problem}"
    return None


# Group entries a resume may change: the LR is set at every step from the schedule, and how
# the update is computed (a GPU run resumed on the CPU) does not change what it computes.
FREE_GROUP_KEYS = frozenset({"params", "lr", "initial_lr", "foreach", "fused", "capturable",
                             "differentiable"})  # fmt: skip


def _group_problem(group: Mapping[str, Any], live: Mapping[str, Any]) -> Optional[str]:
    """Why a saved parameter group's settings are not this run's (the config the checkpoint
    must match made them: momentum, weight decay, ...), or None. Keys only one side has come
    from another torch version and are left to torch."""
    for key, value in group.items():
        if key in FREE_GROUP_KEYS or key not in live:
            continue
        if value != live[key] or type(value) is not type(live[key]):
            return f"{key}' is {value!r}, this run's is {live[key]!r}"
    lr = group.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr):
        return f"lr' is {lr!r}, not a finite number"
    return None


def _buffer_problem(value: Any, param: Tensor) -> Optional[str]:
    if not isinstance(value, Tensor):
        return None  # plain values (a step count in older torch): the group's own types
    problem = tensor_problem(value)
    if problem:
        return problem
    if value.dim() == 0:
        return None  # a scalar: Adam's step count
    if value.shape != param.shape or value.dtype != param.dtype:
        return f"{describe(value)}, its parameter is {describe(param)}"
    return None
