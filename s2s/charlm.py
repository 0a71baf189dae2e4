"""Character / byte language models (level 3): the model, its units, sampling, features.

A ``CharLM`` is an embedding, the same ``RecurrentStack`` the encoder and decoder use
(any cell: LSTM, GRU, vanilla, peephole / layer-norm / multiplicative LSTM), and an
output layer over the units. Units are the 256 byte values (``unit: byte``, any
encoding, as Radford et al. 2017 train theirs) or the characters of the training text
(``unit: char``, with one extra id for characters it never saw). ``features`` reads
texts and returns the top layer's final hidden state, for probes such as sentiment
(Radford et al. 2017) and for initialising other models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from s2s.config import LMModelConfig
from s2s.errors import ConfigError
from s2s.nn.cells import RecurrentStack, is_lstm
from s2s.nn.init import initialize

UNKNOWN = "\ufffd"  # char units: id 0, for characters the training text lacked


@dataclass(frozen=True)
class Units:
    """The LM's vocabulary: bytes, or a list of characters (id 0 = unknown)."""

    kind: str
    chars: tuple[str, ...] = ()
    encoding: str = "utf-8"

    @classmethod
    def fit(cls, kind: str, raw: bytes, encoding: str) -> Units:
        if kind == "byte":
            return cls("byte", encoding=encoding)
        text = raw.decode(encoding)
        return cls("char", (UNKNOWN, *sorted(set(text) - {UNKNOWN})), encoding)

    @property
    def size(self) -> int:
        return 256 if self.kind == "byte" else len(self.chars)

    def encode_raw(self, raw: bytes, encoding: str | None = None) -> list[int]:
        """Ids of file contents: byte units take the bytes as they are; char units
        decode them (with ``encoding``, default the training text's)."""
        if self.kind == "byte":
            return list(raw)
        return self.encode(raw.decode(encoding or self.encoding))

    def encode(self, text: str) -> list[int]:
        if self.kind == "byte":
            return list(text.encode(self.encoding, errors="replace"))
        index = {c: i for i, c in enumerate(self.chars)}
        return [index.get(c, 0) for c in text]

    def decode(self, ids: list[int]) -> str:
        if self.kind == "byte":
            return bytes(ids).decode(self.encoding, errors="replace")
        return "".join(self.chars[i] for i in ids)

    def state(self) -> dict:
        return {"kind": self.kind, "chars": list(self.chars), "encoding": self.encoding}

    @classmethod
    def from_state(cls, state: dict) -> Units:
        return cls(state["kind"], tuple(state["chars"]), state["encoding"])


