"""Training and probing character / byte language models (level 5): ``s2s charlm``.

Truncated backpropagation through time (Williams & Peng 1990), as in Zaremba et al. 2014
and Karpathy's char-rnn: the training text is cut into ``train.batch_size`` contiguous
streams; each update reads the next ``train.bptt`` units of every stream, starting from
the hidden state the previous update ended with (detached), so the model carries
context past its window. When the streams run out an epoch ends and the state resets.
Validation reads the last ``data.valid_fraction`` of the text the same way and reports
bits per unit (per byte or per character). The run folder is like a seq2seq run's:
``config.yaml``, ``last.pt``, ``best.pt`` (lowest validation bits), ``metrics.jsonl``;
rerunning the command resumes exactly (the carried state is in the checkpoint).

``probe`` fits an L2-regularised logistic regression on an LM's features of labelled
texts (e.g. MR sentiment, Radford et al. 2017) and reports k-fold accuracy.
"""

from __future__ import annotations

import gzip
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from s2s import checkpoint
from s2s import config as config_mod
from s2s.charlm import CharLM, Units, build_lm, sequence_features
from s2s.config import LMConfig
from s2s.errors import CheckpointError, DataError, S2SError
from s2s.training import runlock
from s2s.training.optim import make_optimizer
from s2s.training.runfolder import (
    append_record,
    catch_stop_signals,
    prepare_run_dir,
    resolve_device,
    trim_metrics,
)
from s2s.training.schedules import configured_learning_rate

log = logging.getLogger(__name__)

KIND = "charlm"  # checkpoint payload kind


def read_raw(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"text file not found: {path}")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path} is not a valid gzip file: {err}") from None
    return raw


def _cut(raw: bytes, limit: int, encoding: str | None) -> bytes:
    """The first ``limit`` bytes, less a character the cut split in two (char units)."""
    cut = raw[:limit]
    if encoding is None or len(cut) == len(raw):
        return cut
    for drop in range(4):
        try:
            cut[: len(cut) - drop].decode(encoding)
            return cut[: len(cut) - drop]
        except UnicodeDecodeError:
            continue
    return cut  # invalid earlier on: reported where the text is decoded


def streams(ids: list[int], count: int, name: str) -> torch.Tensor:
    """``ids`` cut into ``count`` contiguous rows of equal length (the rest dropped)."""
    width = len(ids) // count
    if width < 2:
        raise DataError(
            f"the {name} text has {len(ids)} units: too few for {count} streams "
            "(lower train.batch_size or use more text)"
        )
    return torch.tensor(ids[: width * count], dtype=torch.long).view(count, width)


def _detach(state):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(_detach(s) for s in state)


@dataclass
class LMProgress:
    step: int = 0
    epoch: int = 0
    position: int = 0  # units of each training stream already read this epoch
    elapsed: float = 0.0
    best_bits: float = float("inf")
    last_valid_step: int = -1


