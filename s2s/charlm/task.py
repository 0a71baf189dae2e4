"""Character / byte language modelling as a task of the training engine.

Truncated backpropagation through time (Williams & Peng 1990), as in Zaremba et al. 2014
and Karpathy's char-rnn: the training text is cut into ``train.batch_size`` contiguous
streams; each update reads the next ``train.bptt`` units of every stream, starting from
the hidden state the previous update ended with (detached), so the model carries
context past its window. When the streams run out an epoch ends and the state resets.
Validation reads the last ``data.valid_fraction`` of the text the same way and reports
bits per unit (per byte or per character); lower is better. The carried state is in
the checkpoint, so a resumed run continues exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from s2s import config as config_mod
from s2s.config import LMConfig
from s2s.data.text import cut, read_raw, read_texts, streams
from s2s.data.units import Units
from s2s.errors import ConfigError, DataError
from s2s.nn.charlm import KIND, CharLM, build_lm, lm_from_payload
from s2s.training.checkpoint import load
from s2s.training.runfolder import check_same_data
from s2s.training.task import Run

log = logging.getLogger(__name__)
UNREAD = object()  # a window's state_in before its first forward pass


@dataclass
class Window:
    """``train.bptt`` units of every stream: inputs x and next units y (batch, time)."""

    x: torch.Tensor
    y: torch.Tensor
    state_in: object = UNREAD  # the carried state it was first read with

    @property
    def n_tokens(self) -> int:
        return self.y.numel()

    @property
    def n_sequences(self) -> int:
        return self.y.shape[0]


def detach(state):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach(s) for s in state)


def to_device(state, device: torch.device):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.to(device)
    return type(state)(to_device(s, device) for s in state)


def undecodable(paths: tuple[str, ...], encoding: str) -> str:
    """The first of ``paths`` that does not decode, with the offset where it fails."""
    for path in paths:
        try:
            read_raw(path).decode(encoding)
        except UnicodeDecodeError as err:
            return f"{path} at offset {err.start}"
    return ", ".join(paths)


class LMTask:
    """A text file in, a ``CharLM`` out; scored by validation bits per unit."""

    kind = KIND
    metric, metric_key, higher_is_better = "bits", "bits", False
    unit = "units"
    parse = staticmethod(config_mod.lm_from_dict)

    def __init__(self, cfg: LMConfig):
        self.cfg = cfg
        self.carry = None  # the hidden state the last applied update ended with
        self.next = None  # the state this update's windows have reached so far

    def prepare(self, run: Run, payload: dict | None) -> CharLM:
        cfg, d, t = self.cfg, self.cfg.data, self.cfg.train
        if run.dist.active:
            raise ConfigError(
                "s2s charlm train runs in one process: data-parallel TBPTT is not supported"
            )
        self.run = run
        raw = read_texts(d.text, d.documents, t.seed, d.encoding)
        if d.limit:
            raw = cut(raw, d.limit, d.encoding if cfg.model.unit == "char" else None)
        self.data_sha1 = hashlib.sha1(raw).hexdigest()
        try:
            self.units = (
                Units.from_state(payload["units"])
                if payload
                else Units.fit(cfg.model.unit, raw, d.encoding)
            )
            ids = self.units.encode_raw(raw)
        except UnicodeDecodeError:
            raise DataError(
                f"{undecodable(d.text, d.encoding)}: bytes that are not valid {d.encoding} "
                "(set data.encoding, or model.unit: byte)"
            ) from None
        split = int(len(ids) * (1.0 - d.valid_fraction))
        train, valid = ids[:split], ids[split:]
        if d.direction == "backward":  # the same held-out text, read from its end
            train, valid = train[::-1], valid[::-1]
        self.train_data = streams(train, t.batch_size, "training")
        self.valid_data = streams(valid, t.batch_size, "validation")
        self.model = build_lm(cfg.model, self.units.size).to(run.device)
        if cfg.model.embedding_from and payload is None:
            self._embedding_from(cfg.model.embedding_from)
        log.info(
            "text %d units (%s, vocabulary %d, %s): train %d x %d streams, valid %d x %d",
            len(ids),
            self.units.kind,
            self.units.size,
            d.direction,
            *self.train_data.shape,
            *self.valid_data.shape,
        )
        return self.model

    @torch.no_grad()
    def _embedding_from(self, path: str) -> None:
        """``model.embedding_from``: copy another char LM's embedding into this one."""
        other, units, _ = lm_from_payload(load(path), path)
        if units != self.units:
            raise ConfigError(
                f"model.embedding_from: {path} has other units ({units.kind}, {units.size}) "
                f"than this text ({self.units.kind}, {self.units.size}): train both on one text"
            )
        mine, theirs = self.model.embedding.weight, other.embedding.weight
        if mine.shape != theirs.shape:
            raise ConfigError(
                f"model.embedding_from: {path}'s embedding is {tuple(theirs.shape)}, "
                f"this model's {tuple(mine.shape)} (match model.embedding_size)"
            )
        mine.copy_(theirs)
        log.info("model.embedding_from: the embedding starts from %s", path)

    # ------------------------------------------------------------------ training
    def epoch(self, epoch: int) -> range:
        """The start of each window; the last one may be shorter."""
        return range(0, self.train_data.shape[1] - 1, self.cfg.train.bptt)

    def batch(self, start: int) -> Window:
        length = min(self.cfg.train.bptt, self.train_data.shape[1] - 1 - start)
        x = self.train_data[:, start : start + length].to(self.run.device)
        y = self.train_data[:, start + 1 : start + 1 + length].to(self.run.device)
        return Window(x, y)

    def loss(self, batch: Window, step: int) -> torch.Tensor:
        if batch.state_in is UNREAD:  # a re-run (to locate a NaN) reads the same state
            batch.state_in = self.carry if self.next is None else self.next
        logits, state = self.model(batch.x, batch.state_in)
        self.next = detach(state)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), batch.y.reshape(-1), reduction="sum"
        )

    def after_update(self, applied: bool) -> None:
        """A skipped update's state may hold the NaN that stopped it: start afresh."""
        self.carry, self.next = (self.next if applied else None), None

    def end_epoch(self) -> None:
        self.carry = None  # the streams are read: the next epoch starts afresh

    def train_fields(self, step: int, loss: float) -> dict:
        return {"bits": loss / math.log(2)}

    def row_normed(self) -> list[torch.Tensor]:
        return [self.model.embedding.weight, self.model.output.weight]

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict]:
        """Bits per unit on the validation streams (state carried across windows)."""
        data, bptt = self.valid_data.to(self.run.device), self.cfg.train.bptt
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
        bits = nll / count / math.log(2)
        return bits, {"bits": bits}

    def describe(self, fields: dict) -> str:
        return f"{fields['bits']:.4f} bits per {self.units.kind}"

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {"units": self.units.state(), "carry": self.carry, "data_sha1": self.data_sha1}

    def restore(self, payload: dict) -> None:
        check_same_data(payload, self.data_sha1, self.run.out)
        self.carry = to_device(detach(payload.get("carry")), self.run.device)
        progress = payload["progress"]
        if "position" in progress:  # written before the engine: units read, not windows
            position = progress.pop("position")
            progress["batch_in_epoch"] = math.ceil(position / self.cfg.train.bptt)
