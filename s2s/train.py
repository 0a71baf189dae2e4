"""The training loop (level 5): one run folder, resumable at any checkpoint.

A run folder holds ``config.yaml`` (resolved), ``last.pt`` and ``best.pt`` (best
validation BLEU), ``metrics.jsonl`` (one JSON object per logged step and per
validation), TensorBoard event files and the tokenizer model(s). Running the same
config on an existing folder resumes from ``last.pt``: weights, optimizer, learning
rate, step, data position (epoch and batch) and RNG states are restored.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from s2s import checkpoint
from s2s import config as config_mod
from s2s.config import Config
from s2s.data.corpus import (
    Batch,
    Corpus,
    collate,
    encode_corpus,
    epoch_batches,
    length_batches,
    load_split,
)
from s2s.data.tokenize import PAD, save_tokenizers, train_tokenizers
from s2s.decoding.translate import translate_lines
from s2s.errors import ConfigError, DataError, S2SError
from s2s.evaluate import score
from s2s.nn.seq2seq import Seq2Seq, build_model
from s2s.training import distributed, runlock
from s2s.training.diagnostics import (
    first_nonfinite_module,
    nonfinite_gradients,
    record_activations,
    snapshot,
    update_ratios,
)
from s2s.training.optim import make_optimizer
from s2s.training.runfolder import (
    append_record,
    catch_stop_signals,
    check_disk_space,
    prepare_run_dir,
    resolve_device,
    step_checkpoints,
    trim_metrics,
)
from s2s.training.schedules import configured_learning_rate, teacher_forcing

log = logging.getLogger(__name__)

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Progress:
    """Trainer state that is not in the model or optimizer; saved in checkpoints."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    lr: float = 0.0  # the current learning rate
    plateau_lr: float = 0.0  # the level set by plateau decays (0: train.lr)
    at_min_lr: bool = False  # a plateau came with the learning rate at train.min_lr
    best_bleu: float = -1.0
    bad_validations: int = 0  # since the last improvement or lr decay
    stale_validations: int = 0  # since the last improvement (early stopping)
    elapsed: float = 0.0  # training seconds over all sessions
    last_valid_step: int = -1
    bad_steps: int = 0  # consecutive updates skipped for NaN/Inf
    first_bad: str = ""  # where the first of them appeared


# --------------------------------------------------------------------------- steps


def batch_loss(
    model: Seq2Seq,
    batch: Batch,
    label_smoothing: float = 0.0,
    *,
    teacher_prob: float = 1.0,
    sample: bool = False,
    parallel: bool = False,
    teacher: Seq2Seq | None = None,
    temperature: float = 1.0,
    distill_weight: float = 0.0,
) -> torch.Tensor:
    """Summed cross-entropy over the target tokens of a batch (padding excluded); with a
    ``teacher``, mixed with the cross-entropy to its softened distribution."""
    features = model(
        batch.src,
        batch.src_lengths,
        batch.tgt_in,
        teacher_prob=teacher_prob,
        sample=sample,
        parallel=parallel,
    )  # (batch, tgt_len, out)
    mask = batch.tgt_out != PAD
    logits = model.logits(features[mask])  # (tokens, vocab): none spent on padding
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the softmax in float32 under mixed precision
    loss = F.cross_entropy(
        logits, batch.tgt_out[mask], reduction="sum", label_smoothing=label_smoothing
    )
    if teacher is None or distill_weight == 0.0:
        return loss
    with torch.no_grad():
        t_features = teacher(batch.src, batch.src_lengths, batch.tgt_in)
        target = torch.softmax(teacher.logits(t_features[mask]).to(logits.dtype) / temperature, -1)
    # Hinton et al. 2015, §2: soft-target gradients scale as 1/T^2, hence the T^2.
    soft = -(target * torch.log_softmax(logits / temperature, dim=-1)).sum()
    return (1.0 - distill_weight) * loss + distill_weight * temperature**2 * soft


