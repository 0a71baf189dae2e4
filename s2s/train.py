"""The training loop (level 5): one run folder, resumable at any checkpoint.

A run folder holds ``config.yaml`` (resolved), ``last.pt`` and ``best.pt`` (best
validation BLEU), ``metrics.jsonl`` (one JSON object per logged step and per
validation), TensorBoard event files and the tokenizer model(s). Running the same
config on an existing folder resumes from ``last.pt``: weights, optimizer, learning
rate, step, data position (epoch and batch) and RNG states are restored.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from s2s import checkpoint
from s2s import config as config_mod
from s2s.config import Config
from s2s.data import (
    Batch,
    Corpus,
    collate,
    encode_corpus,
    epoch_batches,
    length_batches,
    load_split,
)
from s2s.errors import ConfigError, DataError, S2SError
from s2s.evaluate import score
from s2s.model import Seq2Seq, build_model
from s2s.schedules import learning_rate
from s2s.tokenize import PAD, save_tokenizers, train_tokenizers
from s2s.translate import translate_lines

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


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


# --------------------------------------------------------------------------- run folder

# Stopping limits may change between sessions of one run (e.g. to train longer).
LIMIT_KEYS = frozenset(
    {"train.max_steps", "train.max_epochs", "train.max_minutes", "train.early_stopping"}
)


def prepare_run_dir(cfg: Config, out: Path, force: bool) -> bool:
    """Create or check the run folder; return True when it holds a run to resume."""
    cfg_path = out / "config.yaml"
    if out.exists() and not out.is_dir():
        raise DataError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not cfg_path.is_file():
            if not force:
                raise DataError(
                    f"output folder {out} is not empty and holds no s2s run (no config.yaml); "
                    "choose another --out or pass --force"
                )
        else:
            old = config_mod.from_dict(config_mod.read_yaml(cfg_path))
            changed = [k for k in config_mod.diff(old, cfg) if k not in LIMIT_KEYS]
            if changed and not force:
                shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
                raise ConfigError(
                    f"run folder {out} belongs to a different config (differs in {shown}); "
                    "use another --out, or --force to start over there"
                )
            if not changed and (out / "last.pt").is_file():
                return True
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".s2s-write-test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as err:
        raise DataError(f"cannot write to output folder {out}: {err.strerror or err}") from None
    checkpoint.atomic_write(cfg_path, lambda h: h.write(config_mod.dump(cfg).encode("utf-8")))
    return False


# --------------------------------------------------------------------------- steps


def batch_loss(model: Seq2Seq, batch: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy over the target tokens of a batch (padding excluded)."""
    features = model(batch.src, batch.src_lengths, batch.tgt_in)  # (batch, tgt_len, out)
    mask = batch.tgt_out != PAD
    logits = model.logits(features[mask])  # (tokens, vocab): no work spent on padding
    return F.cross_entropy(
        logits.float(), batch.tgt_out[mask], reduction="sum", label_smoothing=label_smoothing
    )


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


