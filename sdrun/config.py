"""Structured configs: the schema Hydra composes into, and the checks run before training.

The dataclasses are registered in Hydra's ConfigStore as `sdrun_schema`; `conf/config.yaml`
lists it first in its defaults, so every YAML file and command-line override is merged into
a typed node and a misspelled key fails at composition. The `distill` group is the chosen
training method's own settings (`MethodSettings`, one subclass per method in sdrun/methods/).
Value checks that types cannot express (ranges, combinations) live in `validate`, which raises
`ConfigError` naming the key; a method's settings check themselves (`MethodSettings.check`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from sdrun.checks import check_seed, choice, fraction, positive
from sdrun.errors import ConfigError
from sdrun.training.schedule import cycle_length_of, resolve_cycle_length

DATASETS = ("cifar100", "cifar10", "imagenet", "fake")
SCHEDULES = ("sd", "cosine", "step")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "bf16", "fp16", "off")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class MethodSettings:
    """The `distill` group: the training method `name` and its settings. Each method declares
    its own subclass (its keys, with its sources' defaults), registered as the group's option
    `distill=<name>` (sdrun/methods/registry.py), so a key the chosen method lacks is refused
    at composition; this base holds the name alone."""

    name: str = MISSING

    def check(self, cfg: Config) -> None:
        """Raise ConfigError for a value or combination the method cannot run (one line, with
        the fix). A method's settings extend it (`super().check(cfg)` first)."""
        declared = declared_name(type(self))
        if declared == MISSING:
            raise ConfigError(
                "distill holds no training method's settings; choose one with distill=<name> "
                "(sdrun --help lists them)"
            )
        if self.name != declared:
            raise ConfigError(
                f"distill.name={self.name!r} but distill holds {declared}'s settings; choose the "
                f"method with distill={self.name} (it brings its own settings), not distill.name"
            )


def declared_name(settings: type) -> Any:
    """The method name a settings class declares (the default of its `name` field)."""
    (name,) = [f for f in dataclasses.fields(settings) if f.name == "name"]
    return name.default


@dataclass
class DatasetConfig:
    name: str = "cifar100"
    root: str = "data"
    download: bool = True
    # Both global under torchrun: split over the processes (batch_size must divide; the eval
    # batch is rounded down, at least 1).
    batch_size: int = 128
    eval_batch_size: int = 1000
    limit_train: Optional[int] = None
    limit_test: Optional[int] = None
    # Training images held out as a validation set (class-balanced, the same ones in every run:
    # chosen by a fixed seed, not the run's); 0 trains on the whole training split.
    val_split: int = 0
    # `fake`: random images and labels of this shape (`image_size` is also imagenet's crop).
    num_classes: int = 100
    image_size: int = 32
    num_train: int = 50000
    num_test: int = 10000
    # `imagenet` (any ImageFolder tree): decoding workers per process, eval resize before crop.
    num_workers: int = 8
    eval_resize: int = 256


@dataclass
class ModelConfig:
    name: str = "resnet56"
    pretrained: bool = False
    # Extra keyword arguments for timm.create_model (e.g. drop_rate).
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    # The defaults are the CIFAR-100 recipe (conf/experiment/recipe/cifar100.yaml): 4 x 60 epochs.
    name: str = "sd"
    epochs: int = 240
    # Epochs per cycle, or the number of cycles (`cycles`): give one, the other is derived; both
    # null means one cycle of `epochs`. conf/schedule/sd.yaml defaults to 4 cycles unless
    # cycle_length is given (the `sdrun_cycles` resolver).
    cycle_length: Optional[int] = 60
    cycles: Optional[int] = None
    lr_min: float = 0.0
    warmup_epochs: int = 0
    # Only for `step`: LR x gamma at these fractions of `epochs` (epochs 150, 180, 210 of 240).
    milestones: list[float] = field(default_factory=lambda: [0.625, 0.75, 0.875])
    gamma: float = 0.1


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


@dataclass
class TrainerConfig:
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    # torch.compile mode: reduce-overhead captures CUDA graphs (small nets are launch-bound).
    compile_mode: str = "default"
    # 0: the teacher runs beside each step. N > 0: before each epoch the teacher predicts all of
    # the epoch's augmented batches, N images per forward (CIFAR/fake loaders only).
    teacher_precompute: int = 0
    deterministic: bool = False
    # Under torchrun: BatchNorm statistics over the global batch instead of each process's share.
    sync_bn: bool = False
    # Progress-bar refresh period in steps (each refresh reads the loss from the device).
    log_every: int = 50


@dataclass
class LoggerConfig:
    name: str = "wandb"
    mode: str = "offline"
    project: str = "sdrun"
    entity: Optional[str] = None
    # Added to the automatic tags (dataset, model, method).
    tags: list[str] = field(default_factory=list)
    # null: the Hydra sweep directory in a multirun (every job of a sweep or search in one
    # group), no group for a single run.
    group: Optional[str] = None
    # null: the method (sd, cyclic, cosine, step, kd).
    job_type: Optional[str] = None
    # null: model, method, the swept values and the seed.
    run_name: Optional[str] = None
    # Upload each cycle-end checkpoint (checkpoints/cycle<k>.pt) as a wandb model artifact.
    log_checkpoints: bool = False


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # conf/config.yaml's defaults choose a method (distill: sd), whose settings replace this.
    distill: MethodSettings = field(default_factory=MethodSettings)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    # A born-again chain's seed (generation k trains with its own `seed` derived from it):
    # recorded so that reports pair a chain with other methods on it. null: `seed`.
    root_seed: Optional[int] = None
    # A run directory or a checkpoint (.pt) to continue from.
    resume: Optional[str] = None


def register_schema() -> None:
    """Register the schema so `conf/config.yaml` can list it first in its defaults, and the
    resolver its schedule files use (sdrun/config_store.py registers the methods too)."""
    ConfigStore.instance().store(name="sdrun_schema", node=Config)
    OmegaConf.register_new_resolver("sdrun_cycles", default_cycles, replace=True)


def default_cycles(cycles: int, cycle_length: Optional[int], epochs: Any = None) -> Optional[int]:
    """`schedule.cycles: ${sdrun_cycles:4,${.cycle_length},${.epochs}}` in a config file: 4
    cycles unless the cycle length is given, so either key can be set alone on the command
    line; with a cycle length that divides the epochs, the count it makes (so `sdrun --cfg job`
    shows the number), else None (the cycle length's own check then names the problem)."""
    if cycle_length is None:
        return cycles
    whole = isinstance(epochs, int) and isinstance(cycle_length, int) and cycle_length > 0
    return epochs // cycle_length if whole and epochs % cycle_length == 0 else None


def validate(cfg: Config) -> None:
    """Check values and combinations the schema's types cannot; raise ConfigError on the first."""
    d, s, o, t = cfg.dataset, cfg.schedule, cfg.optim, cfg.trainer
    choice("dataset.name", d.name, DATASETS)
    positive("dataset.batch_size", d.batch_size)
    positive("dataset.eval_batch_size", d.eval_batch_size)
    for key in ("limit_train", "limit_test"):
        value = getattr(d, key)
        if value is not None:
            positive(f"dataset.{key}", value)
    positive("dataset.val_split", d.val_split, allow_zero=True)
    if d.name == "fake":
        positive("dataset.num_classes", d.num_classes)
        positive("dataset.image_size", d.image_size)
        positive("dataset.num_train", d.num_train)
        positive("dataset.num_test", d.num_test)
    if d.name == "imagenet":
        positive("dataset.image_size", d.image_size)
        positive("dataset.eval_resize", d.eval_resize)
        positive("dataset.num_workers", d.num_workers, allow_zero=True)
        if d.eval_resize < d.image_size:
            raise ConfigError(
                f"dataset.eval_resize={d.eval_resize} is smaller than dataset.image_size="
                f"{d.image_size}; the centre crop would pad; set eval_resize >= image_size"
            )

    choice("schedule.name", s.name, SCHEDULES)
    positive("schedule.epochs", s.epochs)
    positive("schedule.lr_min", s.lr_min, allow_zero=True)
    if s.lr_min > cfg.optim.lr:
        raise ConfigError(
            f"schedule.lr_min={s.lr_min} is above optim.lr={cfg.optim.lr}: the schedule would "
            "raise the rate; set schedule.lr_min <= optim.lr"
        )
    positive("schedule.warmup_epochs", s.warmup_epochs, allow_zero=True)
    cycle = cycle_length_of(s)
    if s.name in ("cosine", "step") and cycle != s.epochs:
        key = "schedule.cycle_length" if s.cycle_length is not None else "schedule.cycles"
        raise ConfigError(
            f"{key}={getattr(s, key.split('.')[1])} but schedule={s.name} has one cycle; "
            f"use schedule=sd for cycles or set {key}=null"
        )
    if s.warmup_epochs >= cycle:
        raise ConfigError(
            f"schedule.warmup_epochs={s.warmup_epochs} must be shorter than the first cycle "
            f"({cycle} epochs); lower schedule.warmup_epochs"
        )
    if s.name == "step":
        if not s.milestones or any(not 0 < m < 1 for m in s.milestones):
            raise ConfigError(
                f"schedule.milestones={list(s.milestones)} must be fractions of the run in (0, 1), "
                "e.g. [0.5,0.75]"
            )
        positive("schedule.gamma", s.gamma)

    cfg.distill.check(cfg)  # the method's own settings and what it refuses (sd: one cycle)

    validate_shared(o, t, cfg.logger)
    check_seed("seed", cfg.seed)
    check_seed("root_seed", cfg.root_seed)
    _check_model_kwargs(cfg.model.kwargs)
    choice("trainer.compile_mode", t.compile_mode, COMPILE_MODES)
    positive("trainer.teacher_precompute", t.teacher_precompute, allow_zero=True)
    if t.teacher_precompute and d.name == "imagenet":
        raise ConfigError(
            "trainer.teacher_precompute needs the device-resident loader (cifar10, cifar100, "
            "fake); with dataset=imagenet set trainer.teacher_precompute=0"
        )


def validate_shared(optim: OptimConfig, trainer: TrainerConfig, logger: LoggerConfig) -> None:
    """The checks of the groups sdrun-transfer shares with sdrun (optim, trainer, logger)."""
    positive("optim.lr", optim.lr)
    fraction("optim.momentum", optim.momentum)
    positive("optim.weight_decay", optim.weight_decay, allow_zero=True)
    if optim.nesterov and optim.momentum == 0:
        raise ConfigError(
            "optim.nesterov=true needs momentum, but optim.momentum=0; "
            "set optim.momentum > 0 or optim.nesterov=false"
        )
    choice("trainer.device", trainer.device, DEVICES)
    choice("trainer.amp", trainer.amp, AMP_MODES)
    positive("trainer.log_every", trainer.log_every)
    choice("logger.name", logger.name, ("wandb", "none"))
    choice("logger.mode", logger.mode, WANDB_MODES)


# timm's dropout-like rates: torch refuses them outside [0, 1] only once the model is built.
RATE_KWARGS = ("drop_rate", "drop_path_rate", "drop_block_rate", "attn_drop_rate", "proj_drop_rate")


def _check_model_kwargs(kwargs: dict[str, Any]) -> None:
    for key in RATE_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            fraction(f"model.kwargs.{key}", value)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys (`{"a": {"b": 1}}` -> `{"a.b": 1}`); lists become
    tuples so values can be compared and grouped."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def effective_cycles(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened config with `schedule.cycles` and `schedule.cycle_length` both set to what the
    run used (in place): `schedule.cycles=4` and `schedule.cycle_length=60` of 240 epochs are the
    same run, to a resume check and to a report's rows. A saved, unresolved
    `${sdrun_cycles:...}` (Hydra saves config.yaml unresolved) is read as its default count; a
    config saved before `schedule.cycles` existed gets it from its cycle length."""
    epochs, length = flat.get("schedule.epochs"), flat.get("schedule.cycle_length")
    cycles = flat.get("schedule.cycles")
    if isinstance(cycles, str):  # as the sdrun_cycles resolver reads it (default_cycles)
        found = re.fullmatch(r"\$\{sdrun_cycles:(\d+),.*\}", cycles)
        cycles = default_cycles(int(found.group(1)), length, epochs) if found else None
    if not isinstance(epochs, int):
        return flat
    try:
        length = resolve_cycle_length(epochs, length, cycles)  # the runner's own derivation
    except ConfigError:
        return flat  # not a config sdrun ran: compared as saved
    cycles = epochs // length
    flat["schedule.cycles"], flat["schedule.cycle_length"] = cycles, length
    return flat
