"""Schedules are pure functions of the step, checked against their formulas."""

import math

import pytest

from s2s.config import LMTrainConfig, TrainConfig
from s2s.training.schedules import idle_schedule, learning_rate, teacher_forcing, warmup_factor


def lr(step, **kw):
    return learning_rate(step, base=kw.pop("base", 1.0), **kw)


def test_constant_and_plateau_return_the_base():
    for schedule in ("constant", "plateau"):
        assert lr(0, schedule=schedule) == 1.0
        assert lr(10_000, schedule=schedule, base=0.25) == 0.25


def test_linear_goes_from_base_to_floor_after_decay_start():
    kw = dict(schedule="linear", min_lr=0.1, decay_start=100, decay_steps=200)
    assert lr(0, **kw) == 1.0
    assert lr(100, **kw) == 1.0
    assert lr(200, **kw) == pytest.approx(1.0 - 0.9 * 0.5)
    assert lr(300, **kw) == pytest.approx(0.1)
    assert lr(10_000, **kw) == pytest.approx(0.1)


def test_exponential_per_step_with_floor():
    kw = dict(schedule="exponential", gamma=0.99, decay_start=10, min_lr=0.5)
    assert lr(10, **kw) == 1.0
    assert lr(30, **kw) == pytest.approx(0.99**20)
    assert lr(10_000, **kw) == 0.5


def test_step_decay():
    kw = dict(schedule="step", factor=0.2, step_size=100, min_lr=1e-4)
    assert [lr(s, **kw) for s in (0, 99, 100, 250)] == pytest.approx([1.0, 1.0, 0.2, 0.04])
    assert lr(10_000, **kw) == 1e-4


def test_cyclic_triangular():
    kw = dict(schedule="cyclic", min_lr=0.1, step_size=10)
    # Smith 2017: lr = min + (max - min) * max(0, 1 - |i/s - 2*floor(1 + i/2s) + 1|)
    for i in range(0, 60, 3):
        cycle = math.floor(1 + i / 20)
        x = abs(i / 10 - 2 * cycle + 1)
        assert lr(i, **kw) == pytest.approx(0.1 + 0.9 * max(0.0, 1 - x))
    assert lr(0, **kw) == pytest.approx(0.1) and lr(10, **kw) == pytest.approx(1.0)
    assert lr(20, **kw) == pytest.approx(0.1)


def test_warmup_multiplies_any_schedule():
    assert warmup_factor(0, 4) == 0.25 and warmup_factor(3, 4) == 1.0
    assert warmup_factor(100, 4) == 1.0 and warmup_factor(0, 0) == 1.0
    assert lr(1, schedule="constant", warmup_steps=4) == pytest.approx(0.5)
    kw = dict(schedule="step", factor=0.5, step_size=2, warmup_steps=4)
    assert lr(2, **kw) == pytest.approx(0.5 * 0.75)


def test_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        lr(0, schedule="cosine")


@pytest.mark.parametrize("i", [0, 1, 10, 500, 3000])
def test_teacher_forcing_decays_follow_bengio_et_al(i):
    assert teacher_forcing(i, decay="constant", k=0.7) == 0.7
    assert teacher_forcing(i, decay="linear", k=1.0, c=0.001, minimum=0.2) == pytest.approx(
        max(0.2, 1.0 - 0.001 * i)
    )
    assert teacher_forcing(i, decay="exponential", k=0.999) == pytest.approx(0.999**i)
    assert teacher_forcing(i, decay="inverse_sigmoid", k=400.0) == pytest.approx(
        400.0 / (400.0 + math.exp(i / 400.0))
    )


def test_teacher_forcing_is_clipped_and_checks_its_name():
    assert teacher_forcing(0, decay="linear", k=1.5, c=0.0) == 1.0
    assert teacher_forcing(10**6, decay="inverse_sigmoid", k=1.0) == pytest.approx(0.0, abs=1e-300)
    with pytest.raises(ValueError, match="unknown sampling decay"):
        teacher_forcing(0, decay="sigmoid")


@pytest.mark.parametrize(
    "train, warning",
    [
        ({"lr_schedule": "constant"}, None),
        ({"lr_schedule": "constant", "warmup_steps": 100}, "never reaches train.lr"),
        ({"lr_schedule": "constant", "warmup_steps": 99}, None),
        ({"lr_schedule": "exponential", "decay_start": 100}, "never decays"),
        ({"lr_schedule": "exponential", "decay_start": 99}, None),
        ({"lr_schedule": "linear", "decay_start": 100, "decay_steps": 50}, "never decays"),
        ({"lr_schedule": "step", "decay_start": 50, "lr_step_size": 60}, "never decays"),
        ({"lr_schedule": "step", "decay_start": 40, "lr_step_size": 60}, None),
        ({"lr_schedule": "cyclic", "decay_start": 500}, None),  # cycles from step 0
        ({"lr_schedule": "constant", "max_steps": 0, "warmup_steps": 10**6}, None),  # no end
    ],
)
def test_a_schedule_that_max_steps_cuts_short_is_named(train, warning):
    import dataclasses

    for section in (TrainConfig(), LMTrainConfig()):
        t = dataclasses.replace(section, **({"max_steps": 100} | train))
        found = idle_schedule(t)
        assert (found is None) if warning is None else (warning in found)
