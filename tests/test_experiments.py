"""Every experiment preset composes, validates and builds its model; presets of one table
differ only in their method."""

import functools
from pathlib import Path

import pytest
import torch
from helpers import CONF
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import sdrun.models.densenet  # noqa: F401  (registers densenet_bc100 until models/ imports it)
from sdrun.commandline.overrides import CONFIG_PACKAGE
from sdrun.config import Config, flatten, validate
from sdrun.config_store import register_configs
from sdrun.models import build_model
from sdrun.runfolder.run_state import RUN_DEFINING
from sdrun.training.schedule import cycle_length_of

EXPERIMENTS = CONF / "experiment"
PRESETS = sorted(
    p.relative_to(EXPERIMENTS).with_suffix("").as_posix() for p in EXPERIMENTS.rglob("*.yaml")
)
CIFAR_MODELS = ["resnet20", "resnet32", "resnet56", "resnet110", "densenet_bc100"]
CIFAR_METHODS = [
    "sd",
    "cyclic",
    "cosine",
    "step",
    "kd",
    "ls",
    "tfkd",
    "pskd",
    "cskd",
    "dlb",
    "byot",
]
IMAGENET_MODELS = ["resnet101", "resnet152"]
# distill.name, schedule.name and whether the run has cycles, per method
METHODS = {
    "sd": ("sd", "sd", True),
    "cyclic": ("none", "sd", True),
    "cosine": ("none", "cosine", False),
    "step": ("none", "step", False),
    "kd": ("kd", "cosine", False),
    "ls": ("ls", "cosine", False),
    "tfkd": ("tfkd", "cosine", False),
    "pskd": ("pskd", "cosine", False),
    "cskd": ("cskd", "cosine", False),
    "dlb": ("dlb", "cosine", False),
    "byot": ("byot", "cosine", False),
}
NUM_CLASSES = {"cifar100": 100, "imagenet": 1000}


def compose_preset(name: str, *overrides: str, hydra: bool = False):
    register_configs()
    method = name.rsplit("/", 1)[-1].rsplit("_", 1)[-1]  # cifar100/resnet20_kd, method/kd
    extra = ["distill.teacher_checkpoint=some/run"] if method == "kd" else []
    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[f"+experiment={name}", *extra, *overrides],
            return_hydra_config=hydra,
        )


@functools.cache
def load(name: str, *overrides: str) -> Config:
    """The typed config of a preset (cached: several tests read the same presets; none
    changes what it gets)."""
    return OmegaConf.to_object(compose_preset(name, *overrides))


def test_the_documented_presets_exist():
    expected = {f"cifar100/{m}_{k}" for m in CIFAR_MODELS for k in CIFAR_METHODS}
    expected |= {
        f"imagenet/{m}_{k}" for m in IMAGENET_MODELS for k in ("sd", "cyclic", "cosine", "step")
    }
    expected |= {"sweep/temperature_x_cycle", "sweep/kd_weight_x_temperature"}
    assert expected <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes_validates_and_builds_its_model(name: str):
    cfg = load(name)
    assert isinstance(cfg, Config)
    validate(cfg)
    num_classes = NUM_CLASSES[cfg.dataset.name]
    assert meta_forward(cfg.model.name, num_classes, cfg.dataset.image_size) == (2, num_classes)


@functools.cache
def meta_forward(model_name: str, num_classes: int, image_size: int) -> tuple[int, ...]:
    """Build the model and run it on the meta device: shapes only, no memory, no compute."""
    with torch.device("meta"):
        model = build_model(model_name, num_classes)
        return tuple(model(torch.empty(2, 3, image_size, image_size)).shape)


@pytest.mark.parametrize("dataset,models,methods", [
    ("cifar100", CIFAR_MODELS, CIFAR_METHODS),
    ("imagenet", IMAGENET_MODELS, ["sd", "cyclic", "cosine", "step"]),
])  # fmt: skip
def test_presets_of_a_table_differ_only_in_their_method(dataset, models, methods):
    for model in models:
        shared = set()
        for method in methods:
            cfg = load(f"{dataset}/{model}_{method}")
            distill, schedule, cyclic = METHODS[method]
            assert (cfg.dataset.name, cfg.model.name) == (dataset, model)
            assert (cfg.distill.name, cfg.schedule.name) == (distill, schedule)
            assert (cycle_length_of(cfg.schedule) < cfg.schedule.epochs) == cyclic
            assert method in cfg.logger.tags
            # epochs, batch, optimizer, milestones: the same for every method of the table
            recipe = OmegaConf.to_yaml(OmegaConf.structured(cfg.optim))
            shared.add((cfg.schedule.epochs, cfg.dataset.batch_size, recipe,
                        tuple(cfg.schedule.milestones), cfg.schedule.lr_min))  # fmt: skip
        assert len(shared) == 1, shared