class CharLM(nn.Module):
    def __init__(
        self,
        *,
        vocab: int,
        embedding_size: int,
        cell: str,
        hidden_size: int,
        layers: int,
        stacking: str = "none",
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        activation: str = "tanh",
    ):
        super().__init__()
        self.cell = cell
        self.embedding = nn.Embedding(vocab, embedding_size)
        self.rnn = RecurrentStack(
            cell=cell,
            input_size=embedding_size,
            hidden_size=hidden_size,
            layers=layers,
            stacking=stacking,
            dropout=dropout,
            activation=activation,
            recurrent_dropout=recurrent_dropout,
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(self.rnn.output_size, vocab)

    def forward(self, ids: torch.Tensor, state=None):
        """ids: (batch, time) -> logits (batch, time, vocab) and the state after them."""
        top, state = self.rnn(self.dropout(self.embedding(ids)), state)
        return self.output(self.dropout(top)), state

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The top layer's hidden state after each sequence's last unit: (batch, hidden).
        ids: (batch, time) padded; lengths: (batch,) on the CPU, all >= 1."""
        packed = pack_padded_sequence(
            self.embedding(ids), lengths, batch_first=True, enforce_sorted=False
        )
        _, finals = self.rnn(packed)
        top = finals[-1]
        h = top[0] if is_lstm(self.cell) else top  # (directions, batch, hidden)
        return h[-1]


def build_lm(cfg: LMModelConfig, vocab: int) -> CharLM:
    model = CharLM(
        vocab=vocab,
        embedding_size=cfg.embedding_size,
        cell=cfg.cell,
        hidden_size=cfg.hidden_size,
        layers=cfg.layers,
        stacking=cfg.stacking,
        dropout=cfg.dropout,
        recurrent_dropout=cfg.recurrent_dropout,
        activation=cfg.activation,
    )
    initialize(model, cfg.init)
    return model


@torch.no_grad()
def sample(
    model: CharLM,
    units: Units,
    *,
    prime: str = "",
    length: int = 200,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> str:
    """``length`` units drawn one at a time from softmax(logits / temperature) after
    reading ``prime`` (temperature 0: the argmax). Returns the generated text only."""
    model.eval()
    device = model.output.weight.device
    ids = units.encode(prime) or [ord("\n") if units.kind == "byte" else 0]
    state = None
    logits, state = model(torch.tensor([ids], device=device), state)
    out = []
    for _ in range(length):
        last = logits[0, -1].float()
        if temperature <= 0:
            nxt = int(last.argmax())
        else:
            probs = torch.softmax(last / temperature, dim=-1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        out.append(nxt)
        logits, state = model(torch.tensor([[nxt]], device=device), state)
    return units.decode(out)


@torch.no_grad()
def sequence_features(
    model: CharLM, sequences: list[list[int]], *, batch_size: int = 64
) -> torch.Tensor:
    """``features`` of each id sequence (an empty one reads id 0): (len(sequences), hidden)."""
    model.eval()
    device = model.output.weight.device
    rows = []
    for start in range(0, len(sequences), batch_size):
        seqs = [s or [0] for s in sequences[start : start + batch_size]]
        lengths = torch.tensor([len(s) for s in seqs])
        ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        rows.append(model.features(ids.to(device), lengths).float().cpu())
    return torch.cat(rows)


@torch.no_grad()
def copy_into(
    lm: CharLM,
    units: Units,
    *,
    rnn: RecurrentStack,
    embedding: nn.Embedding,
    vocabulary: list[str],
    where: str,
) -> int:
    """Copy the LM's recurrent stack into ``rnn`` (parameters of the same names: a
    bidirectional stack takes it in its forward direction) and its embedding rows into
    the rows of ``vocabulary``'s single characters that are one LM unit. Returns the
    number of rows copied; a size mismatch is an error that names the parameter."""
    mine = dict(rnn.named_parameters())
    theirs = dict(lm.rnn.named_parameters())
    backward = [n for n in mine if n.endswith("_reverse") or ".directions.1." in n]
    extra = sorted(set(mine) - set(theirs) - set(backward))
    if extra:
        raise ConfigError(
            f"model.charlm: the {where} has {extra[0]}, which the language model lacks "
            "(match cell, layers and recurrent_dropout)"
        )
    for name, value in theirs.items():
        target = mine.get(name)
        if target is None or target.shape != value.shape:
            shape = "missing" if target is None else tuple(target.shape)
            raise ConfigError(
                f"model.charlm: {name} is {tuple(value.shape)} in the language model but "
                f"{shape} in the {where} (match cell, layers, hidden and embedding sizes)"
            )
        target.copy_(value)
    if embedding.weight.shape[1] != lm.embedding.weight.shape[1]:
        raise ConfigError(
            f"model.charlm: embedding size {lm.embedding.weight.shape[1]} in the language "
            f"model but {embedding.weight.shape[1]} in the {where}"
        )
    copied = 0
    for row, symbol in enumerate(vocabulary):
        ids = []
        if len(symbol) == 1 and units.kind == "byte":
            try:  # strictly: a character the encoding lacks has no byte row
                ids = list(symbol.encode(units.encoding))
            except UnicodeEncodeError:
                continue
        elif len(symbol) == 1:
            ids = units.encode(symbol)
        if len(ids) == 1 and not (units.kind == "char" and ids[0] == 0):
            embedding.weight[row] = lm.embedding.weight[ids[0]]
            copied += 1
    return copied
