"""The backbone a transfer run fine-tunes: where its weights come from and its feature maps.

`backbone=` is one of
- an sdrun run directory (its `checkpoints/last.pt`) or a checkpoint file: the student's
  weights, loaded with `weights_only=True` (a file that needs code to unpickle is refused)
  and checked to be exactly the run's architecture; the checkpoint's own config names the
  timm model, the pre-training data (whose normalisation is kept) and the method;
- `timm:<name>`: timm's pretrained weights (a reference point);
- `scratch:<name>`: random initialisation (the floor).

Feature maps come from timm's `features_only` wrapper, so any timm CNN (and the CIFAR nets,
which declare `feature_info`) works.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import timm
from timm.layers import freeze_batch_norm_2d
from torch import Tensor, nn

import sdrun.models  # noqa: F401  (registers the CIFAR nets in timm)
from sdrun.checkpoint import CHECKPOINT_DIR, LAST, load_weights, run_dir_of
from sdrun.config import flatten
from sdrun.data.cifar import SPECS as CIFAR_SPECS
from sdrun.data.folder import IMAGENET_MEAN, IMAGENET_STD
from sdrun.errors import CheckpointError, ConfigError
from sdrun.model_files import check_received_model
from sdrun.transfer.config import BACKBONE_FORMS

log = logging.getLogger(__name__)

Stats = tuple[float, float, float]
# Normalisation each sdrun dataset trains with (the fine-tuned net must see the same).
PRETRAINING_STATS: dict[str, tuple[Stats, Stats]] = {
    **{name: (spec.mean, spec.std) for name, spec in CIFAR_SPECS.items()},
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}


@dataclass
class Backbone:
    kind: str  # run | timm | scratch
    spec: str  # as given
    model: str  # timm architecture name
    method: str  # run: the report's method name (sd, cyclic, cosine, ...); else timm / scratch
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[Path] = None
    dataset: Optional[str] = None  # pre-training data of a run
    distill: Optional[str] = None
    seed: Optional[int] = None
    state: Optional[dict[str, Tensor]] = field(default=None, repr=False)  # a run's student

    def summary(self) -> dict[str, Any]:
        return {
            "backbone/source": str(self.checkpoint) if self.checkpoint else self.spec,
            "backbone/kind": self.kind,
            "backbone/model": self.model,
            "backbone/method": self.method,
            "backbone/dataset": self.dataset,
            "backbone/distill": self.distill,
            "backbone/seed": self.seed,
        }


def open_backbone(spec: str) -> Backbone:
    """Parse `backbone=`, check that it exists and load a run's weights (one-line errors)."""
    for kind in ("timm", "scratch"):
        if spec.startswith(f"{kind}:"):
            name = spec.split(":", 1)[1]
            _check_model(name, spec)
            if kind == "timm" and not timm.is_model_pretrained(name):
                raise ConfigError(
                    f"backbone={spec}: timm has no pretrained weights for {name!r}; "
                    f"use scratch:{name} or a model timm has weights for"
                )
            return Backbone(kind, spec, name, method=kind)
    return _open_run(spec)


def _check_model(name: str, spec: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ConfigError(
            f"backbone={spec}: {name!r} is not a timm model{hint}; see timm.list_models()"
        )


def _open_run(spec: str) -> Backbone:
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(f"backbone={spec}: no such file or directory; give {BACKBONE_FORMS}")
    checkpoint = path / CHECKPOINT_DIR / LAST if path.is_dir() else path
    if not checkpoint.is_file():
        raise CheckpointError(
            f"backbone={spec}: no checkpoint at {checkpoint}; point it at a run directory that "
            "finished at least one epoch, or at its checkpoints/*.pt"
        )
    payload = load_weights(checkpoint, "backbone")  # tensors and plain values only
    config = payload.get("config")
    state = payload.get("model")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"backbone: {checkpoint} has no 'model' weights and 'config'; it was not written by "
            "sdrun: use timm:<name> for timm weights, or an sdrun run's checkpoint"
        )
    flat = flatten(config)
    name = str(flat.get("model.name"))
    _check_model(name, spec)
    check_received_model(config.get("model"), f"backbone: {checkpoint}")  # timm reads no file
    return Backbone(
        kind="run",
        spec=spec,
        model=name,
        method=_method(checkpoint, flat),
        model_kwargs=dict(config.get("model", {}).get("kwargs") or {}),
        checkpoint=checkpoint.resolve(),
        dataset=flat.get("dataset.name"),
        distill=flat.get("distill.name"),
        seed=flat.get("seed"),
        state=state,
    )


def _method(checkpoint: Path, config: dict[str, Any]) -> str:
    """The report's name for how the run trained (sd, cyclic, cosine, step, born-again-gK)."""
    from sdrun.report.runs import Run, link_teachers

    run = Run(run_dir_of(checkpoint) or checkpoint, config, {}, [])
    link_teachers([run])
    return run.method


