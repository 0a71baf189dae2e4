"""The interface between the training engine and a task (translation, char LM).

The engine (``s2s.training.engine``) owns everything two tasks would otherwise write
twice: the run folder, resume, signals, checkpoints, the loop, precision, gradient
accumulation, data parallelism, the learning rate, non-finite guards, weight
averaging, validation bookkeeping (best score, plateau, early stopping), metrics and
TensorBoard. A task owns what makes it that task; it hands the engine:

- ``prepare(run, payload)``: read the data, build the model on ``run.device`` (from the
  checkpoint ``payload`` when resuming) and return it;
- ``epoch(n)``: the items of epoch ``n`` (a sequence; the engine keeps the position);
  ``batch(item)``: one item as a batch on the device;
- ``loss(batch, step)``: the summed loss of a batch (a batch tells its ``n_tokens``
  and ``n_sequences``; the engine divides by those of all batches of an update, as
  ``train.loss_norm`` says);
- ``evaluate()``: the validation score and the fields of the validation record;
- ``state()`` / ``restore(payload)``: what the task adds to a checkpoint;
- ``after_update(applied)``, ``end_epoch()``, ``train_fields(step, loss)``,
  ``describe(fields)`` and ``row_normed()``: small hooks for carried state (kept only
  from an applied update), log records and max-norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch

from s2s.training.distributed import Context


@dataclass(frozen=True)
class Run:
    """Where a task is being trained: the run folder, device and process group."""

    out: Path
    device: torch.device
    dist: Context


class Task(Protocol):
    cfg: Any  # the run's config tree; its ``train`` section holds the engine's keys
    parse: Callable[[dict], Any]  # a config of the same type from a plain dict
    kind: str  # the payload's "kind" (checkpoints say which task wrote them)
    metric: str  # the validation score's name in messages, e.g. "BLEU"
    metric_key: str  # ... and in records and results, e.g. "bleu"
    higher_is_better: bool
    unit: str  # what the loss counts, in records: "tokens" / "units"

    def prepare(self, run: Run, payload: dict | None) -> torch.nn.Module: ...

    def epoch(self, epoch: int) -> Sequence: ...

    def batch(self, item: Any) -> Any: ...

    def loss(self, batch: Any, step: int) -> torch.Tensor: ...

    def evaluate(self) -> tuple[float, dict]: ...

    def state(self) -> dict: ...

    def restore(self, payload: dict) -> None: ...

    def after_update(self, applied: bool) -> None: ...

    def end_epoch(self) -> None: ...

    def train_fields(self, step: int, loss: float) -> dict: ...

    def describe(self, fields: dict) -> str: ...

    def row_normed(self) -> list[torch.Tensor]: ...
