"""One optimizer update: how batches become a step of the weights.

Gradient accumulation over micro-batches, the loss divided by the units of all
batches of the update (over all ranks), mixed precision (autocast, and fp16 loss
scaling), the L1 penalty, summing gradients across data-parallel ranks, clipping by
value and by norm, the non-finite guard (which names where a NaN/Inf first appeared),
the optimizer step, max-norm rows, the moving average of the weights, and the
update-ratio and histogram diagnostics.
"""

from __future__ import annotations

import gc
import logging
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch

from s2s.runtime import resolve_precision
from s2s.training import distributed
from s2s.training.diagnostics import (
    first_nonfinite_module,
    nonfinite_gradients,
    record_activations,
    snapshot,
    update_ratios,
)
from s2s.training.progress import Settings
from s2s.training.task import Task

log = logging.getLogger(__name__)

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Outcome:
    """What an update did: its summed loss and target tokens, and where a non-finite
    value first appeared (None: applied, or an fp16 overflow skipped it)."""

    loss: float
    tokens: int
    nonfinite: str | None = None
    applied: bool = True  # False: skipped (a non-finite value or an fp16 overflow)


class TaskLoss(torch.nn.Module):
    """The task's loss as a module that holds the model, so that
    DistributedDataParallel can wrap it: the engine does not know the task's forward
    pass, only that ``task.loss`` runs it."""

    def __init__(self, task: Task, model: torch.nn.Module):
        super().__init__()
        self.task, self.model = task, model

    def forward(self, batch: Any, step: int) -> torch.Tensor:
        return self.task.loss(batch, step)


