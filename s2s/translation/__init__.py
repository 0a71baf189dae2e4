"""Translation: the task (``task``), its objective, scores, checkpoints and transfer
from char LMs. ``train(cfg, out)`` trains a model with the engine (``trainer``).

``Trainer`` and ``train`` load on first use, so that ``s2s translate``, which needs
only ``checkpoint``, starts without the engine, the task and sacrebleu."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from s2s.translation.trainer import Trainer, train

__all__ = ["Trainer", "train"]


def __getattr__(name: str):
    if name in __all__:
        from s2s.translation import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 's2s.translation' has no attribute {name!r}")