def make_optimizer(model: torch.nn.Module, t) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=t.lr,
            momentum=t.momentum,
            nesterov=t.nesterov,
            weight_decay=t.weight_decay,
        )
    raise ConfigError(f"unknown optimizer {t.optimizer!r}")


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
        resume = prepare_run_dir(cfg, self.out, force)
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        torch.manual_seed(t.seed)

        train_ds = load_split(cfg.data, "train")
        if len(train_ds) == 0:
            raise DataError(f"training set is empty: {cfg.data.train}")
        valid_ds = load_split(cfg.data, "valid")
        payload = checkpoint.load(self.out / "last.pt") if resume else None
        if payload is not None:
            self.src_tok, self.tgt_tok = checkpoint.tokenizers_of(payload)
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
        d = cfg.data
        self.train_corpus = encode_corpus(
            train_ds,
            self.src_tok,
            self.tgt_tok,
            reverse_source=d.reverse_source,
            max_len=d.max_len,
            drop_empty=True,
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
        self.optimizer = make_optimizer(self.model, t)
        self.progress = Progress(lr=t.lr, plateau_lr=t.lr)
        if payload is not None:
            self._restore(payload)
        self._trim_metrics(self.progress.step)
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("model: %d parameters on %s", n_params, self.device)
        self.stop_requested = False

    # ------------------------------------------------------------------ state
    def _payload(self) -> dict:
        return {
            "config": config_mod.to_dict(self.cfg),
            "tokenizers": checkpoint.tokenizer_states(self.src_tok, self.tgt_tok),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "progress": asdict(self.progress),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def _restore(self, payload: dict) -> None:
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.progress = Progress(**payload["progress"])
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise S2SError(f"cannot resume from {self.out / 'last.pt'}: {err}") from None
        torch.set_rng_state(payload["rng"]["torch"])
        if payload["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
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
        t = self.cfg.train
        return learning_rate(
            self.progress.step,
            schedule=t.lr_schedule,
            base=self.progress.plateau_lr,
            min_lr=t.min_lr,
            warmup_steps=t.warmup_steps,
            decay_start=t.decay_start,
            decay_steps=t.decay_steps or max(0, t.max_steps - t.decay_start),
            factor=t.lr_decay,
            gamma=t.lr_gamma,
            step_size=t.lr_step_size,
        )

    def _set_lr(self, lr: float) -> None:
        self.progress.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def save(self, name: str) -> None:
        checkpoint.save(self.out / name, self._payload())

    # ------------------------------------------------------------------ metrics
    def _trim_metrics(self, step: int) -> None:
        """Drop records past ``step``: those logged after the checkpoint we resume from
        (or all, on a fresh start), so that the file tells one consistent history."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step and step > 0:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
        data = "".join(kept).encode("utf-8")
        checkpoint.atomic_write(path, lambda handle: handle.write(data))

    def _emit(self, record: dict) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("kind", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict:
        t = self.cfg.train
        loss = validation_loss(self.model, self.valid_corpus, self.device, t.valid_batch_size)
        hyps = translate_lines(
            self.model,
            self.src_tok,
            self.tgt_tok,
            self.valid_src,
            reverse_source=self.cfg.data.reverse_source,
            batch_size=t.valid_batch_size,
            max_output_ratio=t.max_output_ratio,
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

    # ------------------------------------------------------------------ loop
    def _finished(self) -> str | None:
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

    def run(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        t, p = self.cfg.train, self.progress
        self.writer = SummaryWriter(log_dir=str(self.out))
        previous = {
            s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)
        }
        self.model.train()
        window_tokens, window_loss, window_seconds = 0, 0.0, 0.0
        try:
            reason = self._finished()
            while reason is None:
                batches = epoch_batches(self.train_corpus, self.cfg.data, t.seed, p.epoch)
                while p.batch_in_epoch < len(batches) and reason is None:
                    start = time.perf_counter()
                    batch = collate(self.train_corpus, batches[p.batch_in_epoch]).to(self.device)
                    self._set_lr(self._scheduled_lr())
                    loss = batch_loss(self.model, batch, t.label_smoothing)
                    self.optimizer.zero_grad(set_to_none=True)
                    (loss / batch.n_tokens).backward()
                    if t.clip_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
                    self.optimizer.step()
                    p.step += 1
                    p.batch_in_epoch += 1
                    seconds = time.perf_counter() - start
                    p.elapsed += seconds
                    window_seconds += seconds
                    window_tokens += batch.n_tokens
                    window_loss += loss.item()
                    if p.step % t.log_every == 0:
                        record = {
                            "kind": "train",
                            "step": p.step,
                            "epoch": p.epoch,
                            "loss": window_loss / max(1, window_tokens),
                            "lr": p.lr,
                            "tokens_per_s": window_tokens / max(window_seconds, 1e-9),
                            "elapsed": p.elapsed,
                        }
                        self._emit(record)
                        if self.on_step:
                            self.on_step(record)
                        window_tokens, window_loss, window_seconds = 0, 0.0, 0.0
                    if p.step % t.valid_every == 0:
                        self.validate()
                    reason = self._finished()
                    if p.step % t.save_every == 0 or reason is not None:
                        self.save("last.pt")
                if p.batch_in_epoch >= len(batches):
                    p.epoch += 1
                    p.batch_in_epoch = 0
                    reason = reason or self._finished()
            if p.last_valid_step != p.step and reason != "interrupted":
                self.validate()
                self.save("last.pt")
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.writer.close()
        log.info("training stopped at step %d: %s", p.step, reason)
        if reason == "interrupted":
            raise S2SError(f"interrupted at step {p.step}; rerun the same command to resume")
        return {"step": p.step, "best_bleu": p.best_bleu, "reason": reason}


def train(
    cfg: Config,
    out: str | Path,
    *,
    force: bool = False,
    on_step: Callable[[dict], None] | None = None,
) -> dict:
    return Trainer(cfg, Path(out), force=force, on_step=on_step).run()
