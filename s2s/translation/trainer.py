"""The translation trainer: the engine set up with the translation task."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from s2s.config import Config
from s2s.training.engine import Engine
from s2s.translation.task import TranslationTask


class Trainer(Engine):
    """The engine set up to train ``cfg`` in the run folder ``out``; ``.task`` is the
    translation task, ``.run()`` trains."""

    def __init__(
        self,
        cfg: Config,
        out: str | Path,
        *,
        force: bool = False,
        on_step: Callable[[dict], None] | None = None,
    ):
        super().__init__(TranslationTask(cfg), out, force=force, on_step=on_step)


def train(
    cfg: Config,
    out: str | Path,
    *,
    force: bool = False,
    on_step: Callable[[dict], None] | None = None,
) -> dict:
    """Train (or resume) a translation model; returns step, best_bleu and the reason."""
    return Trainer(cfg, out, force=force, on_step=on_step).run()