class LMTrainer:
    """One char-LM run folder; ``run()`` trains to ``train.max_steps``."""

    def __init__(
        self,
        cfg: LMConfig,
        out: Path,
        *,
        force: bool = False,
        on_step: Callable[[dict], None] | None = None,
    ):
        self.cfg, self.out, self.on_step = cfg, Path(out), on_step
        t, d = cfg.train, cfg.data
        resume = prepare_run_dir(cfg, self.out, force, parse=config_mod.lm_from_dict)
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        torch.manual_seed(t.seed)
        raw = read_raw(d.text)
        if d.limit:
            raw = _cut(raw, d.limit, d.encoding if cfg.model.unit == "char" else None)
        payload = checkpoint.load(self.out / "last.pt") if resume else None
        try:
            self.units = (
                Units.from_state(payload["units"])
                if payload
                else Units.fit(cfg.model.unit, raw, d.encoding)
            )
            ids = self.units.encode_raw(raw)
        except UnicodeDecodeError as err:
            raise DataError(
                f"{d.text}: bytes that are not valid {d.encoding} at offset {err.start} "
                "(set data.encoding, or model.unit: byte)"
            ) from None
        cut = int(len(ids) * (1.0 - d.valid_fraction))
        self.train_data = streams(ids[:cut], t.batch_size, "training")
        self.valid_data = streams(ids[cut:], t.batch_size, "validation")
        self.model = build_lm(cfg.model, self.units.size).to(self.device)
        self.optimizer = make_optimizer(self.model, t)
        self.progress = LMProgress()
        self.carry = None  # the hidden state the last update ended with
        self.lr = cfg.train.lr
        if payload is not None:
            self._restore(payload)
        else:
            trim_metrics(self.out / "metrics.jsonl", 0)
        log.info(
            "text %d units (%s, vocabulary %d): train %d x %d streams, valid %d x %d; "
            "model %d parameters on %s",
            len(ids),
            self.units.kind,
            self.units.size,
            *self.train_data.shape,
            *self.valid_data.shape,
            sum(p.numel() for p in self.model.parameters()),
            self.device,
        )
        self.stop_requested = False

    # ------------------------------------------------------------------ state
    def _payload(self) -> dict:
        return {
            "kind": KIND,
            "config": config_mod.to_dict(self.cfg),
            "units": self.units.state(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "progress": asdict(self.progress),
            "carry": self.carry,
            "rng": checkpoint.rng_state(self.device),
        }

    def _restore(self, payload: dict) -> None:
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.progress = LMProgress(**payload["progress"])
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise S2SError(f"cannot resume from {self.out / 'last.pt'}: {err}") from None
        self.carry = _detach(payload.get("carry"))
        if self.carry is not None:
            self.carry = _to(self.carry, self.device)
        checkpoint.restore_rng(payload["rng"], self.device)
        trim_metrics(self.out / "metrics.jsonl", self.progress.step)
        log.info("resumed from %s at step %d", self.out / "last.pt", self.progress.step)

    def save(self, name: str) -> None:
        checkpoint.save(self.out / name, self._payload())

    def _emit(self, record: dict) -> None:
        append_record(self.out / "metrics.jsonl", record)

    # ------------------------------------------------------------------ steps
    def _lr(self) -> float:
        return configured_learning_rate(self.progress.step, self.cfg.train, self.cfg.train.lr)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Bits per unit on the validation streams (state carried across windows)."""
        self.model.eval()
        data, bptt = self.valid_data.to(self.device), self.cfg.train.bptt
        state, nll, count = None, 0.0, 0
        for pos in range(0, data.shape[1] - 1, bptt):
            x = data[:, pos : pos + bptt]
            y = data[:, pos + 1 : pos + 1 + bptt]
            x = x[:, : y.shape[1]]
            logits, state = self.model(x, state)
            nll += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum"
                )
            )
            count += y.numel()
        self.model.train()
        return nll / count / math.log(2)

    def _update(self) -> float | None:
        """One TBPTT update; returns its bits per unit, or None at the end of an epoch."""
        p, t = self.progress, self.cfg.train
        width = self.train_data.shape[1]
        length = min(t.bptt, width - 1 - p.position)
        if length <= 0:
            return None
        x = self.train_data[:, p.position : p.position + length].to(self.device)
        y = self.train_data[:, p.position + 1 : p.position + 1 + length].to(self.device)
        self.lr = self._lr()  # this update's rate (logged after the step count moves on)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_mult", 1.0)
        logits, state = self.model(x, self.carry)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), t.clip_grad_norm or float("inf")
        )
        value = float(loss.detach())
        if not (math.isfinite(value) and math.isfinite(float(norm))):
            raise S2SError(
                f"non-finite loss or gradients at step {p.step + 1}; last.pt holds the last "
                "good state (lower train.lr or train.clip_grad_norm)"
            )
        self.optimizer.step()
        self.carry = _detach(state)
        p.position += length
        return value / math.log(2)

    def _validate(self) -> None:
        p = self.progress
        bits = self.evaluate()
        p.last_valid_step = p.step
        improved = bits < p.best_bits
        if improved:
            p.best_bits = bits
        self._emit(
            {"kind": "valid", "step": p.step, "epoch": p.epoch, "bits": bits, "elapsed": p.elapsed}
        )
        log.info(
            "step %d valid %.4f bits per %s%s",
            p.step,
            bits,
            self.units.kind,
            " (best)" if improved else "",
        )
        if improved:
            self.save("best.pt")

    def _finished(self) -> str | None:
        t, p = self.cfg.train, self.progress
        if p.step >= t.max_steps:
            return f"reached train.max_steps ({t.max_steps})"
        if t.max_minutes and p.elapsed >= 60 * t.max_minutes:
            return f"reached train.max_minutes ({t.max_minutes})"
        if self.stop_requested:
            return "interrupted"
        return None

    def _request_stop(self, signum, _frame) -> None:
        log.warning("signal %d: saving a checkpoint after this step", signum)
        self.stop_requested = True

    def run(self) -> dict:
        t, p = self.cfg.train, self.progress
        restore_signals = catch_stop_signals(self._request_stop)
        self.model.train()
        window_bits, window_steps, window_seconds = 0.0, 0, 0.0
        try:
            reason = self._finished()
            while reason is None:
                start = time.perf_counter()
                bits = self._update()
                if bits is None:  # the streams are read: a new epoch, a fresh state
                    p.epoch, p.position, self.carry = p.epoch + 1, 0, None
                    continue
                p.step += 1
                seconds = time.perf_counter() - start
                p.elapsed += seconds
                window_bits, window_steps = window_bits + bits, window_steps + 1
                window_seconds += seconds
                if p.step % t.log_every == 0:
                    record = {
                        "kind": "train",
                        "step": p.step,
                        "epoch": p.epoch,
                        "bits": window_bits / window_steps,
                        "lr": self.lr,
                        "units_per_s": window_steps
                        * t.batch_size
                        * t.bptt
                        / max(window_seconds, 1e-9),
                        "elapsed": p.elapsed,
                    }
                    self._emit(record)
                    if self.on_step:
                        self.on_step(record)
                    window_bits, window_steps, window_seconds = 0.0, 0, 0.0
                if p.step % t.valid_every == 0:
                    self._validate()
                reason = self._finished()
                if p.step % t.save_every == 0 or reason is not None:
                    self.save("last.pt")
            if p.last_valid_step != p.step and reason != "interrupted":
                self._validate()
                self.save("last.pt")
        finally:
            restore_signals()
            runlock.release(self.out)
        log.info("training stopped at step %d: %s", p.step, reason)
        if reason == "interrupted":
            raise S2SError(f"interrupted at step {p.step}; rerun the same command to resume")
        return {"step": p.step, "best_bits": p.best_bits, "reason": reason}


def _to(state, device):
    if isinstance(state, torch.Tensor):
        return state.to(device)
    return type(state)(_to(s, device) for s in state)


def train_lm(cfg: LMConfig, out: str | Path, *, force: bool = False, on_step=None) -> dict:
    return LMTrainer(cfg, Path(out), force=force, on_step=on_step).run()


# --------------------------------------------------------------------------- use


def load_lm(path: str | Path) -> tuple[CharLM, Units, LMConfig]:
    payload = checkpoint.load(path)
    if payload.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a char language-model checkpoint (s2s charlm train)")
    cfg = config_mod.lm_from_dict(payload["config"])
    units = Units.from_state(payload["units"])
    model = build_lm(cfg.model, units.size)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit the model: {err}".splitlines()[0]
        ) from None
    return model.eval(), units, cfg


def read_labelled(pos: str | Path, neg: str | Path) -> tuple[list[bytes], list[int]]:
    """Non-empty lines of two files (raw bytes, any encoding), labelled 1 and 0."""
    texts, labels = [], []
    for path, label in ((pos, 1), (neg, 0)):
        lines = [line.rstrip(b"\r") for line in read_raw(path).split(b"\n")]
        lines = [line for line in lines if line.strip()]
        if not lines:
            raise DataError(f"{path} has no non-empty lines")
        texts += lines
        labels += [label] * len(lines)
    return texts, labels


def logistic_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    l2: float,
    steps: int = 100,
) -> float:
    """Standardise on the training part, fit L2 logistic regression (L-BFGS), score."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    w = torch.zeros(a.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    a64, y64 = a.double(), train_y.double()
    opt = torch.optim.LBFGS([w, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(a64 @ w + bias, y64) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        predicted = (b.double() @ w + bias) > 0
    return float((predicted == test_y.bool()).double().mean())


def probe(
    features: torch.Tensor, labels: list[int], *, folds: int = 10, seed: int = 0, l2: float = 1e-3
) -> list[float]:
    """Accuracy of each of ``folds`` cross-validation folds (a seeded shuffle)."""
    if folds < 2 or folds > len(labels):
        raise S2SError(f"--folds must be between 2 and the number of texts ({len(labels)})")
    y = torch.tensor(labels)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    parts = torch.tensor_split(order, folds)
    scores = []
    for k, test in enumerate(parts):
        train = torch.cat([part for j, part in enumerate(parts) if j != k])
        scores.append(logistic_accuracy(features[train], y[train], features[test], y[test], l2=l2))
    return scores


def probe_files(
    path: str | Path,
    pos: str | Path,
    neg: str | Path,
    *,
    folds: int,
    seed: int,
    l2: float,
    encoding: str | None,
) -> tuple[list[float], int, int]:
    """(fold accuracies, texts, feature size) of an LM checkpoint on two labelled files."""
    model, units, _ = load_lm(path)
    texts, labels = read_labelled(pos, neg)
    try:
        seqs = [units.encode_raw(t, encoding) for t in texts]
    except UnicodeDecodeError as err:
        raise DataError(
            f"labelled text is not valid {encoding or units.encoding}: {err.reason} "
            "(use --encoding)"
        ) from None
    features = sequence_features(model, seqs)
    return probe(features, labels, folds=folds, seed=seed, l2=l2), len(texts), features.shape[1]