def create_features(
    backbone: Backbone, out_indices: Optional[list[int]], output_stride: Optional[int]
) -> nn.Module:
    """timm's features_only model of the backbone, holding its weights."""
    kwargs: dict[str, Any] = {**backbone.model_kwargs, "features_only": True}
    if out_indices is not None:
        kwargs["out_indices"] = tuple(out_indices)
    pretrained = backbone.kind == "timm"
    try:
        features = _create(backbone, kwargs, output_stride, pretrained)
    except (TypeError, AttributeError, AssertionError, RuntimeError, IndexError) as err:
        raise ConfigError(
            f"backbone={backbone.spec}: {backbone.model!r} gives no feature maps through timm "
            f"features_only ({_first_line(err)}); use a CNN backbone (e.g. a ResNet) or fix "
            "task.out_indices"
        ) from None
    except OSError as err:  # timm's weights not fetched: offline, no cache, hub errors
        if not pretrained:
            raise
        raise ConfigError(
            f"backbone={backbone.spec}: could not fetch timm's pretrained weights for "
            f"{backbone.model!r} ({type(err).__name__}: {_first_line(err)}); check the network "
            f"or the Hugging Face cache (HF_HOME), or use backbone=scratch:{backbone.model}"
        ) from None
    if not getattr(features, "feature_info", None):
        raise ConfigError(
            f"backbone={backbone.spec}: {backbone.model!r} declares no feature maps (timm "
            "feature_info); use a CNN backbone (e.g. a ResNet)"
        )
    if backbone.state is not None:
        load_student(features, backbone)
    return features


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _create(
    backbone: Backbone, kwargs: dict[str, Any], output_stride: Optional[int], pretrained: bool
) -> nn.Module:
    if output_stride is not None:
        try:
            return timm.create_model(
                backbone.model, pretrained=pretrained, output_stride=output_stride, **kwargs
            )
        except TypeError as err:
            if "output_stride" not in str(err):
                raise
            log.info("%s has no output_stride option: its own stride is kept", backbone.model)
    return timm.create_model(backbone.model, pretrained=pretrained, **kwargs)


def load_student(features: nn.Module, backbone: Backbone) -> None:
    """Copy the run's student weights into `features`, exactly.

    The checkpoint must hold every weight of the architecture without its classifier (built
    with num_classes=0 to know them) and nothing else but the classifier; `features` takes
    the weights of the levels it keeps.
    """
    state = backbone.state or {}
    where = f"backbone: {backbone.checkpoint}"
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{where}: 'model' entry {bad[0]!r} is not a tensor")
    body = timm.create_model(backbone.model, num_classes=0, **backbone.model_kwargs)
    expected = set(body.state_dict())
    classifier = body.pretrained_cfg.get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    missing = sorted(expected - set(state))
    head_keys = tuple(f"{h}." for h in heads)
    extra = sorted(k for k in set(state) - expected if not k.startswith(head_keys))
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has unexpected {extra[0]!r}"
        raise CheckpointError(
            f"{where} {what}: it is not a {backbone.model} student; use the run's own checkpoint"
        )
    wanted = features.state_dict()
    unknown = [k for k in wanted if k not in state]
    if unknown:
        raise CheckpointError(
            f"{where}: the features model of {backbone.model} names weights the checkpoint "
            f"does not ({unknown[0]!r}); this architecture cannot be loaded as a backbone"
        )
    try:
        features.load_state_dict({k: state[k] for k in wanted}, strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{where}: weights do not fit {backbone.model} ({first})") from None


def normalization(backbone: Backbone, features: nn.Module) -> tuple[Stats, Stats]:
    """The mean/std the backbone was trained with: its sdrun data set's, else timm's cfg."""
    if backbone.dataset in PRETRAINING_STATS:
        return PRETRAINING_STATS[backbone.dataset]
    cfg = getattr(features, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def freeze(features: nn.Module, levels: int, batch_norm: bool) -> nn.Module:
    """Freeze the modules up to feature level `levels - 1` and, if asked, every BatchNorm
    (statistics and affine: torchvision's FrozenBatchNorm2d, via timm); returns the module."""
    if batch_norm:
        features = freeze_batch_norm_2d(features)
    if levels <= 0:
        return features
    info = features.feature_info.info
    if levels > len(info):
        raise ConfigError(
            f"task.freeze_at={levels} but the backbone has {len(info)} feature levels; lower it"
        )
    path = info[levels - 1]["module"]  # e.g. layer1, blocks.1, stages.0
    modules = dict(features.named_modules())
    # timm's FeatureListNet flattens paths (stages.0 -> stages_0); other feature nets keep them
    target = next((n for n in (path, path.replace(".", "_")) if n in modules), None)
    if target is None:
        raise ConfigError(
            f"task.freeze_at={levels} is not supported for this backbone (no module {path!r} in "
            "its features model); set task.freeze_at=0"
        )
    # Everything before the level's module in registration order (the stem first), and the
    # module itself; not the container it sits in (EfficientNet's blocks hold every stage).
    reached = False
    for name, module in features.named_modules():
        inside = name == target or name.startswith(target + ".")
        if reached and not inside:
            break
        reached = reached or inside
        for parameter in module.parameters(recurse=False):  # the subtree's come in turn
            parameter.requires_grad_(False)
    return features
