"""The encoder: embeddings and a (bi)directional recurrent stack.

Sources run by length (``s2s.nn.cells.by_length``): padding never reaches a real
position, and the backward direction starts at each sentence's real end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from s2s.nn.cells import RecurrentStack
from s2s.nn.dropout import Dropout


@dataclass
class EncoderOutput:
    states: torch.Tensor  # (batch, src_len, enc_size): attention keys and values
    mask: torch.Tensor  # (batch, src_len) bool, True at real tokens
    final: torch.Tensor  # (batch, enc_size): top layer's final state, directions concatenated
    prepared: torch.Tensor | None = None  # attention keys after Attention.prepare
    # every layer's final state(s), directions concatenated: (batch, layers, kinds,
    # enc_size), kinds 2 (h, c) for LSTM cells, else 1 (h); the copied bridge reads it
    final_states: torch.Tensor | None = None

    def reorder(self, index: torch.Tensor) -> "EncoderOutput":
        """Select / repeat batch rows, e.g. to expand sentences into beams."""
        pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        return replace(
            self,
            states=pick(self.states),
            mask=pick(self.mask),
            final=pick(self.final),
            prepared=pick(self.prepared),
            final_states=pick(self.final_states),
        )


class Encoder(nn.Module):
    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_size: int,
        cell: str,
        hidden_size: int,
        layers: int,
        bidirectional: bool,
        stacking: str,
        dropout: float,
        embedding_dropout: float,
        activation: str = "tanh",
        padding_idx: int = 0,
        recurrent_dropout: float = 0.0,
        full_state: bool = False,
    ):
        """``full_state``: keep an LSTM's final c (``EncoderOutput.final_states``) for a
        copied bridge; fused LSTMs then run packed, which costs time."""
        super().__init__()
        self.full_state = full_state
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=padding_idx)
        self.embedding_dropout = Dropout(embedding_dropout)
        self.rnn = RecurrentStack(
            cell=cell,
            input_size=embedding_size,
            hidden_size=hidden_size,
            layers=layers,
            bidirectional=bidirectional,
            stacking=stacking,
            dropout=dropout,
            activation=activation,
            recurrent_dropout=recurrent_dropout,
        )
        self.output_size = self.rnn.output_size

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """src: (batch, src_len) token ids; src_lengths: (batch,), every length >= 1."""
        emb = self.embedding_dropout(self.embedding(src))  # (batch, src_len, emb)
        states, finals = self.rnn(emb, lengths=src_lengths, full_state=self.full_state)
        final_states = torch.stack(
            [
                torch.stack(
                    [torch.cat(list(k), dim=-1) for k in (f if isinstance(f, tuple) else (f,))],
                    dim=1,
                )  # (batch, kinds, enc_size): each kind (directions, batch, hidden) joined
                for f in finals
            ],
            dim=1,
        )
        final = final_states[:, -1, 0]  # (batch, enc_size): the top layer's h
        mask = (
            torch.arange(src.shape[1], device=src.device)[None, :]
            < src_lengths.to(src.device)[:, None]
        )
        return EncoderOutput(states=states, mask=mask, final=final, final_states=final_states)
