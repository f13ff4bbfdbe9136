"""Every config composes into the typed schema; bad values fail validation naming the key."""

import importlib.resources
from pathlib import Path

import pytest
import yaml
from helpers import CONF, sdrun_here
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from sdrun.commandline.overrides import CONFIG_PACKAGE
from sdrun.config import Config, validate
from sdrun.config_store import register_configs
from sdrun.errors import ConfigError
from sdrun.methods import find_method, method_names

GROUPS = ["dataset", "model", "schedule", "distill", "optim", "trainer", "logger"]


def options(group: str) -> list[str]:
    """A group's options: its files in conf/, or for `distill` the registered methods."""
    if group == "distill":
        return sorted(method_names())
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(*overrides: str) -> Config:
    register_configs()
    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        dict_cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_object(dict_cfg)


def test_default_config_is_the_headline_experiment():
    cfg = compose_cfg()
    assert isinstance(cfg, Config)
    assert (cfg.dataset.name, cfg.model.name, cfg.schedule.name, cfg.distill.name) == (
        "cifar100",
        "resnet56",
        "sd",
        "sd",
    )
    validate(cfg)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_validates(group, option):
    extra = ["distill.teacher_checkpoint=some/run"] if (group, option) == ("distill", "kd") else []
    if group == "schedule" and option != "sd":
        extra = ["distill=none"]  # one cycle: SD would have no teacher (refused, tested below)
    cfg = compose_cfg(f"{group}={option}", *extra)
    validate(cfg)  # each method's own schedule (the family's cosine, sd's cycles) validates
    if group in ("dataset", "model", "schedule", "distill", "logger"):
        assert getattr(cfg, group).name == option


