"""The backbone a transfer run fine-tunes: where its weights come from and its feature maps.

`backbone=` is one of
- an sdrun run directory (its `checkpoints/last.pt`) or a checkpoint file: the student's
  weights, loaded with `weights_only=True` (a file that needs code to unpickle is refused)
  and checked to be exactly the run's architecture; the checkpoint's own config names the
  timm model, the pre-training data (whose normalisation is kept) and the method (a run that
  did not finish, and cycle checkpoints, are labelled as what they are: `pretraining`);
- a plain state_dict file with `backbone_model=<timm name>` naming its architecture;
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
from torch import Tensor, nn

import sdrun.models  # noqa: F401  (registers the CIFAR nets in timm)
from sdrun.commandline.model_files import check_received_model
from sdrun.config import flatten
from sdrun.data.cifar import SPECS as CIFAR_SPECS
from sdrun.data.fake import FAKE_MEAN, FAKE_STD
from sdrun.data.folder import IMAGENET_MEAN, IMAGENET_STD
from sdrun.errors import CheckpointError, ConfigError
from sdrun.runfolder.checkpoint import CHECKPOINT_DIR, LAST, load_weights
from sdrun.transfer.config import BACKBONE_FORMS
from sdrun.transfer.hub import cached_weights, offline_if_cached
from sdrun.transfer.pretraining import Pretraining, read_pretraining
from sdrun.trust.folder import check_folder

log = logging.getLogger(__name__)

Stats = tuple[float, float, float]
# Normalisation each sdrun dataset trains with (the fine-tuned net must see the same).
PRETRAINING_STATS: dict[str, tuple[Stats, Stats]] = {
    **{name: (spec.mean, spec.std) for name, spec in CIFAR_SPECS.items()},
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "fake": (FAKE_MEAN, FAKE_STD),
}


@dataclass
class Backbone:
    kind: str  # run | state_dict | timm | scratch
    spec: str  # as given
    model: str  # timm architecture name
    # run: the report's method name (sd, cyclic, cosine, ...) or what the checkpoint is
    # (sd@epoch3, cyclic@cycle1: see pretraining); else state_dict / timm / scratch
    method: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[Path] = None
    dataset: Optional[str] = None  # pre-training data of a run
    distill: Optional[str] = None
    seed: Optional[int] = None
    state: Optional[dict[str, Tensor]] = field(default=None, repr=False)  # a run's student
    pretraining: Optional[Pretraining] = None  # a run's: how far it trained, taught or not
    pretrained_file: Optional[str] = None  # timm's weights found in the Hugging Face cache

    def summary(self) -> dict[str, Any]:
        progress = self.pretraining.summary() if self.pretraining else {}
        return {
            **progress,
            "backbone/source": str(self.checkpoint) if self.checkpoint else self.spec,
            "backbone/kind": self.kind,
            "backbone/model": self.model,
            "backbone/method": self.method,
            "backbone/dataset": self.dataset,
            "backbone/distill": self.distill,
            "backbone/seed": self.seed,
        }


def open_backbone(
    spec: str, model: Optional[str] = None, allow_incomplete: bool = False
) -> Backbone:
    """Parse `backbone=`, check that it exists and load a run's weights (one-line errors).
    `model` (backbone_model=) names the architecture of a plain state_dict file;
    `allow_incomplete` accepts a run that did not finish (see `pretraining`)."""
    for kind in ("timm", "scratch"):
        if spec.startswith(f"{kind}:"):
            name = spec.split(":", 1)[1]
            if model is not None:
                raise ConfigError(
                    f"backbone_model={model} is for a plain state_dict file; backbone={spec} "
                    "names its model already: drop backbone_model"
                )
            _check_model(name, spec)
            if kind == "timm" and not timm.is_model_pretrained(name):
                raise ConfigError(
                    f"backbone={spec}: timm has no pretrained weights for {name!r}; "
                    f"use scratch:{name} or a model timm has weights for"
                )
            weights = cached_weights(name, spec) if kind == "timm" else None
            return Backbone(kind, spec, name, method=kind, pretrained_file=weights)
    return _open_run(spec, model, allow_incomplete)


def _check_model(name: str, spec: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ConfigError(
            f"backbone={spec}: {name!r} is not a timm model{hint}; see timm.list_models()"
        )


def _open_run(spec: str, model: Optional[str], allow_incomplete: bool) -> Backbone:
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(f"backbone={spec}: no such file or directory; give {BACKBONE_FORMS}")
    if path.is_dir():  # a run folder, maybe from elsewhere: it is read, so checked first
        check_folder(path, "backbone run folder")
    checkpoint = path / CHECKPOINT_DIR / LAST if path.is_dir() else path
    if not checkpoint.is_file():
        raise CheckpointError(
            f"backbone={spec}: no checkpoint at {checkpoint}; point it at a run directory that "
            "finished at least one epoch, or at its checkpoints/*.pt"
        )
    payload = load_weights(checkpoint, "backbone")  # tensors and plain values only
    if payload and all(isinstance(v, Tensor) for v in payload.values()):
        return _open_state_dict(spec, checkpoint, payload, model)
    config = payload.get("config")
    state = payload.get("model")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"backbone: {checkpoint} has no 'model' weights and 'config'; it was not written by "
            "sdrun: give an sdrun run's checkpoint, a plain state_dict (torch.save("
            "model.state_dict(), path)) with backbone_model=<timm name>, or timm:<name>"
        )
    flat = flatten(config)
    if "task.name" in flat and "backbone" in flat:
        raise ConfigError(
            f"backbone={spec} is an sdrun-transfer run (fine-tuned for {flat['task.name']}), "
            "not a pre-training run; give the sdrun run it fine-tuned "
            f"(its backbone={flat['backbone']}) or another sdrun run"
        )
    name = str(flat.get("model.name"))
    if model is not None:
        raise ConfigError(
            f"backbone_model={model} is for a plain state_dict file; {checkpoint} is an sdrun "
            f"checkpoint whose config names its model ({name}): drop backbone_model"
        )
    _check_model(name, spec)
    check_received_model(config.get("model"), f"backbone: {checkpoint}")  # timm reads no file
    pretraining = read_pretraining(spec, checkpoint, payload, flat, allow_incomplete)
    return Backbone(
        kind="run",
        spec=spec,
        model=name,
        method=pretraining.label,
        model_kwargs=dict(config.get("model", {}).get("kwargs") or {}),
        checkpoint=checkpoint.resolve(),
        dataset=flat.get("dataset.name"),
        distill=flat.get("distill.name"),
        seed=flat.get("seed"),
        state=state,
        pretraining=pretraining,
    )


def _open_state_dict(
    spec: str, checkpoint: Path, state: dict[str, Any], model: Optional[str]
) -> Backbone:
    """A plain state_dict (what the refusal of a pickled model advises saving): its model is
    `backbone_model`; its pre-training is unknown, its normalisation timm's pretrained_cfg."""
    if model is None:
        raise ConfigError(
            f"backbone={spec}: {checkpoint} is a plain state_dict without sdrun's config; name "
            "its timm architecture with backbone_model=<timm name> (e.g. backbone_model=resnet50)"
        )
    _check_model(model, f"{spec} backbone_model={model}")
    return Backbone("state_dict", spec, model, method="state_dict",
                    checkpoint=checkpoint.resolve(), state=state)  # fmt: skip


def create_features(
    backbone: Backbone, out_indices: Optional[list[int]], output_stride: Optional[int]
) -> nn.Module:
    """timm's features_only model of the backbone, holding its weights."""
    kwargs: dict[str, Any] = {**backbone.model_kwargs, "features_only": True}
    if out_indices is not None:
        kwargs["out_indices"] = tuple(out_indices)
    pretrained = backbone.kind == "timm"
    try:
        with offline_if_cached(backbone.pretrained_file):
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
    """The mean/std the backbone was trained with: its sdrun data set's (a run's), else timm's
    pretrained_cfg (timm weights; a plain state_dict, whose training is unknown)."""
    if backbone.kind == "run":
        if backbone.dataset not in PRETRAINING_STATS:
            raise ConfigError(
                f"backbone: {backbone.checkpoint} was trained on dataset {backbone.dataset!r}, "
                f"whose normalisation sdrun-transfer does not know ({', '.join(PRETRAINING_STATS)})"
            )
        return PRETRAINING_STATS[backbone.dataset]
    cfg = getattr(features, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