class Updater:
    """Owns the optimizer-side state of a run: optimizer, loss scaler, weight average."""

    def __init__(
        self,
        task: Task,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: Settings,
        device: torch.device,
        dist: distributed.Context,
        emit: Callable[[dict], None],
    ):
        self.task, self.model, self.optimizer = task, model, optimizer
        self.s, self.device, self.dist, self.emit = settings, device, dist, emit
        self.precision = resolve_precision(settings.precision, device)
        if settings.precision == "auto":
            log.info("train.precision=auto: %s on %s", self.precision, device)
        if self.precision == "fp16" and device.type == "cpu":
            log.warning(
                "train.precision=fp16 on the CPU: it runs, but is meant for GPUs (on most "
                "CPUs slower than fp32); bf16 or auto is the CPU's mixed precision"
            )
        self.amp_dtype = AMP_DTYPES[self.precision]
        # fp16 needs loss scaling (its range is narrow); bf16 has float32's range
        self.scaler = None
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler(device.type)
            # set its scale up now: a data-parallel rank whose first update has no batch
            # never scales a loss, yet must unscale
            self.scaler.scale(torch.zeros((), device=device))
        self.ema = None
        if settings.ema_decay > 0:
            self.ema = [p.detach().clone() for p in self.unique_params()]
        self.writer: Any = None  # TensorBoard, set by the engine on rank 0
        self.ddp = distributed.wrap(dist, TaskLoss(task, model), device)

    def close(self) -> None:
        """Drop the DDP wrapper: it holds the process group, whose Gloo threads would
        otherwise outlive destroy_process_group() into interpreter shutdown."""
        if self.ddp is not None:
            self.ddp = None
            gc.collect()

    def unique_params(self) -> list[torch.Tensor]:
        return list(self.model.parameters())  # tied weights appear once

    # ------------------------------------------------------------------ weight average
    def update_ema(self, step: int) -> None:
        decay = min(self.s.ema_decay, (1 + step) / (10 + step))
        params = [p.detach() for p in self.unique_params()]
        torch._foreach_lerp_(self.ema, params, 1.0 - decay)

    @contextmanager
    def averaged_weights(self):
        """Inside: the model holds the moving average of its weights (if kept)."""
        if self.ema is None:
            yield
            return
        params = self.unique_params()
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, self.ema):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)

    # ------------------------------------------------------------------ one update
    def autocast(self):
        """train.precision: the forward pass under autocast (float32 weights kept)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def __call__(self, micro: list, step: int, ghost: bool = False) -> Outcome:
        """One optimizer update from ``micro`` batches (gradient accumulation); ``step``
        is the number of updates before this one. ``ghost``: this rank has no batch of
        its own in this update; ``micro`` holds one that it runs at weight zero, so that
        it still takes part in the gradient all-reduce."""
        s = self.s
        histograms = bool(s.histograms_every) and (step + 1) % s.histograms_every == 0
        histograms = histograms and self.dist.main
        self.optimizer.zero_grad(set_to_none=True)
        summed, tokens = self._accumulate(micro, step, histograms, ghost)
        if self.dist.active:
            summed, tokens = distributed.sum_floats(self.dist, [float(summed), tokens], self.device)
            summed, tokens = torch.tensor(summed, dtype=torch.float64), int(tokens)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clipping and the checks see true gradients
        params = [q for q in self.model.parameters() if q.grad is not None]
        finite = True
        if s.clip_grad_value > 0:  # checked first: clipping by value turns inf into v
            finite = bool(torch.stack([q.grad.isfinite().all() for q in params]).all())
            if finite:
                torch.nn.utils.clip_grad_value_(params, s.clip_grad_value)
        total, norm = self._clip_norm(params, summed, in_step=not histograms)
        if not (finite and math.isfinite(total) and math.isfinite(norm)):
            self.optimizer.grad_scale = None  # no step: clipping's factor is not kept
            return self._nonfinite(micro, step, total, tokens)
        if histograms:
            self._histograms(step + 1)
        diagnose = bool(s.diagnostics_every) and (step + 1) % s.diagnostics_every == 0
        before = snapshot(self.model) if diagnose else None
        self._step(step)
        if before is not None:
            self._report_update_ratios(before, float(norm), step + 1)
        return Outcome(total, tokens)

    def _clip_norm(
        self, params: list, summed: torch.Tensor, in_step: bool = False
    ) -> tuple[float, float]:
        """``clip_grad_norm_`` by ``train.clip_grad_norm``, and the summed loss and the
        gradients' norm as floats, read in one host-device synchronisation. The factor
        is applied only where it is below 1 (``clip_grad_norm_`` multiplies every
        gradient by 1 otherwise: a pass over all of them per update), and not where the
        norm is not finite (the gradients stay as they were for the guard to name).
        ``in_step``: where the optimizer is PyTorch's fused Adam (no loss scaler), the
        gradients are divided by 1 / factor inside its step instead (its ``grad_scale``,
        which it also writes back into them): one pass over them fewer per update."""
        norm = torch.nn.utils.get_total_norm([q.grad for q in params])
        limit = self.s.clip_grad_norm
        factor = limit / (norm + 1e-6) if limit else torch.ones_like(norm)  # as clip_grad_norm_
        found = torch.stack([summed.to(norm.device), norm.double(), factor.double()])
        total, value, below = found.tolist()
        if below < 1.0 and math.isfinite(value):
            if in_step and self.scaler is None and _fused(self.optimizer):
                self.optimizer.grad_scale = ((norm + 1e-6) / limit).float()
            else:
                torch.nn.utils.clip_grads_with_norm_(params, limit, norm)
        return total, value

    def _accumulate(
        self, micro: list, step: int, histograms: bool, ghost: bool = False
    ) -> tuple[torch.Tensor, int]:
        """Forward and backward passes of the micro-batches, each loss divided by the
        units of the whole update (of all ranks): the summed gradients are a mean.
        Data parallel: DistributedDataParallel all-reduces the gradients during the
        last micro-batch's backward pass (``no_sync`` before it); it averages over
        ranks, so each rank's loss is scaled by the number of ranks to make it a sum."""
        per = "n_tokens" if self.s.loss_norm == "tokens" else "n_sequences"
        units = 0 if ghost else sum(getattr(batch, per) for batch in micro)
        # data parallel: normalise by the units of all ranks' batches
        units = distributed.sum_floats(self.dist, [units], self.device)[0]
        losses, tokens = [], 0
        for k, batch in enumerate(micro):
            last = k == len(micro) - 1
            watch = histograms and k == 0
            sync = self.ddp.no_sync() if self.ddp is not None and not last else nullcontext()
            with sync, record_activations(self.model) if watch else nullcontext() as acts:
                with self.autocast():
                    run = self.ddp if self.ddp is not None else self.task.loss
                    loss = run(batch, step)
                self.backward(self._objective(loss, units, ghost, last))
            if not ghost:
                losses.append(loss.detach().double())
                tokens += batch.n_tokens
            if watch:
                for name, value in acts.items():
                    self.writer.add_histogram(f"activations/{name}", value, step + 1)
        summed = torch.stack(losses).sum() if losses else torch.zeros((), dtype=torch.float64)
        return summed, tokens

    def _objective(self, loss: torch.Tensor, units: float, ghost: bool, last: bool):
        """What one micro-batch back-propagates: its share of the update's mean loss
        (times the ranks, which DDP's average divides out), the L1 penalty once."""
        if ghost:
            return loss * 0.0
        objective = (loss * self.dist.world if self.dist.active else loss) / units
        if last and self.s.l1 > 0 and self.dist.main:  # once, not once per rank
            penalty = sum(w.abs().sum() for w in self.model.parameters() if w.dim() >= 2)
            objective = objective + self.dist.world * self.s.l1 * penalty
        return objective

    def _step(self, step: int) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
            self.optimizer.grad_scale = None  # (clipping's, where _clip_norm set one)
        if self.s.max_norm > 0:
            with torch.no_grad():  # rows of embeddings and output layers
                for weight in self.task.row_normed():
                    weight.renorm_(2, 0, self.s.max_norm)
        if self.ema is not None:
            self.update_ema(step)

    def _nonfinite(self, micro: list, step: int, total: float, tokens: int) -> Outcome:
        if self.scaler is not None:
            self.scaler.update()  # lowers the loss scale; the update is not applied
            # an fp16 gradient overflow, not a broken run: unless the scale has
            # collapsed (below 1 after ~17 overflows in a row), then the guard acts
            if math.isfinite(total) and self.scaler.get_scale() >= 1.0:
                log.info(
                    "step %d: fp16 gradients overflowed; update skipped, loss scale now %g",
                    step + 1,
                    self.scaler.get_scale(),
                )
                self.emit({"kind": "overflow", "step": step + 1, "scale": self.scaler.get_scale()})
                return Outcome(total, tokens, applied=False)
        if not micro:
            return Outcome(total, tokens, "another rank's batch", applied=False)
        where = self._locate_nonfinite(micro[0], step, total)
        return Outcome(total, tokens, where, applied=False)

    def _locate_nonfinite(self, batch: Any, step: int, loss: float) -> str:
        """Name where the first NaN/Inf appeared: a module in the forward pass (found
        by re-running it with hooks, RNG state kept), else the loss, else the
        gradients of named parameters."""
        rng = torch.get_rng_state()
        where = first_nonfinite_module(self.model, lambda: self.task.loss(batch, step))
        torch.set_rng_state(rng)
        if where is not None:
            return where
        if not math.isfinite(loss):
            return "the loss"
        names = nonfinite_gradients(self.model)
        shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        return f"the gradients of {shown}" if names else "the gradients"

    def _histograms(self, step: int) -> None:
        for name, q in self.model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", q.detach().float().cpu(), step)
            self.writer.add_histogram(f"gradients/{name}", q.grad.float().cpu(), step)

    def _report_update_ratios(self, before: dict, grad_norm: float, step: int) -> None:
        ratios = update_ratios(before, self.model)
        record = {"kind": "diag", "step": step, "grad_norm": grad_norm}
        record.update({f"update_ratio/{k}": v for k, v in ratios.items()})
        self.emit(record)
        low, high = self.s.update_ratio_band
        for group, ratio in ratios.items():
            if not low <= ratio <= high:
                log.warning(
                    "step %d: update/weight ratio of %s is %.2g, outside [%.0e, %.0e]"
                    " (learning rate too %s?)",
                    step,
                    group,
                    ratio,
                    low,
                    high,
                    "high" if ratio > high else "low",
                )


def _fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` is PyTorch's Adam or AdamW with its fused kernel on every
    parameter group (which reads ``grad_scale``)."""
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and all(
        group.get("fused") for group in optimizer.param_groups
    )