def test_each_group_has_its_documented_options():
    assert {"cifar100", "cifar10", "fake"} <= set(options("dataset"))
    assert {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110"} <= set(options("model"))
    assert set(options("schedule")) == {"sd", "cosine", "step"}
    assert set(options("distill")) == {
        "sd",
        "none",
        "kd",
        "ls",
        "tfkd",
        "cskd",
        "pskd",
        "dlb",
        "byot",
    }
    assert set(options("logger")) == {"wandb", "none"}


def test_a_misspelled_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_cfg("distill.temprature=3")


@pytest.mark.parametrize("method", sorted(method_names()))
def test_each_method_composes_exactly_its_own_settings(method: str):
    cfg = compose_cfg(f"distill={method}")
    assert type(cfg.distill) is find_method(method).settings
    assert cfg.distill == find_method(method).settings()  # its declared defaults


@pytest.mark.parametrize(("method", "key"), [("pskd", "temperature"), ("ls", "alpha_T"),
                                             ("none", "kd_weight"), ("sd", "eps")])  # fmt: skip
def test_a_key_the_method_lacks_is_refused_at_composition(method: str, key: str):
    with pytest.raises(ConfigCompositionException):
        compose_cfg(f"distill={method}", f"distill.{key}=1")


@pytest.mark.parametrize(("given", "schedule"), [
    (["distill=ls"], "cosine"), (["distill=pskd"], "cosine"), (["distill=sd"], "sd"),
    (["distill=none"], "sd"), (["distill=kd"], "sd"),  # the config's: none's cyclic control
    (["distill=ls", "schedule=sd"], "sd"), (["schedule=step", "distill=byot"], "step"),
    (["+experiment=method/cyclic"], "sd"), (["+experiment=cifar100/resnet20_ls"], "cosine"),
])  # fmt: skip
def test_a_method_brings_its_schedule_and_an_explicit_choice_wins(given: list, schedule: str):
    assert compose_cfg(*given).schedule.name == schedule


def test_a_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_cfg("schedule.epochs=ten")


BAD = [
    (["schedule.epochs=10", "schedule.cycle_length=3"], "schedule.cycle_length"),
    (["distill.temperature=0"], "distill.temperature"),
    (["distill.temperature=-1"], "distill.temperature"),
    (["distill.kd_weight=-0.5"], "distill.kd_weight"),
    (["distill.ce_weight=-1"], "distill.ce_weight"),
    (["optim.lr=-0.1"], "optim.lr"),
    (["optim.lr=0"], "optim.lr"),
    (["dataset.batch_size=0"], "dataset.batch_size"),
    (["dataset.name=svhn"], "dataset.name"),
    (["distill.smooth=student"], "distill.smooth"),
    (["trainer.amp=fp8"], "trainer.amp"),
    (["trainer.device=tpu"], "trainer.device"),
    (["trainer.compile_mode=fast"], "trainer.compile_mode"),
    (["trainer.teacher_precompute=-1"], "trainer.teacher_precompute"),
    (["dataset=imagenet", "trainer.teacher_precompute=1024"], "trainer.teacher_precompute"),
    (["distill=kd"], "distill.teacher_checkpoint"),
    (["schedule=cosine", "schedule.cycle_length=50"], "schedule.cycle_length"),
    (["schedule.warmup_epochs=60"], "schedule.warmup_epochs"),
    (["schedule=cosine"], "distill=sd with schedule=cosine"),
    (["schedule.cycles=1"], "distill=sd with schedule=sd and one cycle"),
    (["schedule=step", "schedule.milestones=[0.5,1.5]"], "schedule.milestones"),
    (["dataset.limit_train=0"], "dataset.limit_train"),
    (["dataset.val_split=-1"], "dataset.val_split"),
    (["schedule.cycles=7"], "schedule.cycles"),
    (["distill.name=tfkd"], "choose the method with distill=tfkd"),  # sd's settings, not tfkd's
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[k for _, k in BAD])
def test_bad_values_raise_one_line_naming_the_key(overrides, key):
    cfg = compose_cfg(*overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert key in message
    assert "\n" not in message


def test_the_config_package_is_the_top_level_conf_folder():
    """In a checkout (editable install) sdrun.conf is conf/ itself: edits there take effect."""
    assert Path(str(importlib.resources.files(CONFIG_PACKAGE))) == CONF


def test_effective_cycles_derive_the_cycles_as_the_runner_does():
    from sdrun.config import effective_cycles

    def cycles(**keys) -> tuple:
        flat = effective_cycles({f"schedule.{k}": v for k, v in keys.items()})
        return flat["schedule.cycles"], flat["schedule.cycle_length"]

    assert cycles(epochs=240, cycles=4, cycle_length=None) == (4, 60)
    assert cycles(epochs=240, cycles=None, cycle_length=60) == (4, 60)
    assert cycles(epochs=240, cycles="${sdrun_cycles:4,${.cycle_length}}", cycle_length=120) == (
        2, 120)  # fmt: skip
    assert cycles(epochs=240, cycles=None, cycle_length=None) == (1, 240)  # one cycle
    # keys that disagree were never a run sdrun made: compared as saved, not silently fixed
    assert cycles(epochs=240, cycles=3, cycle_length=60) == (3, 60)


@pytest.mark.parametrize(
    "given,cycles", [((), 4), (("schedule.cycle_length=60",), 4), (("schedule.cycles=8",), 8)]
)
def test_cfg_job_shows_the_number_of_cycles(given: tuple, cycles: int, tmp_path: Path):
    proc = sdrun_here("--cfg", "job", *given, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    schedule = yaml.safe_load(proc.stdout)["schedule"]
    assert schedule["cycles"] == cycles and schedule["epochs"] == 240


def test_the_config_imports_no_method():
    """config.py <-> methods/ was an import cycle (validate imported the registry inside a
    function): now each method's settings check themselves (`MethodSettings.check`)."""
    import ast

    import sdrun.config

    tree = ast.parse(Path(sdrun.config.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported and not any(m and m.startswith("sdrun.methods") for m in imported)
