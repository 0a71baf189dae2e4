"""The training engine: one run folder, trained by any task, resumable at any checkpoint.

A run folder holds ``config.yaml`` (resolved), ``last.pt`` and ``best.pt`` (best
validation score), ``metrics.jsonl`` (one JSON object per logged step and per
validation), TensorBoard event files, and what the task adds (tokenizer models).
Running the same config on an existing folder resumes from ``last.pt``: weights,
optimizer, learning rate, step, data position (epoch and item) and RNG states are
restored. The task (``s2s.training.task``) says what a batch and its loss are; the
engine knows nothing about translation or language models.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from s2s import config as config_mod
from s2s import runtime
from s2s.errors import Interrupted, S2SError
from s2s.training import checkpoint, distributed, runlock
from s2s.training.optim import make_optimizer
from s2s.training.progress import Progress, Settings, stop_reason, unbounded
from s2s.training.runfolder import (
    append_record,
    catch_stop_signals,
    check_disk_space,
    keep_step_checkpoint,
    prepare_run_dir,
    resolve_device,
    trim_metrics,
)
from s2s.training.schedules import configured_learning_rate, idle_schedule
from s2s.training.task import Run, Task
from s2s.training.update import Outcome, Updater

log = logging.getLogger(__name__)


@dataclass
class Window:  # what happened since the last train record
    tokens: int = 0
    loss: float = 0.0
    seconds: float = 0.0


class Engine:
    """Owns one run of a task; ``run()`` trains to the end."""

    def __init__(
        self,
        task: Task,
        out: str | Path,
        *,
        force: bool = False,
        on_step: Callable[[dict], None] | None = None,
    ):
        self.task, self.out, self.on_step = task, Path(out), on_step
        s = self.settings = Settings.of(task.cfg.train)
        self.dist = distributed.from_env()
        if not self.dist.main:  # one log, from rank 0
            logging.getLogger("s2s").setLevel(logging.WARNING)
        if s.threads:
            torch.set_num_threads(s.threads)
        self.device = distributed.start(self.dist, resolve_device(s.device))
        runtime.fast_float32(self.device)
        runtime.return_large_blocks()
        self.trim_heap = runtime.HeapTrimmer()
        runtime.cap_kernel_cache()
        resume = distributed.on_main(
            self.dist, lambda: prepare_run_dir(task.cfg, self.out, force, parse=task.parse)
        )
        torch.manual_seed(s.seed)
        payload = checkpoint.load(self.out / "last.pt") if resume else None
        self.model = task.prepare(Run(self.out, self.device, self.dist), payload)
        self.optimizer = make_optimizer(self.model, task.cfg.train)
        self.updater = Updater(
            task, self.model, self.optimizer, s, self.device, self.dist, self._emit
        )
        self.progress = Progress(lr=s.lr, plateau_lr=s.lr)
        if self.dist.active:  # same initial weights (same seed), different dropout masks
            torch.manual_seed(s.seed + self.dist.rank)
        if payload is not None:
            self._restore(payload)
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("model: %d parameters on %s", n_params, self.device)
        if self.dist.main:
            trim_metrics(self.out / "metrics.jsonl", self.progress.step)
            check_disk_space(self.out, n_params, s.keep_checkpoints)
        if self.dist.active:
            log.info("data parallel: %d processes, this is rank 0", self.dist.world)
        self.writer = None
        self.stop_requested = False
        self.broken: str | None = None  # why the run broke (too many bad steps)

    @property
    def scaler(self):
        return self.updater.scaler

    # ------------------------------------------------------------------ state
    def _payload(self) -> dict:
        model = self.model.state_dict()
        extra = {}
        if self.updater.ema is not None:  # "model" is the average; "train_model" resumes
            with self.updater.averaged_weights():
                averaged = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            model, extra = averaged, {"train_model": model}
        scaler = self.updater.scaler
        return {
            "kind": self.task.kind,
            "config": config_mod.to_dict(self.task.cfg),
            **self.task.state(),
            "model": model,
            **extra,
            "optimizer": self.optimizer.state_dict(),
            "progress": asdict(self.progress),
            **({"scaler": scaler.state_dict()} if scaler is not None else {}),
            "rng": checkpoint.rng_state(self.device),
        }

    def _restore(self, payload: dict) -> None:
        updater = self.updater
        try:
            self.task.restore(payload)
            if updater.ema is not None and "train_model" in payload:
                self.model.load_state_dict(payload["model"])
                updater.ema = [p.detach().clone() for p in updater.unique_params()]
            self.model.load_state_dict(payload.get("train_model", payload["model"]))
            self.optimizer.load_state_dict(payload["optimizer"])
            self.progress = Progress.from_state(payload["progress"])
            if updater.scaler is not None and "scaler" in payload:
                updater.scaler.load_state_dict(payload["scaler"])
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            why = "it holds no optimizer state" if "optimizer" not in payload else err
            raise S2SError(f"cannot resume from {self.out / 'last.pt'}: {why}") from None
        self._restore_rng(payload["rng"], payload.get("config", {}).get("train", {}))
        if not self.progress.plateau_lr:
            self.progress.plateau_lr = self.progress.lr or self.settings.lr
        self._set_lr(self.progress.lr or self.settings.lr)
        p = self.progress
        log.info(
            "resumed from %s at step %d (epoch %d, item %d)",
            self.out / "last.pt",
            p.step,
            p.epoch,
            p.batch_in_epoch,
        )

    def _restore_rng(self, saved: dict, was: dict) -> None:
        ranks, world = saved.get("ranks", []), self.dist.world
        if len(ranks) == world:
            checkpoint.restore_rng(ranks[self.dist.rank], self.device)
        else:
            checkpoint.restore_rng(saved, self.device)
            if self.dist.active:  # saved by another number of processes: new streams
                fresh = (self.settings.seed, self.dist.rank, self.progress.step)
                torch.manual_seed(hash(fresh) % 2**63)
        if self.dist.main:
            then = (max(1, len(ranks)), was.get("accumulate", 1))
            distributed.warn_batch_change(then, (world, self.settings.accumulate))

    def save(self, name: str) -> None:
        """Rank 0 writes. ``last.pt`` is a collective: it holds every rank's RNG state,
        so that a resumed data-parallel run continues each rank's dropout stream."""
        ranks = None
        if name == "last.pt" and self.dist.active:
            ranks = distributed.gather(self.dist, checkpoint.rng_state(self.device))
        if self.dist.main:
            payload = self._payload()
            if ranks is not None:
                payload["rng"]["ranks"] = ranks
            checkpoint.save(self.out / name, payload)

    def _emit(self, record: dict) -> None:
        if not self.dist.main:
            return
        append_record(self.out / "metrics.jsonl", record)
        for key, value in record.items() if self.writer is not None else ():
            if key not in ("kind", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    # ------------------------------------------------------------------ learning rate
    def _scheduled_lr(self) -> float:
        p = self.progress
        return configured_learning_rate(p.step, self.task.cfg.train, p.plateau_lr)

    def _set_lr(self, lr: float) -> None:
        self.progress.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict:
        """Score the model (its weight average, if kept); keep the best; decay the
        learning rate on a plateau; count validations without improvement."""
        s, p, task = self.settings, self.progress, self.task
        was_training = self.model.training
        self.model.eval()
        try:
            with self.updater.averaged_weights():
                score, fields = task.evaluate()
        finally:
            self.model.train(was_training)
        p.last_valid_step = p.step
        improved = p.improves(score, task.higher_is_better)
        if improved:
            p.best = score
            p.bad_validations = p.stale_validations = 0
        else:
            p.bad_validations += 1
            p.stale_validations += 1
            if s.lr_schedule == "plateau" and p.bad_validations >= s.patience:
                p.bad_validations = 0
                if p.plateau_lr <= s.min_lr:
                    p.at_min_lr = True
                else:
                    p.plateau_lr = max(s.min_lr, p.plateau_lr * s.lr_decay)
                    log.info(
                        "validation %s stalled: learning rate now %.3g", task.metric, p.plateau_lr
                    )
        record = {"kind": "valid", "step": p.step, "epoch": p.epoch, **fields}
        record |= {f"best_{task.metric_key}": p.best, "lr": p.lr, "elapsed": p.elapsed}
        self._emit(record)
        log.info("step %d valid %s%s", p.step, task.describe(fields), " (best)" if improved else "")
        if improved:
            self.save("best.pt")
        return record

    def _validate_everywhere(self) -> None:
        """Rank 0 validates; every rank takes on what it decided (plateau learning
        rate, best score, early-stopping counts)."""
        if self.dist.main:
            self.validate()
        if self.dist.active:
            decided = distributed.broadcast(self.dist, asdict(self.progress))
            for key, value in decided.items():  # in place: run() holds a reference
                setattr(self.progress, key, value)

    # ------------------------------------------------------------------ stopping
    def _finished(self) -> str | None:
        """Why training should stop now (None: go on); all ranks agree, rank 0 first."""
        reason = stop_reason(self.settings, self.progress, self.task.metric, self.stop_requested)
        if self.dist.active and distributed.any_rank(self.dist, reason is not None, self.device):
            reasons = distributed.gather(self.dist, reason)  # only when one rank stops
            reason = reasons[0] or next((r for r in reasons if r), None)
        return reason

    def _request_stop(self, signum, _frame) -> None:
        log.warning("signal %d: saving a checkpoint after this step", signum)
        self.stop_requested = True

    def _bad_step(self, where: str) -> str | None:
        s, p = self.settings, self.progress
        p.bad_steps += 1
        if p.bad_steps == 1:
            p.first_bad = where
        p.plateau_lr = max(s.min_lr, p.plateau_lr * s.bad_step_lr_factor)
        log.warning(
            "step %d: non-finite value, first in %s; update skipped (%d in a row), "
            "learning rate now %.3g",
            p.step,
            where,
            p.bad_steps,
            p.plateau_lr,
        )
        self._emit({"kind": "bad_step", "step": p.step, "where": where})
        if p.bad_steps >= s.max_bad_steps:
            return (
                f"{p.bad_steps} steps in a row with NaN/Inf (the first in {p.first_bad}); "
                "last.pt and best.pt hold the last good state"
            )
        return None

    # ------------------------------------------------------------------ loop
    def _update(self, micro: list, ghost: bool = False) -> Outcome:
        """One optimizer update (see ``s2s.training.update``); the task hears whether
        it was applied."""
        outcome = self.updater(micro, self.progress.step, ghost)
        self.task.after_update(outcome.applied)
        return outcome

    def _step(self, items: list, window: Window) -> str | None:
        """One update from the next items of the epoch, its records and checkpoints;
        returns why training stops (None: go on)."""
        s, p = self.settings, self.progress
        start = time.perf_counter()
        mine = distributed.shard(items, self.dist)
        ghost = not mine  # no batch of its own: it runs one at weight zero (all-reduce)
        micro = [self.task.batch(item) for item in (items[:1] if ghost else mine)]
        self._set_lr(self._scheduled_lr())
        outcome = self._update(micro, ghost)
        p.step += 1
        p.batch_in_epoch += len(items)
        self.trim_heap()  # timed with the update: what it costs is training time
        seconds = time.perf_counter() - start
        p.elapsed += seconds
        if outcome.nonfinite is not None:
            self.broken = self._bad_step(outcome.nonfinite)
            if self.broken:
                return self.broken
        else:
            p.bad_steps = 0
            window.seconds += seconds
            window.tokens += outcome.tokens
            window.loss += outcome.loss
        if p.step % s.log_every == 0 and window.tokens:
            self._log_window(window)
        if p.step % s.valid_every == 0:
            self._validate_everywhere()
        reason = self._finished()
        if p.step % s.save_every == 0 or reason is not None:
            self.save("last.pt")
            if p.step % s.save_every == 0 and self.dist.main:
                keep_step_checkpoint(self.out, p.step, s.keep_checkpoints)
        return reason

    def _log_window(self, window: Window) -> None:
        p = self.progress
        loss = window.loss / max(1, window.tokens)
        record = {"kind": "train", "step": p.step, "epoch": p.epoch}
        record |= self.task.train_fields(p.step - 1, loss)
        record |= {
            "lr": p.lr,
            f"{self.task.unit}_per_s": window.tokens / max(window.seconds, 1e-9),
            "elapsed": p.elapsed,
        }
        if self.device.type == "cuda":
            record["gpu_peak_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        peak = runtime.peak_rss_mb()
        if peak is not None:
            record["peak_rss_mb"] = round(peak, 1)
        self._emit(record)
        if self.on_step:
            self.on_step(record)
        window.tokens, window.loss, window.seconds = 0, 0.0, 0.0

    def _train(self) -> tuple[str, bool]:
        """Epochs until a stop reason; returns it and whether the run broke."""
        p, share = self.progress, self.settings.accumulate * self.dist.world
        window = Window()
        reason = self._finished()
        while reason is None:
            items = self.task.epoch(p.epoch)
            while p.batch_in_epoch < len(items) and reason is None:
                chunk = list(items[p.batch_in_epoch : p.batch_in_epoch + share])
                reason = self._step(chunk, window)
                if self.broken:
                    return reason, True
            if p.batch_in_epoch >= len(items):
                p.epoch += 1
                p.batch_in_epoch = 0
                self.task.end_epoch()
                if reason is None and (reason := self._finished()) == "interrupted":
                    self.save("last.pt")  # a signal after the epoch's last step
        return reason, False

    def run(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        p = self.progress
        for warning in (unbounded(self.settings), idle_schedule(self.task.cfg.train)):
            if warning and self.dist.main:
                log.warning(warning)
        self.writer = SummaryWriter(log_dir=str(self.out)) if self.dist.main else None
        self.updater.writer = self.writer
        restore_signals = catch_stop_signals(self._request_stop)
        self.model.train()
        clean, broken = False, False
        try:
            reason, broken = self._train()
            if p.last_valid_step != p.step and reason != "interrupted" and not broken:
                self._validate_everywhere()
                self.save("last.pt")
            clean = True
        finally:
            restore_signals()
            if self.writer is not None:
                self.writer.close()
            self.updater.close()  # DDP holds the process group: let it go first
            distributed.stop(self.dist, clean=clean)
            if self.dist.main:
                runlock.release(self.out)
        log.info("training stopped at step %d: %s", p.step, reason)
        if reason == "interrupted":
            raise Interrupted(f"interrupted at step {p.step}; rerun the same command to resume")
        if broken:
            raise S2SError(f"training stopped at step {p.step}: {reason}")
        return {"step": p.step, f"best_{self.task.metric_key}": p.best, "reason": reason}
