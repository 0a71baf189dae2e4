"""The character / byte language model: an embedding, the same ``RecurrentStack`` the
encoder and decoder use (any cell: LSTM, GRU, vanilla, peephole / layer-norm /
multiplicative LSTM), and an output layer over the units (``s2s.data.units``). Also
what another model needs to start from one: rebuilding it from a checkpoint's payload,
and copying its stack and embedding rows into an encoder or decoder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s2s.config import LMConfig, LMModelConfig, lm_from_dict
from s2s.data.units import Units
from s2s.errors import CheckpointError, ConfigError
from s2s.nn.cells import RecurrentStack, is_lstm
from s2s.nn.dropout import Dropout
from s2s.nn.init import initialize

KIND = "charlm"  # the "kind" of a char-LM checkpoint payload


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
        self.dropout = Dropout(dropout)
        self.output = nn.Linear(self.rnn.output_size, vocab)

    def forward(self, ids: torch.Tensor, state=None):
        """ids: (batch, time) -> logits (batch, time, vocab) and the state after them."""
        top, state = self.rnn(self.dropout(self.embedding(ids)), state)
        return self.output(self.dropout(top)), state

    def features(
        self, ids: torch.Tensor, lengths: torch.Tensor, kinds: tuple[str, ...] = ("hidden",)
    ) -> torch.Tensor:
        """Features of each sequence, the ``kinds`` side by side: ``hidden``, the top
        layer's hidden state after the sequence's last unit; ``cell``, its cell state
        (LSTM-type cells); ``mean``, the top layer's output averaged over the positions;
        ``layers``, every layer's output averaged over the positions, bottom first.
        ids: (batch, time) padded; lengths: (batch,) on the CPU, all >= 1."""
        if "cell" in kinds and not is_lstm(self.cell):
            raise ConfigError(f"feature 'cell': a {self.cell} cell has no cell state")
        packed = pack_padded_sequence(
            self.embedding(ids), lengths, batch_first=True, enforce_sorted=False
        )
        every: list = []
        out, finals = self.rnn(packed, every=every)
        top = finals[-1]
        h, c = (top[0], top[1]) if is_lstm(self.cell) else (top, None)  # (dirs, batch, hidden)
        parts = []
        for kind in kinds:
            if kind in ("mean", "layers"):
                parts += [_mean(o, lengths) for o in (every if kind == "layers" else [out])]
            else:
                parts.append((h if kind == "hidden" else c)[-1])
        return torch.cat(parts, dim=-1)


def _mean(seq, lengths: torch.Tensor) -> torch.Tensor:
    """A packed sequence's mean over each sequence's own positions: (batch, size)."""
    padded, _ = pad_packed_sequence(seq, batch_first=True)  # zeros past the end
    return padded.sum(1) / lengths.to(padded.device, padded.dtype)[:, None]


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


def lm_from_payload(payload: dict, path: object) -> tuple[CharLM, Units, LMConfig]:
    """The model, units and config a char-LM checkpoint's payload holds (eval mode);
    ``path`` names the file in errors."""
    if payload.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a char language-model checkpoint (s2s charlm train)")
    cfg = lm_from_dict(payload["config"])
    units = Units.from_state(payload["units"])
    model = build_lm(cfg.model, units.size)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit the model: {err}".splitlines()[0]
        ) from None
    return model.eval(), units, cfg


@torch.no_grad()
def copy_into(
    lm: CharLM,
    units: Units,
    *,
    rnn: RecurrentStack,
    embedding: nn.Embedding | None,
    vocabulary: list[str],
    where: str,
    direction: str = "forward",
) -> int:
    """Copy the LM's recurrent stack into ``rnn`` (parameters of the same names: a
    bidirectional stack takes it in its forward direction, or with ``direction``
    "backward" in its backward one) and its embedding rows into the rows of
    ``vocabulary``'s single characters that are one LM unit (none when ``embedding`` is
    None). Returns the number of rows copied; a size mismatch is an error that names
    the parameter."""
    key = "model.charlm_backward" if direction == "backward" else "model.charlm"
    mine = dict(rnn.named_parameters())
    theirs = dict(lm.rnn.named_parameters())
    backward = [n for n in mine if n.endswith("_reverse") or ".directions.1." in n]
    if direction == "backward":
        if not backward:
            raise ConfigError(f"{key}: the {where} has no backward direction")
        theirs = {_reverse_name(n): v for n, v in theirs.items()}
        backward = [n for n in mine if n not in backward]  # the forward direction's
    extra = sorted(set(mine) - set(theirs) - set(backward))
    if extra:
        raise ConfigError(
            f"{key}: the {where} has {extra[0]}, which the language model lacks "
            "(match cell, layers and recurrent_dropout)"
        )
    for name, value in theirs.items():
        target = mine.get(name)
        if target is None or target.shape != value.shape:
            shape = "missing" if target is None else tuple(target.shape)
            raise ConfigError(
                f"{key}: {name} is {tuple(value.shape)} in the language model but "
                f"{shape} in the {where} (match cell, layers, hidden and embedding sizes)"
            )
        target.copy_(value)
    if embedding is None:
        return 0
    if embedding.weight.shape[1] != lm.embedding.weight.shape[1]:
        raise ConfigError(
            f"{key}: embedding size {lm.embedding.weight.shape[1]} in the language "
            f"model but {embedding.weight.shape[1]} in the {where}"
        )
    return _copy_rows(lm, units, embedding, vocabulary)


def _copy_rows(lm: CharLM, units: Units, embedding: nn.Embedding, vocabulary: list[str]) -> int:
    """The LM's embedding rows into those of ``vocabulary``'s single characters that are
    one LM unit; returns how many."""
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


def _reverse_name(name: str) -> str:
    """A unidirectional stack's parameter name -> the same parameter of a bidirectional
    stack's backward direction: PyTorch's ``weight_ih_l0`` -> ``weight_ih_l0_reverse``,
    s2s's own cells' ``.directions.0.`` -> ``.directions.1.``."""
    if ".directions.0." in name:
        return name.replace(".directions.0.", ".directions.1.")
    return name + "_reverse"
