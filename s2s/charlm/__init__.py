"""Character / byte language models: the task (``task``), sampling (``generate``) and
probes (``probe``). ``train_lm(cfg, out)`` trains one with the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from s2s.charlm.task import LMTask
from s2s.config import LMConfig
from s2s.data.units import Units
from s2s.nn.charlm import CharLM, lm_from_payload
from s2s.training.checkpoint import load
from s2s.training.engine import Engine


class LMTrainer(Engine):
    """The engine set up to train ``cfg`` in ``out``; ``.task`` is the LM task."""

    def __init__(
        self,
        cfg: LMConfig,
        out: str | Path,
        *,
        force: bool = False,
        on_step: Callable[[dict], None] | None = None,
    ):
        super().__init__(LMTask(cfg), out, force=force, on_step=on_step)


def train_lm(
    cfg: LMConfig,
    out: str | Path,
    *,
    force: bool = False,
    on_step: Callable[[dict], None] | None = None,
) -> dict:
    """Train (or resume) a char LM; returns step, best_bits and the stop reason."""
    return LMTrainer(cfg, out, force=force, on_step=on_step).run()


def load_lm(path: str | Path) -> tuple[CharLM, Units, LMConfig]:
    """The model (eval mode), units and config of a char-LM checkpoint."""
    return lm_from_payload(load(path), path)
