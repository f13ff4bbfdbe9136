"""Be Your Own Teacher's auxiliary classifiers (sdrun/methods/byot.py), and the module the loop
trains under byot: the student with those classifiers on its stages.

The stages are the model's timm `feature_info` entries: the first is the stem (no classifier),
the last the deepest stage, whose output the model's own head pools and classifies. Every stage
in between gets a branch (the bottleneck of luanyunteng/pytorch-be-your-own-teacher, the
reimplementation docs/SELFKD.md follows): 1x1 conv to C/4, BN, ReLU, k x k stride-k conv
(k = the deepest's reduction / the stage's, so the map shrinks to the deepest's size), BN,
ReLU, 1x1 conv to the deepest's C channels, BN, ReLU, global average pooling -> F_i (C values,
compared with the deepest's pooled output F_C), then a linear classifier.

The stage outputs are read with forward hooks on the student's own modules, so one call of the
student gives its logits and every stage's map, whatever the architecture, and DDP and
torch.compile see one ordinary module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional

from torch import Tensor, nn

from sdrun.errors import ConfigError


class Stage(NamedTuple):
    module: str  # the student's submodule whose output is the stage's map
    channels: int
    reduction: int  # input size / the map's size


class ByotOutput(NamedTuple):
    """Classifiers shallow to deep (the last is the student's own) and their features."""

    logits: list[Tensor]
    features: list[Tensor]


def stages_of(model: nn.Module) -> list[Stage]:
    """The model's feature_info stages: stem first, deepest last; refused in one line when there
    is no stage between the two to put a classifier on."""
    info: Any = getattr(model, "feature_info", None)
    info = getattr(info, "info", info)  # timm's FeatureInfo wraps the list of dicts
    entries = list(info) if isinstance(info, Sequence) else []
    if len(entries) < 3 or not all(isinstance(e, Mapping) for e in entries):
        raise ConfigError(
            f"distill=byot needs a model whose feature_info lists a stem, at least one stage and "
            f"the deepest stage; {model_name(model)} lists {len(entries)}: use a CNN that "
            "declares its stages (e.g. model=resnet20, resnet56, densenet_bc100)"
        )
    return [Stage(str(e["module"]), int(e["num_chs"]), int(e["reduction"])) for e in entries]


def model_name(model: nn.Module) -> str:
    """The timm architecture the model was built as, else its class."""
    cfg = getattr(model, "pretrained_cfg", None)
    name = cfg.get("architecture") if isinstance(cfg, Mapping) else None
    return repr(name) if name else type(model).__name__


class Branch(nn.Module):
    """One auxiliary classifier: a stage's map -> (logits, F_i)."""

    def __init__(self, stage: Stage, deepest: Stage, num_classes: int) -> None:
        super().__init__()
        k = deepest.reduction // stage.reduction
        if k < 1 or k * stage.reduction != deepest.reduction:
            raise ConfigError(
                f"distill=byot: stage {stage.module!r} (reduction {stage.reduction}) cannot be "
                f"pooled to the deepest stage's size (reduction {deepest.reduction}) by a "
                "strided conv; use a model whose stage reductions divide the deepest's"
            )
        mid = max(deepest.channels // 4, 1)
        self.bottleneck = nn.Sequential(
            *_conv_bn_relu(stage.channels, mid, 1),
            *_conv_bn_relu(mid, mid, k),
            *_conv_bn_relu(mid, deepest.channels, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.fc = nn.Linear(deepest.channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # as the CIFAR nets' own convs (cifar_base.py)
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.bottleneck(x)
        return self.fc(feature), feature


def _conv_bn_relu(in_chs: int, out_chs: int, k: int) -> list[nn.Module]:
    # No conv bias: the BN after it removes it. The BN keeps no running statistics: a branch
    # only ever runs in training mode (sdrun evaluates the student alone), and buffers each
    # process would update from its own shard would differ between processes under torchrun.
    return [
        nn.Conv2d(in_chs, out_chs, k, stride=k, bias=False),
        nn.BatchNorm2d(out_chs, track_running_stats=False),
        nn.ReLU(inplace=True),
    ]


class AuxiliaryHeads(nn.Module):
    """A branch per stage after the stem but the deepest (`heads.0` the shallowest)."""

    def __init__(self, stages: Sequence[Stage], num_classes: int) -> None:
        super().__init__()
        deepest = stages[-1]
        self.branches = nn.ModuleList(Branch(s, deepest, num_classes) for s in stages[1:-1])


class _Tap:
    """A forward hook keeping its module's output while armed (during a training forward
    only: evaluating the student must not hold on to its maps)."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.armed = False
        self.output: Optional[Tensor] = None

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if self.armed:
            self.output = output

    def take(self) -> Tensor:
        output, self.output, self.armed = self.output, None, False
        if output is None:
            raise RuntimeError(f"byot: the output of stage {self.module!r} was not seen")
        if output.dim() != 4:
            raise ConfigError(
                f"distill=byot needs (batch, channels, height, width) maps from the stages; "
                f"{self.module!r} gives {tuple(output.shape)}: use a CNN"
            )
        return output


class SelfTaught(nn.Module):
    """The student with its auxiliary heads: what the loop trains under byot. Its parameters
    are the student's (`student.*`, first, in the student's order) then the heads'."""

    def __init__(self, student: nn.Module, heads: AuxiliaryHeads, stages: Sequence[Stage]):
        super().__init__()
        self.student = student
        self.heads = heads
        self._taps = [_Tap(s.module) for s in stages[1:]]  # the deepest's too: F_C
        for tap in self._taps:
            _submodule(student, tap.module).register_forward_hook(tap)

    def no_weight_decay(self) -> set[str]:
        """The student's own no-decay names (timm's optimizer factory reads them), prefixed as
        they are named here."""
        own = getattr(self.student, "no_weight_decay", None)
        return {f"student.{name}" for name in own()} if callable(own) else set()

    def forward(self, x: Tensor) -> ByotOutput:
        for tap in self._taps:
            tap.armed = True
        logits = self.student(x)
        *maps, deepest = [tap.take() for tap in self._taps]
        outs = [branch(m) for branch, m in zip(self.heads.branches, maps)]
        pooled = deepest.mean(dim=(2, 3))  # F_C: the deepest map, globally average pooled
        return ByotOutput([z for z, _ in outs] + [logits], [f for _, f in outs] + [pooled])


def _submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ConfigError(
            f"distill=byot: {model_name(model)}'s feature_info names {name!r}, which is not one "
            "of its modules; use a model whose feature_info names its modules"
        ) from None
