"""The LR curve: peak at every cycle start, lr_min at every cycle end, exact restart steps."""

import math

import pytest
from test_config import compose_cfg

from sdrun.config import ScheduleConfig, validate
from sdrun.errors import ConfigError
from sdrun.training.schedule import CyclePlan, cosine, plan_from_config


def sd_plan(**kw) -> CyclePlan:
    args = dict(kind="sd", epochs=12, cycle_length=4, steps_per_epoch=5, peak=0.1, lr_min=0.001)
    args.update(kw)
    return CyclePlan(**args)


def test_peak_at_every_cycle_start_and_lr_min_at_every_cycle_end():
    plan = sd_plan()
    assert plan.num_cycles == 3
    assert plan.cycle_start_steps() == [0, 20, 40]
    for start in plan.cycle_start_steps():
        assert plan.lr_at(start) == pytest.approx(0.1, abs=1e-12)
        assert plan.lr_at(start + plan.cycle_steps - 1) == pytest.approx(0.001, abs=1e-12)


def test_lr_decreases_inside_a_cycle_and_restarts_only_at_cycle_starts():
    plan = sd_plan()
    lrs = [plan.lr_at(s) for s in range(plan.total_steps)]
    restarts = [s for s in range(1, len(lrs)) if lrs[s] > lrs[s - 1]]
    assert restarts == [20, 40]


def test_cosine_helper_endpoints_and_midpoint():
    assert cosine(0.0, 0.1, 0.001) == pytest.approx(0.1)
    assert cosine(0.5, 0.1, 0.001) == pytest.approx((0.1 + 0.001) / 2)
    assert cosine(1.0, 0.1, 0.001) == pytest.approx(0.001)


def test_cosine_matches_the_formula_at_every_step():
    plan = sd_plan(lr_min=0.0)
    T = plan.cycle_steps
    for s in range(plan.total_steps):
        t = s % T
        expected = 0.5 * 0.1 * (1 + math.cos(math.pi * t / (T - 1)))
        assert plan.lr_at(s) == pytest.approx(expected, abs=1e-12)


def test_warmup_rises_linearly_then_the_first_cycle_still_ends_at_lr_min():
    plan = sd_plan(warmup_epochs=1)
    warm = [plan.lr_at(s) for s in range(5)]
    assert all(b > a for a, b in zip(warm, warm[1:]))
    assert warm[0] == pytest.approx(0.1 / 6)
    assert plan.lr_at(5) == pytest.approx(0.1)  # cosine starts at the peak after warmup
    assert plan.lr_at(19) == pytest.approx(0.001)
    assert plan.lr_at(20) == pytest.approx(0.1)  # later cycles have no warmup
    assert plan.lr_at(21) < 0.1


def test_cycle_of_epoch_and_cycle_ends_are_one_based():
    plan = sd_plan()
    assert [plan.cycle_of_epoch(e) for e in range(1, 13)] == [1] * 4 + [2] * 4 + [3] * 4
    assert [e for e in range(1, 13) if plan.is_cycle_end(e)] == [4, 8, 12]


def test_cosine_schedule_is_one_cycle():
    cfg = ScheduleConfig(name="cosine", epochs=10, cycle_length=None, lr_min=0.0)
    plan = plan_from_config(cfg, peak_lr=0.2, steps_per_epoch=3)
    assert plan.num_cycles == 1
    assert plan.lr_at(0) == pytest.approx(0.2)
    assert plan.lr_at(29) == pytest.approx(0.0, abs=1e-12)
    lrs = [plan.lr_at(s) for s in range(30)]
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))


def test_step_schedule_decays_at_its_milestones():
    cfg = ScheduleConfig(
        name="step", epochs=8, cycle_length=None, milestones=[0.5, 0.75], gamma=0.1
    )
    plan = plan_from_config(cfg, peak_lr=0.1, steps_per_epoch=2)
    by_epoch = [plan.lr_at(e * 2) for e in range(8)]
    assert by_epoch == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    assert plan.num_cycles == 1


# ----------------------------------------------------------------------------- cycles by count


@pytest.mark.parametrize("overrides,length", [
    ([], 60),  # schedule=sd: 4 cycles of the 240 epochs
    (["schedule.cycles=8"], 30),
    (["schedule.cycle_length=40"], 40),  # either key alone: the other gives way
    (["schedule.epochs=200"], 50),
    (["schedule.cycles=2", "schedule.cycle_length=120"], 120),  # both, agreeing
    (["schedule=cosine", "distill=none"], 240),
])  # fmt: skip
def test_cycles_or_cycle_length_alone_sets_the_cycles(overrides: list[str], length: int):
    cfg = compose_cfg(*overrides)
    validate(cfg)
    plan = plan_from_config(cfg.schedule, 0.1, steps_per_epoch=3)
    assert plan.cycle_length == length and plan.num_cycles == cfg.schedule.epochs // length


@pytest.mark.parametrize("overrides,keys", [
    (["schedule.cycles=7"], ["schedule.cycles=7", "schedule.epochs=240"]),
    (["schedule.cycles=2", "schedule.cycle_length=60"],
     ["schedule.cycles=2", "schedule.cycle_length=60", "schedule.cycle_length=null"]),
    (["schedule.cycles=0"], ["schedule.cycles=0"]),
    (["schedule=cosine", "schedule.cycles=2"], ["schedule.cycles=2", "schedule=cosine"]),
])  # fmt: skip
def test_cycles_that_do_not_fit_are_one_line_naming_the_keys_and_the_fix(overrides, keys):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides))
    message = str(err.value)
    assert all(key in message for key in keys) and "\n" not in message
