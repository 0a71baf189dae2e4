"""What the engine reads from a task's ``train`` section, what it keeps between steps,
and when a run stops.

``Settings`` names every engine key with the value that turns it off; a task's config
section that lacks a key (the char LM has no ``ema_decay``, say) runs with that value,
so a key added to a section later takes effect without engine changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Settings:
    seed: int = 1
    device: str = "auto"
    threads: int = 0
    precision: str = "fp32"
    lr: float = 1e-3
    max_steps: int = 0
    max_epochs: int = 0
    max_minutes: float = 0.0
    clip_grad_norm: float = 0.0
    clip_grad_value: float = 0.0
    loss_norm: str = "tokens"
    accumulate: int = 1
    ema_decay: float = 0.0
    l1: float = 0.0
    max_norm: float = 0.0
    bad_step_lr_factor: float = 0.5
    max_bad_steps: int = 5
    diagnostics_every: int = 0
    update_ratio_band: tuple[float, float] = (1e-4, 1e-2)
    histograms_every: int = 0
    log_every: int = 100
    valid_every: int = 500
    save_every: int = 500
    keep_checkpoints: int = 0
    lr_schedule: str = "constant"
    lr_decay: float = 0.5
    patience: int = 2
    min_lr: float = 0.0
    stop_at_min_lr: bool = True
    early_stopping: int = 0

    @classmethod
    def of(cls, section) -> Settings:
        """The engine's keys of a config's ``train`` section (absent ones: off)."""
        names = [f.name for f in fields(cls)]
        return cls(**{n: getattr(section, n) for n in names if hasattr(section, n)})


@dataclass
class Progress:
    """Engine state that is not in the model or optimizer; saved in checkpoints."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # items of `epoch` already consumed
    lr: float = 0.0  # the current learning rate
    plateau_lr: float = 0.0  # the level set by plateau decays (0: train.lr)
    at_min_lr: bool = False  # a plateau came with the learning rate at train.min_lr
    best: float | None = None  # the best validation score so far
    bad_validations: int = 0  # since the last improvement or lr decay
    stale_validations: int = 0  # since the last improvement (early stopping)
    elapsed: float = 0.0  # training seconds over all sessions
    last_valid_step: int = -1
    bad_steps: int = 0  # consecutive updates skipped for NaN/Inf
    first_bad: str = ""  # where the first of them appeared

    @classmethod
    def from_state(cls, state: dict) -> Progress:
        """A saved progress, also as the trainers before the engine wrote it (their
        best score was ``best_bleu`` or ``best_bits``)."""
        state = dict(state)
        for old in ("best_bleu", "best_bits"):
            if old in state:
                value = state.pop(old)
                state["best"] = None if value in (-1.0, math.inf) else value
        return cls(**state)

    def improves(self, score: float, higher_is_better: bool) -> bool:
        if self.best is None:
            return True
        return score > self.best if higher_is_better else score < self.best


def stop_reason(s: Settings, p: Progress, metric: str, interrupted: bool) -> str | None:
    """Why training should stop now (None: go on)."""
    if s.max_steps and p.step >= s.max_steps:
        return f"reached train.max_steps ({s.max_steps})"
    if s.max_epochs and p.epoch >= s.max_epochs:
        return f"reached train.max_epochs ({s.max_epochs})"
    if s.early_stopping and p.stale_validations >= s.early_stopping:
        return f"no validation improvement in {s.early_stopping} validations"
    if s.max_minutes and p.elapsed >= 60 * s.max_minutes:
        return f"reached train.max_minutes ({s.max_minutes})"
    if s.stop_at_min_lr and p.at_min_lr:
        return f"validation {metric} stalled at train.min_lr ({s.min_lr})"
    if interrupted:
        return "interrupted"
    return None


def unbounded(s: Settings) -> str | None:
    """A warning for a run that only an interrupt can stop (None where a limit is set):
    no step, epoch or time limit, no early stopping, and no plateau schedule that stops
    at a positive train.min_lr."""
    if s.max_steps or s.max_epochs or s.max_minutes or s.early_stopping:
        return None
    if s.lr_schedule == "plateau" and s.stop_at_min_lr and s.min_lr > 0:
        return None
    return (
        "no stopping limit: train.max_steps, max_epochs, max_minutes and early_stopping "
        "are all 0 (and no plateau schedule stops at a positive train.min_lr), so this run "
        "goes on until interrupted (Ctrl-C saves a checkpoint and stops)"
    )