@torch.no_grad()
def validation_loss(model: Seq2Seq, corpus: Corpus, device: torch.device, batch_size: int) -> float:
    was_training = model.training
    model.eval()
    lengths = [max(len(s), len(t) + 1) for s, t in zip(corpus.src, corpus.tgt)]
    total, tokens = 0.0, 0
    for idx in length_batches(lengths, batch_size=batch_size, unit="sentences", pool=1, rng=None):
        batch = collate(corpus, idx).to(device)
        total += float(batch_loss(model, batch))
        tokens += batch.n_tokens
    model.train(was_training)
    return total / max(1, tokens)


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Owns one run: data, model, optimizer, progress; ``run()`` trains to the end."""

    def __init__(
        self,
        cfg: Config,
        out: Path,
        *,
        force: bool = False,
        on_step: Callable[[dict], None] | None = None,
    ):
        self.cfg = cfg
        self.out = Path(out)
        self.on_step = on_step
        t = cfg.train
        self.dist = distributed.from_env()
        if not self.dist.main:  # one log, from rank 0
            logging.getLogger("s2s").setLevel(logging.WARNING)
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = distributed.start(self.dist, resolve_device(t.device))
        resume = distributed.broadcast(
            self.dist, prepare_run_dir(cfg, self.out, force) if self.dist.main else None
        )
        torch.manual_seed(t.seed)

        train_ds = load_split(cfg.data, "train")
        if len(train_ds) == 0:
            raise DataError(f"training set is empty: {cfg.data.train}")
        valid_ds = load_split(cfg.data, "valid")
        payload = checkpoint.load(self.out / "last.pt") if resume else None
        if payload is not None:
            self.src_tok, self.tgt_tok = checkpoint.tokenizers_of(payload)
        elif t.distill.teacher:  # a student reads and writes its teacher's tokens
            teacher_payload = checkpoint.load(t.distill.teacher)
            self.src_tok, self.tgt_tok = checkpoint.tokenizers_of(teacher_payload)
            if self.dist.main:
                save_tokenizers(self.src_tok, self.tgt_tok, self.out)
        elif not self.dist.main:  # rank 0 trains them
            states = distributed.broadcast(self.dist, None)
            self.src_tok, self.tgt_tok = checkpoint.tokenizers_of({"tokenizers": states})
        else:
            keep = [
                i
                for i, (s, g) in enumerate(zip(train_ds["src"], train_ds["tgt"]))
                if s.strip() and g.strip()
            ]
            if not keep:
                raise DataError(f"training set has only empty lines: {cfg.data.train}")
            sub = train_ds.select(keep)
            self.src_tok, self.tgt_tok = train_tokenizers(
                cfg.data.tokenizer, list(sub["src"]), list(sub["tgt"])
            )
            save_tokenizers(self.src_tok, self.tgt_tok, self.out)
            distributed.broadcast(
                self.dist, checkpoint.tokenizer_states(self.src_tok, self.tgt_tok)
            )
        d = cfg.data
        self.train_corpus = encode_corpus(
            train_ds,
            self.src_tok,
            self.tgt_tok,
            reverse_source=d.reverse_source,
            max_len=d.max_len,
            drop_empty=True,
            long_pairs=d.long_pairs,
            name="train",
        )
        if len(self.train_corpus) == 0:
            raise DataError(
                f"training set is empty after dropping empty and over-long pairs: {d.train}"
            )
        self.valid_corpus = encode_corpus(
            valid_ds, self.src_tok, self.tgt_tok, reverse_source=d.reverse_source, name="valid"
        )
        self.valid_src = list(valid_ds["src"])
        self.valid_ref = list(valid_ds["tgt"])
        log.info(
            "train %d pairs, valid %d pairs, vocab src %d tgt %d",
            len(self.train_corpus),
            len(self.valid_corpus),
            self.src_tok.vocab_size,
            self.tgt_tok.vocab_size,
        )

        self.model = build_model(
            cfg.model, src_vocab=self.src_tok.vocab_size, tgt_vocab=self.tgt_tok.vocab_size
        ).to(self.device)
        if cfg.model.charlm and payload is None:
            self._from_charlm()
        self.teacher = self._load_teacher() if t.distill.teacher else None
        self.optimizer = make_optimizer(self.model, t)
        self.amp_dtype = AMP_DTYPES[t.precision]
        # fp16 needs loss scaling (its range is narrow); bf16 has float32's range
        self.scaler = None
        if t.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)
            # set its scale up now: a data-parallel rank whose first update has no batch
            # never scales a loss, yet must unscale
            self.scaler.scale(torch.zeros((), device=self.device))
        self.progress = Progress(lr=t.lr, plateau_lr=t.lr)
        self.ema = None
        if t.ema_decay > 0:
            self.ema = [p.detach().clone() for p in self._unique_params()]
        if self.dist.active:  # same initial weights (same seed), different dropout masks
            torch.manual_seed(t.seed + self.dist.rank)
        if payload is not None:
            self._restore(payload)
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("model: %d parameters on %s", n_params, self.device)
        if self.dist.main:
            trim_metrics(self.out / "metrics.jsonl", self.progress.step)
            check_disk_space(self.out, n_params, t.keep_checkpoints)
        if self.dist.active:
            log.info("data parallel: %d processes, this is rank 0", self.dist.world)
        self.stop_requested = False

    def _from_charlm(self) -> None:
        """model.charlm: start from a character language model's weights."""
        from s2s.charlm import copy_into
        from s2s.lmtrain import load_lm

        m = self.cfg.model
        lm, units, lm_cfg = load_lm(m.charlm)
        parts = {"encoder": (self.model.encoder, self.src_tok)}
        parts["decoder"] = (self.model.decoder, self.tgt_tok)
        for name in ("encoder", "decoder") if m.charlm_into == "both" else (m.charlm_into,):
            module, tok = parts[name]
            part = getattr(m, name)
            for key in ("stacking", "activation"):
                if getattr(part, key) != getattr(lm_cfg.model, key):
                    raise ConfigError(
                        f"model.charlm: model.{name}.{key} is {getattr(part, key)!r} but the "
                        f"language model's is {getattr(lm_cfg.model, key)!r}"
                    )
            rows = copy_into(
                lm,
                units,
                rnn=module.rnn,
                embedding=module.embedding,
                vocabulary=tok.vocabulary(),
                where=name,
            )
            log.info("model.charlm: %s starts from %s (%d embedding rows)", name, m.charlm, rows)

    def _load_teacher(self) -> Seq2Seq:
        path = self.cfg.train.distill.teacher
        teacher = checkpoint.load_for_translation(path)
        if teacher.tgt_tok.vocabulary() != self.tgt_tok.vocabulary():
            raise ConfigError(
                f"train.distill.teacher {path}: its target vocabulary differs from this run's"
            )
        if teacher.src_tok.vocabulary() != self.src_tok.vocabulary():
            raise ConfigError(
                f"train.distill.teacher {path}: its source tokenizer differs from this run's"
            )
        model = teacher.model.to(self.device).eval()
        for param in model.parameters():
            param.requires_grad_(False)
        return model

    # ------------------------------------------------------------------ state
    # ------------------------------------------------------------------ weight average
    def _update_ema(self) -> None:
        t = self.cfg.train
        step = self.progress.step
        decay = min(t.ema_decay, (1 + step) / (10 + step))
        params = [p.detach() for p in self._unique_params()]
        torch._foreach_lerp_(self.ema, params, 1.0 - decay)

    def _unique_params(self) -> list[torch.Tensor]:
        return list(self.model.parameters())  # tied weights appear once

    @contextmanager
    def averaged_weights(self):
        """Inside: the model holds the moving average of its weights (if kept)."""
        if self.ema is None:
            yield
            return
        params = self._unique_params()
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

    def _payload(self) -> dict:
        model = self.model.state_dict()
        extra = {}
        if self.ema is not None:  # "model" translates; "train_model" resumes
            with self.averaged_weights():
                averaged = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            model, extra = averaged, {"train_model": model}
        return {
            "config": config_mod.to_dict(self.cfg),
            "tokenizers": checkpoint.tokenizer_states(self.src_tok, self.tgt_tok),
            "model": model,
            **extra,
            "optimizer": self.optimizer.state_dict(),
            "progress": asdict(self.progress),
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            "rng": checkpoint.rng_state(self.device),
        }

    def _restore(self, payload: dict) -> None:
        try:
            if self.ema is not None and "train_model" in payload:
                self.model.load_state_dict(payload["model"])
                self.ema = [p.detach().clone() for p in self._unique_params()]
            self.model.load_state_dict(payload.get("train_model", payload["model"]))
            self.optimizer.load_state_dict(payload["optimizer"])
            self.progress = Progress(**payload["progress"])
            if self.scaler is not None and "scaler" in payload:
                self.scaler.load_state_dict(payload["scaler"])
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise S2SError(f"cannot resume from {self.out / 'last.pt'}: {err}") from None
        ranks = payload["rng"].get("ranks", [])
        if len(ranks) == self.dist.world:
            checkpoint.restore_rng(ranks[self.dist.rank], self.device)
        else:
            checkpoint.restore_rng(payload["rng"], self.device)
            if self.dist.active:  # saved by another number of processes: new streams
                fresh = (self.cfg.train.seed, self.dist.rank, self.progress.step)
                torch.manual_seed(hash(fresh) % 2**63)
                log.warning(
                    "last.pt was saved by %d process(es), this run has %d: dropout streams "
                    "start afresh and the effective batch is now %d x data.batch_size",
                    max(1, len(ranks)),
                    self.dist.world,
                    self.dist.world * self.cfg.train.accumulate,
                )
        if not self.progress.plateau_lr:
            self.progress.plateau_lr = self.progress.lr
        self._set_lr(self.progress.lr)
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            self.out / "last.pt",
            self.progress.step,
            self.progress.epoch,
            self.progress.batch_in_epoch,
        )

    def _scheduled_lr(self) -> float:
        p = self.progress
        return configured_learning_rate(p.step, self.cfg.train, p.plateau_lr)

    def _teacher_prob(self) -> float:
        ss = self.cfg.train.scheduled_sampling
        return teacher_forcing(
            self.progress.step, decay=ss.decay, k=ss.k, c=ss.c, minimum=ss.minimum
        )

    def _set_lr(self, lr: float) -> None:
        self.progress.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)

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

    def keep_step_checkpoint(self) -> None:
        """Keep last.pt as step-STEP.pt (a hard link: no second write) and delete the
        ones beyond train.keep_checkpoints, oldest first."""
        keep = self.cfg.train.keep_checkpoints
        if keep <= 0:
            return
        target = self.out / f"step-{self.progress.step}.pt"
        target.unlink(missing_ok=True)
        try:
            os.link(self.out / "last.pt", target)
        except OSError:
            shutil.copyfile(self.out / "last.pt", target)
        for old in step_checkpoints(self.out)[:-keep]:
            old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ metrics
    def _emit(self, record: dict) -> None:
        if not self.dist.main:
            return
        append_record(self.out / "metrics.jsonl", record)
        for key, value in record.items():
            if key not in ("kind", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict:
        t = self.cfg.train
        with self.averaged_weights():
            loss = validation_loss(self.model, self.valid_corpus, self.device, t.valid_batch_size)
            hyps = translate_lines(
                self.model,
                self.src_tok,
                self.tgt_tok,
                self.valid_src,
                reverse_source=self.cfg.data.reverse_source,
                batch_size=t.valid_batch_size,
                max_output_ratio=t.max_output_ratio,
                beam=t.valid_beam if t.valid_beam > 1 else None,
                device=self.device,
            )
        scores = score(hyps, self.valid_ref)
        p = self.progress
        p.last_valid_step = p.step
        improved = scores.bleu > p.best_bleu
        if improved:
            p.best_bleu = scores.bleu
            p.bad_validations = p.stale_validations = 0
        else:
            p.bad_validations += 1
            p.stale_validations += 1
            if t.lr_schedule == "plateau" and p.bad_validations >= t.patience:
                p.bad_validations = 0
                if p.plateau_lr <= t.min_lr:
                    p.at_min_lr = True
                else:
                    p.plateau_lr = max(t.min_lr, p.plateau_lr * t.lr_decay)
                    log.info("validation BLEU stalled: learning rate now %.3g", p.plateau_lr)
        record = {
            "kind": "valid",
            "step": p.step,
            "epoch": p.epoch,
            "loss": loss,
            "ppl": math.exp(min(loss, 50.0)),
            "bleu": scores.bleu,
            "chrf": scores.chrf,
            "best_bleu": p.best_bleu,
            "lr": p.lr,
            "elapsed": p.elapsed,
        }
        self._emit(record)
        log.info(
            "step %d valid loss %.3f ppl %.2f BLEU %.2f chrF %.2f%s",
            p.step,
            loss,
            record["ppl"],
            scores.bleu,
            scores.chrf,
            " (best)" if improved else "",
        )
        if improved:
            self.save("best.pt")
        return record

    def _validate_everywhere(self) -> None:
        """Rank 0 validates; every rank takes on what it decided (plateau learning
        rate, best BLEU, early-stopping counts)."""
        if self.dist.main:
            self.validate()
        if self.dist.active:
            decided = distributed.broadcast(self.dist, asdict(self.progress))
            for key, value in decided.items():  # in place: run() holds a reference
                setattr(self.progress, key, value)

    def _finished(self) -> str | None:
        """Why training should stop now (None: go on); all ranks agree, rank 0 first."""
        reason = self._local_finished()
        if self.dist.active:
            reasons = distributed.gather(self.dist, reason)
            reason = reasons[0] or next((r for r in reasons if r), None)
        return reason

    def _local_finished(self) -> str | None:
        t, p = self.cfg.train, self.progress
        if t.max_steps and p.step >= t.max_steps:
            return f"reached train.max_steps ({t.max_steps})"
        if t.max_epochs and p.epoch >= t.max_epochs:
            return f"reached train.max_epochs ({t.max_epochs})"
        if t.early_stopping and p.stale_validations >= t.early_stopping:
            return f"no validation improvement in {t.early_stopping} validations"
        if t.max_minutes and p.elapsed >= 60 * t.max_minutes:
            return f"reached train.max_minutes ({t.max_minutes})"
        if t.stop_at_min_lr and p.at_min_lr:
            return f"validation BLEU stalled at train.min_lr ({t.min_lr})"
        if self.stop_requested:
            return "interrupted"
        return None

    def _request_stop(self, signum, _frame) -> None:
        log.warning("signal %d: saving a checkpoint after this step", signum)
        self.stop_requested = True

    # ------------------------------------------------------------------ one update
    def _update(self, micro: list[Batch]) -> tuple[float, int, str | None]:
        """One optimizer update from ``micro`` batches (gradient accumulation). Returns
        the summed loss, the target tokens, and where a non-finite value first
        appeared (None when the update was applied)."""
        t, p = self.cfg.train, self.progress
        eps = self._teacher_prob()
        units = sum(b.n_tokens if t.loss_norm == "tokens" else b.src.shape[0] for b in micro)
        # data parallel: normalise by the units of all ranks' batches
        units = distributed.sum_floats(self.dist, [units], self.device)[0]
        histograms = (
            bool(t.histograms_every) and (p.step + 1) % t.histograms_every == 0 and self.dist.main
        )
        diagnose = bool(t.diagnostics_every) and (p.step + 1) % t.diagnostics_every == 0
        self.optimizer.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        for k, batch in enumerate(micro):
            with (
                record_activations(self.model) if histograms and k == 0 else nullcontext() as acts,
                self._autocast(),
            ):
                loss = batch_loss(
                    self.model,
                    batch,
                    t.label_smoothing,
                    teacher_prob=eps,
                    sample=t.scheduled_sampling.sample,
                    parallel=t.scheduled_sampling.mode == "parallel",
                    teacher=self.teacher,
                    temperature=t.distill.temperature,
                    distill_weight=t.distill.weight,
                )
            self._backward(loss / units)
            total += loss.item()
            tokens += batch.n_tokens
            if histograms and k == 0:
                for name, value in acts.items():
                    self.writer.add_histogram(f"activations/{name}", value, p.step + 1)
        if t.l1 > 0 and self.dist.main:  # once, not once per rank
            penalty = sum(w.abs().sum() for w in self._matrices())
            self._backward(t.l1 * penalty)
        if self.dist.active:
            distributed.sum_gradients(
                self.dist, [q for q in self.model.parameters() if q.requires_grad]
            )
            total, tokens = distributed.sum_floats(self.dist, [total, tokens], self.device)
            tokens = int(tokens)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clipping and the checks see true gradients
        params = [q for q in self.model.parameters() if q.grad is not None]
        finite = True
        if t.clip_grad_value > 0:  # checked first: clipping by value turns inf into v
            finite = bool(torch.stack([q.grad.isfinite().all() for q in params]).all())
            if finite:
                torch.nn.utils.clip_grad_value_(params, t.clip_grad_value)
        norm = torch.nn.utils.clip_grad_norm_(params, t.clip_grad_norm or float("inf"))
        if not (finite and math.isfinite(total) and math.isfinite(float(norm))):
            if self.scaler is not None:
                self.scaler.update()  # lowers the loss scale; the update is not applied
                # an fp16 gradient overflow, not a broken run: unless the scale has
                # collapsed (below 1 after ~17 overflows in a row), then the guard acts
                if math.isfinite(total) and self.scaler.get_scale() >= 1.0:
                    log.info(
                        "step %d: fp16 gradients overflowed; update skipped, loss scale now %g",
                        p.step + 1,
                        self.scaler.get_scale(),
                    )
                    self._emit(
                        {"kind": "overflow", "step": p.step + 1, "scale": self.scaler.get_scale()}
                    )
                    return total, tokens, None
            if not micro:
                return total, tokens, "another rank's batch"
            return total, tokens, self._locate_nonfinite(micro[0], eps, total)
        if histograms:
            for name, q in self.model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", q.detach().float().cpu(), p.step + 1)
                self.writer.add_histogram(f"gradients/{name}", q.grad.float().cpu(), p.step + 1)
        before = snapshot(self.model) if diagnose else None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if t.max_norm > 0:
            self._apply_max_norm()
        if self.ema is not None:
            self._update_ema()
        if before is not None:
            self._report_update_ratios(before, float(norm))
        return total, tokens, None

    def _autocast(self):
        """train.precision: the forward pass under autocast (float32 weights kept)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _matrices(self) -> list[torch.Tensor]:
        return [q for q in self.model.parameters() if q.dim() >= 2]

    @torch.no_grad()
    def _apply_max_norm(self) -> None:
        """Rescale rows of embedding and output matrices to L2 norm <= train.max_norm."""
        limit = self.cfg.train.max_norm
        for module in self.model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.renorm_(2, 0, limit)
        self.model.decoder.output.weight.renorm_(2, 0, limit)

    def _locate_nonfinite(self, batch: Batch, eps: float, loss: float) -> str:
        """Name where the first NaN/Inf appeared: a module in the forward pass (found
        by re-running it with hooks, RNG state kept), else the loss, else the
        gradients of named parameters."""
        rng = torch.get_rng_state()
        where = first_nonfinite_module(
            self.model,
            lambda: batch_loss(self.model, batch, self.cfg.train.label_smoothing, teacher_prob=eps),
        )
        torch.set_rng_state(rng)
        if where is not None:
            return where
        if not math.isfinite(loss):
            return "the loss"
        names = nonfinite_gradients(self.model)
        shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        return f"the gradients of {shown}" if names else "the gradients"

    def _report_update_ratios(self, before: dict, grad_norm: float) -> None:
        t, p = self.cfg.train, self.progress
        ratios = update_ratios(before, self.model)
        record = {"kind": "diag", "step": p.step + 1, "grad_norm": grad_norm}
        record.update({f"update_ratio/{k}": v for k, v in ratios.items()})
        self._emit(record)
        low, high = t.update_ratio_band
        for group, ratio in ratios.items():
            if not low <= ratio <= high:
                log.warning(
                    "step %d: update/weight ratio of %s is %.2g, outside [%.0e, %.0e]"
                    " (learning rate too %s?)",
                    p.step + 1,
                    group,
                    ratio,
                    low,
                    high,
                    "high" if ratio > high else "low",
                )

    def _bad_step(self, where: str) -> str | None:
        t, p = self.cfg.train, self.progress
        p.bad_steps += 1
        if p.bad_steps == 1:
            p.first_bad = where
        p.plateau_lr = max(t.min_lr, p.plateau_lr * t.bad_step_lr_factor)
        log.warning(
            "step %d: non-finite value, first in %s; update skipped (%d in a row), "
            "learning rate now %.3g",
            p.step,
            where,
            p.bad_steps,
            p.plateau_lr,
        )
        self._emit({"kind": "bad_step", "step": p.step, "where": where})
        if p.bad_steps >= t.max_bad_steps:
            return (
                f"{p.bad_steps} steps in a row with NaN/Inf (the first in {p.first_bad}); "
                "last.pt and best.pt hold the last good state"
            )
        return None

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        t, p = self.cfg.train, self.progress
        self.writer = SummaryWriter(log_dir=str(self.out)) if self.dist.main else None
        restore_signals = catch_stop_signals(self._request_stop)
        self.model.train()
        window_tokens, window_loss, window_seconds = 0, 0.0, 0.0
        broken = None
        clean = False
        try:
            reason = self._finished()
            while reason is None:
                batches = epoch_batches(self.train_corpus, self.cfg.data, t.seed, p.epoch)
                while p.batch_in_epoch < len(batches) and reason is None:
                    start = time.perf_counter()
                    share = t.accumulate * self.dist.world
                    chunk = batches[p.batch_in_epoch : p.batch_in_epoch + share]
                    micro = [
                        collate(self.train_corpus, idx).to(self.device)
                        for idx in distributed.shard(chunk, self.dist)
                    ]
                    self._set_lr(self._scheduled_lr())
                    eps = self._teacher_prob()
                    loss, tokens, where = self._update(micro)
                    p.step += 1
                    p.batch_in_epoch += len(chunk)
                    seconds = time.perf_counter() - start
                    p.elapsed += seconds
                    if where is not None:
                        broken = self._bad_step(where)
                        if broken:
                            break
                    else:
                        p.bad_steps = 0
                        window_seconds += seconds
                        window_tokens += tokens
                        window_loss += loss
                    if p.step % t.log_every == 0 and window_tokens:
                        record = {
                            "kind": "train",
                            "step": p.step,
                            "epoch": p.epoch,
                            "loss": window_loss / max(1, window_tokens),
                            "lr": p.lr,
                            "teacher_prob": eps,
                            "tokens_per_s": window_tokens / max(window_seconds, 1e-9),
                            "elapsed": p.elapsed,
                        }
                        self._emit(record)
                        if self.on_step:
                            self.on_step(record)
                        window_tokens, window_loss, window_seconds = 0, 0.0, 0.0
                    if p.step % t.valid_every == 0:
                        self._validate_everywhere()
                    reason = self._finished()
                    if p.step % t.save_every == 0 or reason is not None:
                        self.save("last.pt")
                        if p.step % t.save_every == 0 and self.dist.main:
                            self.keep_step_checkpoint()
                if broken:
                    reason = broken
                    break
                if p.batch_in_epoch >= len(batches):
                    p.epoch += 1
                    p.batch_in_epoch = 0
                    reason = reason or self._finished()
            if p.last_valid_step != p.step and reason != "interrupted" and not broken:
                self._validate_everywhere()
                self.save("last.pt")
            clean = True
        finally:
            restore_signals()
            if self.writer is not None:
                self.writer.close()
            distributed.stop(self.dist, clean=clean)
            if self.dist.main:
                runlock.release(self.out)
        log.info("training stopped at step %d: %s", p.step, reason)
        if reason == "interrupted":
            raise S2SError(f"interrupted at step {p.step}; rerun the same command to resume")
        if broken:
            raise S2SError(f"training stopped at step {p.step}: {broken}")
        return {"step": p.step, "best_bleu": p.best_bleu, "reason": reason}


def train(
    cfg: Config,
    out: str | Path,
    *,
    force: bool = False,
    on_step: Callable[[dict], None] | None = None,
) -> dict:
    return Trainer(cfg, Path(out), force=force, on_step=on_step).run()
