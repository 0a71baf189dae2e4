"""Recurrent cells and the stacked recurrent layer (level 1).

Each layer is one fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` kernel, so a whole
sequence (padded or packed) runs without a Python step loop; the decoder calls the same
modules on length-1 inputs when it must step. Between layers: dropout (not on the
recurrent connections, Zaremba et al. 2014) and plain, residual or dense-residual wiring
(Britz et al. 2017, §4.4).
"""

from __future__ import annotations

from typing import Union

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from s2s.config import ACTIVATIONS, CELLS, STACKINGS

# A layer's recurrent state: h for GRU / vanilla RNN, (h, c) for LSTM;
# each tensor is (directions, batch, hidden).
LayerState = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
Sequence = Union[torch.Tensor, PackedSequence]


def make_rnn(
    *, cell: str, input_size: int, hidden_size: int, bidirectional: bool, activation: str
) -> nn.RNNBase:
    """One fused single-layer recurrent kernel."""
    common = dict(batch_first=True, bidirectional=bidirectional)
    if cell == "lstm":
        return nn.LSTM(input_size, hidden_size, **common)
    if cell == "gru":
        return nn.GRU(input_size, hidden_size, **common)
    if cell == "rnn":
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; valid: {ACTIVATIONS}")
        return nn.RNN(input_size, hidden_size, nonlinearity=activation, **common)
    raise ValueError(f"unknown cell '{cell}'; valid values: {', '.join(CELLS)}")


def _data(x: Sequence) -> torch.Tensor:
    return x.data if isinstance(x, PackedSequence) else x


def _with_data(x: Sequence, data: torch.Tensor) -> Sequence:
    return x._replace(data=data) if isinstance(x, PackedSequence) else data


class RecurrentStack(nn.Module):
    """``layers`` recurrent layers; returns the top output and every layer's final state.

    Wiring, with o_l the output of layer l and x_l its input (x_1 = the embeddings):
    none: x_{l+1} = o_l; residual: x_{l+1} = o_l + x_l for l >= 2 (sizes match from
    layer 2 on); dense: x_{l+1} = o_1 + ... + o_l.
    """

    def __init__(
        self,
        *,
        cell: str,
        input_size: int,
        hidden_size: int,
        layers: int,
        bidirectional: bool = False,
        stacking: str = "none",
        dropout: float = 0.0,
        activation: str = "tanh",
    ):
        super().__init__()
        if stacking not in STACKINGS:
            raise ValueError(f"unknown stacking '{stacking}'; valid: {', '.join(STACKINGS)}")
        self.cell = cell
        self.stacking = stacking
        self.output_size = hidden_size * (2 if bidirectional else 1)
        self.layers = nn.ModuleList(
            make_rnn(
                cell=cell,
                input_size=input_size if i == 0 else self.output_size,
                hidden_size=hidden_size,
                bidirectional=bidirectional,
                activation=activation,
            )
            for i in range(layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Sequence, state: list[LayerState] | None = None
    ) -> tuple[Sequence, list[LayerState]]:
        """x: (batch, time, input) or a PackedSequence of it."""
        finals: list[LayerState] = []
        total = None  # running sum of outputs, for dense wiring
        inp = x
        for i, rnn in enumerate(self.layers):
            rnn_in = _with_data(inp, self.dropout(_data(inp))) if i > 0 else inp
            out, final = rnn(rnn_in, None if state is None else state[i])
            finals.append(final)
            o = _data(out)
            if self.stacking == "residual" and i > 0:
                o = o + _data(inp)
            elif self.stacking == "dense":
                total = o if total is None else total + o
                o = total
            inp = _with_data(out, o)
        return inp, finals
