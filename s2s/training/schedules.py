"""Schedules: pure functions of the training step.

The learning rate for the update made at ``step`` (0-based count of updates already
done) and the teacher-forcing probability of scheduled sampling. No state lives here:
the one stateful piece, the plateau decay, keeps its current level in the trainer's
progress record and passes it in as ``base``.
"""

from __future__ import annotations

import math

from s2s.config import LR_SCHEDULES, SAMPLING_DECAYS


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up (Goyal et al. 2017): 1/W, 2/W, ... 1 over the first W updates."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


def learning_rate(
    step: int,
    *,
    schedule: str,
    base: float,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
    decay_start: int = 0,
    decay_steps: int = 0,
    factor: float = 0.5,
    gamma: float = 1.0,
    step_size: int = 1,
) -> float:
    """Learning rate for the update made at ``step``.

    - ``plateau`` and ``constant``: ``base`` (the plateau decay lowers ``base`` itself).
    - ``exponential``: ``base * gamma ** (step - decay_start)`` after ``decay_start``.
    - ``linear``: from ``base`` at ``decay_start`` down to ``min_lr`` over ``decay_steps``.
    - ``step``: ``base * factor ** k`` after ``k`` whole periods of ``step_size`` past
      ``decay_start``.
    - ``cyclic``: triangular between ``min_lr`` and ``base``, half-cycle ``step_size``
      (Smith 2017, "Cyclical learning rates for training neural networks").

    Decays never go below ``min_lr``; a linear warm-up multiplies any of them.
    """
    since = max(0, step - decay_start)
    if schedule in ("plateau", "constant"):
        lr = base
    elif schedule == "exponential":
        lr = max(min_lr, base * gamma**since)
    elif schedule == "linear":
        done = min(1.0, since / decay_steps) if decay_steps > 0 else 0.0
        lr = base - (base - min_lr) * done
    elif schedule == "step":
        lr = max(min_lr, base * factor ** (since // max(1, step_size)))
    elif schedule == "cyclic":
        position = step / max(1, step_size)  # half-cycles done
        cycle = math.floor(1 + position / 2)
        distance = abs(position - 2 * cycle + 1)  # 1 at a trough, 0 at the peak
        lr = min_lr + (base - min_lr) * max(0.0, 1.0 - distance)
    else:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose from {LR_SCHEDULES}")
    return lr * warmup_factor(step, warmup_steps)


def teacher_forcing(
    step: int, *, decay: str, k: float = 1.0, c: float = 0.0, minimum: float = 0.0
) -> float:
    """Probability of feeding the true previous token (Bengio et al. 2015, §2.4).

    ``constant``: k; ``linear``: max(minimum, k - c*i); ``exponential``: k**i with k < 1;
    ``inverse_sigmoid``: k / (k + exp(i / k)) with k >= 1. Clipped to [0, 1].
    """
    if decay == "constant":
        eps = k
    elif decay == "linear":
        eps = max(minimum, k - c * step)
    elif decay == "exponential":
        eps = max(minimum, k**step)
    elif decay == "inverse_sigmoid":
        eps = max(minimum, k / (k + math.exp(min(step / k, 700.0))))
    else:
        raise ValueError(f"unknown sampling decay {decay!r}; choose from {SAMPLING_DECAYS}")
    return min(1.0, max(0.0, eps))


def configured_learning_rate(step: int, t, base: float) -> float:
    """``learning_rate`` with the schedule keys of a config's train section (both
    trainers name them alike); linear decay lasts until ``max_steps`` unless
    ``decay_steps`` says otherwise."""
    return learning_rate(
        step,
        schedule=t.lr_schedule,
        base=base,
        min_lr=t.min_lr,
        warmup_steps=t.warmup_steps,
        decay_start=t.decay_start,
        decay_steps=t.decay_steps or max(0, t.max_steps - t.decay_start),
        factor=t.lr_decay,
        gamma=t.lr_gamma,
        step_size=t.lr_step_size,
    )


def idle_schedule(t) -> str | None:
    """A warning where ``train.max_steps`` ends the run before the schedule does what it
    is set to: a warm-up that never reaches ``train.lr``, a decay that never starts."""
    if not t.max_steps:
        return None
    if t.warmup_steps >= t.max_steps:
        return (
            f"train.warmup_steps ({t.warmup_steps}) is not below train.max_steps "
            f"({t.max_steps}): the learning rate never reaches train.lr"
        )
    first_decay = {"exponential": 1, "linear": 1, "step": t.lr_step_size}.get(t.lr_schedule)
    if first_decay is not None and t.decay_start + first_decay > t.max_steps:
        return (
            f"train.lr_schedule {t.lr_schedule}: its decay starts after train.max_steps "
            f"({t.max_steps}; train.decay_start {t.decay_start}), so the learning rate "
            "never decays"
        )
    return None