def test_the_cifar_recipe_is_the_documented_one():
    sd = load("cifar100/resnet56_sd")
    assert (sd.schedule.epochs, cycle_length_of(sd.schedule), sd.dataset.batch_size) == (
        240,
        60,
        128,
    )
    assert (sd.optim.lr, sd.optim.momentum, sd.optim.weight_decay) == (0.1, 0.9, 5e-4)
    assert (sd.distill.temperature, sd.distill.ce_weight, sd.distill.kd_weight) == (2.0, 1.0, 1.0)
    assert sd.distill.smooth == "teacher"
    step = load("cifar100/resnet56_step")
    assert [round(m * step.schedule.epochs) for m in step.schedule.milestones] == [150, 180, 210]
    imagenet = load("imagenet/resnet101_step")
    assert [round(m * 90) for m in imagenet.schedule.milestones] == [30, 60, 80]
    assert cycle_length_of(load("imagenet/resnet101_sd").schedule) == 30


def test_the_default_run_is_the_documented_resnet56_sd_recipe():
    """`make train` (sdrun dataset=cifar100 model=resnet56) trains what docs/REPRODUCE.md and the
    cifar100/resnet56_sd preset say, in every key but the preset's wandb tag."""
    register_configs()
    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        default = compose(config_name="config", overrides=["dataset=cifar100", "model=resnet56"])
    preset = compose_preset("cifar100/resnet56_sd")
    flat_default, flat_preset = (
        flatten(OmegaConf.to_container(c, resolve=True)) for c in (default, preset)
    )
    differ = {
        k: (flat_default.get(k), flat_preset.get(k))
        for k in set(flat_default) | set(flat_preset)
        if flat_default.get(k) != flat_preset.get(k)
    }
    assert set(differ) <= {"logger.tags"}, differ
    assert {k for k in differ if k.startswith(RUN_DEFINING)} == set()


def test_kd_presets_need_their_teacher():
    register_configs()
    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        cfg = OmegaConf.to_object(
            compose(config_name="config", overrides=["+experiment=cifar100/resnet20_kd"])
        )
    with pytest.raises(Exception, match="distill.teacher_checkpoint"):
        validate(cfg)


def test_command_line_overrides_win_over_a_preset():
    cfg = load("cifar100/resnet56_sd", "model=resnet20", "dataset=fake", "schedule.epochs=4",
               "schedule.cycle_length=2", "seed=3")  # fmt: skip
    assert (cfg.model.name, cfg.dataset.name, cfg.schedule.epochs, cfg.seed) == (
        "resnet20",
        "fake",
        4,
        3,
    )
    assert cfg.distill.name == "sd"


@pytest.mark.parametrize("name,axes", [
    ("sweep/temperature_x_cycle", {"distill.temperature", "schedule.cycle_length"}),
    ("sweep/kd_weight_x_temperature", {"distill.kd_weight", "distill.temperature"}),
])  # fmt: skip
def test_sweep_presets_sweep_two_values_that_all_validate(name: str, axes: set[str]):
    composed = compose_preset(name, hydra=True)
    params = OmegaConf.to_container(composed.hydra.sweeper.params)
    assert set(params) == axes
    # each job of the cross product is a valid run: its two values merged into the unresolved
    # config, as Hydra applies value overrides (an interpolated default gives way to them)
    base = compose_preset(name)
    (key_a, values_a), (key_b, values_b) = params.items()
    for a in str(values_a).split(","):
        for b in str(values_b).split(","):
            job = OmegaConf.merge(base, OmegaConf.from_dotlist([f"{key_a}={a}", f"{key_b}={b}"]))
            validate(OmegaConf.to_object(job))
    # the job number keeps every job's directory apart, whatever else is swept
    assert "${hydra.job.num}" in OmegaConf.to_container(composed.hydra.sweep)["subdir"]


def test_presets_are_package_global(tmp_path: Path):
    for path in EXPERIMENTS.rglob("*.yaml"):
        assert path.read_text().startswith("# @package _global_"), path
