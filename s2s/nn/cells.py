"""Recurrent cells and the stacked recurrent layer.

Each layer is one fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` kernel, so a whole
sequence (padded or packed) runs without a Python step loop; the decoder calls the same
modules on length-1 inputs when it must step. Between layers: dropout (not on the
recurrent connections, Zaremba et al. 2014) and plain, residual or dense-residual wiring
(Britz et al. 2017, §4.4), or skip connections (Graves 2013).

Cells that the fused kernels do not offer run in ``LoopRNN``, a step loop with the
same interface as a single-layer ``nn.LSTM``: the peephole LSTM (Gers et al. 2002),
layer-normalised LSTM and GRU (Ba et al. 2016), the multiplicative LSTM (Krause et al.
2016), and any cell with variational recurrent dropout (one mask per sequence on h,
Gal & Ghahramani 2016).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from s2s.config import ACTIVATIONS, CELLS, STACKINGS
from s2s.nn.dropout import Dropout
from s2s.nn.kernels import FUSED, LayerState, Sequence, by_length
from s2s.nn.precision import autocast_dtype, cpu_has_bf16, recurrent_dtype

LSTM_CELLS = ("lstm", "peephole_lstm", "layernorm_lstm", "mlstm")


def is_lstm(cell: str) -> bool:
    """Cells whose state is an (h, c) pair."""
    return cell in LSTM_CELLS


def make_rnn(
    *,
    cell: str,
    input_size: int,
    hidden_size: int,
    bidirectional: bool,
    activation: str,
    recurrent_dropout: float = 0.0,
) -> nn.Module:
    """One single-layer recurrent module: a fused kernel where PyTorch has one."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell '{cell}'; valid values: {', '.join(CELLS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{activation}'; valid: {ACTIVATIONS}")
    if cell not in ("lstm", "gru", "rnn") or recurrent_dropout > 0:
        return LoopRNN(
            cell=cell,
            input_size=input_size,
            hidden_size=hidden_size,
            bidirectional=bidirectional,
            activation=activation,
            recurrent_dropout=recurrent_dropout,
        )
    common = dict(batch_first=True, bidirectional=bidirectional)
    if cell == "lstm":
        return nn.LSTM(input_size, hidden_size, **common)
    if cell == "gru":
        return nn.GRU(input_size, hidden_size, **common)
    return nn.RNN(input_size, hidden_size, nonlinearity=activation, **common)


class LoopCell(nn.Module):
    """One direction of a step-loop cell. Gate blocks are stacked like PyTorch's
    (LSTM i, f, g, o; GRU r, z, n) under the same parameter names, so that
    s2s/nn/init.py treats them alike."""

    def __init__(self, *, cell: str, input_size: int, hidden_size: int, activation: str):
        super().__init__()
        self.kind = "lstm" if is_lstm(cell) else cell.removeprefix("layernorm_")  # arithmetic
        self.gates = {"lstm": 4, "gru": 3, "rnn": 1}[self.kind]
        self.activation = torch.relu if activation == "relu" else torch.tanh
        size = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(size, hidden_size))
        self.bias_ih = nn.Parameter(torch.zeros(size))
        self.bias_hh = nn.Parameter(torch.zeros(size))
        # Gers et al. 2002: the cell state looks into the input, forget and output gates.
        self.peephole = (
            nn.Parameter(torch.zeros(3 * hidden_size)) if cell == "peephole_lstm" else None
        )
        # Krause et al. 2016, eq. 18-19: an input-dependent recurrent transition,
        # m = (W_mx x) * (W_mh h), takes h's place in the gates.
        self.multiplicative = cell == "mlstm"
        if self.multiplicative:
            self.weight_mx = nn.Parameter(torch.empty(hidden_size, input_size))
            self.weight_mh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.layer_norm = cell.startswith("layernorm_")
        if self.layer_norm:  # Ba et al. 2016, §3.1: normalise each term, then the cell
            self.norm_ih = nn.LayerNorm(size)
            self.norm_hh = nn.LayerNorm(size)
            self.norm_c = nn.LayerNorm(hidden_size) if self.kind == "lstm" else None

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None):
        """x: (batch, input), h and c: (batch, hidden) -> new (h, c)."""
        return self.step(*self.input_terms(x), h, c)

    def input_terms(self, x: torch.Tensor):
        """The terms of a step that depend on the input alone, for any leading shape
        (a whole sequence at once in ``LoopRNN``): W_x x + b_x, normalised first with
        layer norm, and the mLSTM's W_mx x (else None)."""
        wx = F.linear(x, self.weight_ih)
        if self.layer_norm:
            wx = self.norm_ih(wx)
        mx = F.linear(x, self.weight_mx) if self.multiplicative else None
        return wx + self.bias_ih, mx

    def step(self, wx: torch.Tensor, mx: torch.Tensor | None, h: torch.Tensor, c):
        """One step from ``input_terms``' terms at this position -> new (h, c)."""
        if self.multiplicative:
            wh = F.linear(mx * F.linear(h, self.weight_mh), self.weight_hh)
        else:
            wh = F.linear(h, self.weight_hh)
        if self.layer_norm:
            wh = self.norm_hh(wh)
        wh = wh + self.bias_hh
        if self.kind == "rnn":
            return self.activation(wx + wh), None
        if self.kind == "gru":
            xr, xz, xn = wx.chunk(3, dim=-1)
            hr, hz, hn = wh.chunk(3, dim=-1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            return (1 - z) * n + z * h, None
        i, f, g, o = (wx + wh).chunk(4, dim=-1)
        if self.peephole is not None:  # diagonal weights, one vector per gate
            p_i, p_f, p_o = self.peephole.chunk(3)
            i = i + p_i * c
            f = f + p_f * c
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.peephole is not None:
            o = o + p_o * c_new
        shown = self.norm_c(c_new) if self.layer_norm else c_new
        return torch.sigmoid(o) * torch.tanh(shown), c_new


@contextlib.contextmanager
def one_mask_per_sequence(module: nn.Module):
    """Within it, each ``LoopRNN`` inside ``module`` keeps the recurrent-dropout masks it
    draws: a decoder that runs its stack one position per call (input feeding,
    sequential scheduled sampling) applies one mask per sequence, as in one call."""
    layers = [m for m in module.modules() if isinstance(m, LoopRNN)]
    for layer in layers:
        layer.held = {}
    try:
        yield
    finally:
        for layer in layers:
            layer.held = None


class LoopRNN(nn.Module):
    """A single recurrent layer run as a Python step loop, with the call signature of a
    batch-first single-layer ``nn.LSTM`` / ``nn.GRU``: padded or packed input, state
    (directions, batch, hidden) or an (h, c) pair of them."""

    def __init__(
        self,
        *,
        cell: str,
        input_size: int,
        hidden_size: int,
        bidirectional: bool,
        activation: str = "tanh",
        recurrent_dropout: float = 0.0,
    ):
        super().__init__()
        self.cell = cell
        self.hidden_size = hidden_size
        self.recurrent_dropout = recurrent_dropout
        self.held: dict[int, torch.Tensor] | None = None  # masks kept across calls
        self.directions = nn.ModuleList(
            LoopCell(
                cell=cell, input_size=input_size, hidden_size=hidden_size, activation=activation
            )
            for _ in range(2 if bidirectional else 1)
        )

    def _mask(self, direction: int, like: torch.Tensor, batch: int) -> torch.Tensor | None:
        """Gal & Ghahramani 2016: one dropout mask on h per sequence, all its steps (kept
        across calls inside ``one_mask_per_sequence``); None when none applies (nothing
        is allocated then: the decoder's loops call this once per position)."""
        if not (self.training and self.recurrent_dropout > 0):
            return None
        held = self.held if self.held is not None else {}
        mask = held.get(direction)
        if mask is None or mask.shape != (batch, self.hidden_size):
            keep = 1.0 - self.recurrent_dropout
            probs = like.new_full((batch, self.hidden_size), keep)
            mask = held[direction] = torch.bernoulli(probs) / keep
        return mask

    def forward(self, x: Sequence, state: LayerState | None = None):
        packed = isinstance(x, PackedSequence)
        if packed:
            padded, lengths = pad_packed_sequence(x, batch_first=True)
        else:
            padded = x
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        batch, steps, _ = padded.shape
        lengths = lengths.to(padded.device)
        shortest = int(lengths.min()) if batch else 0
        lstm = is_lstm(self.cell)
        outputs, finals_h, finals_c = [], [], []
        for d, cell in enumerate(self.directions):
            if state is None:
                h = padded.new_zeros(batch, self.hidden_size)
                c = padded.new_zeros(batch, self.hidden_size) if lstm else None
            else:
                h = (state[0] if lstm else state)[d]
                c = state[1][d] if lstm else None
            mask = self._mask(d, padded, batch)
            order = torch.arange(steps, device=padded.device).expand(batch, steps)
            if d == 1:  # the backward direction reads each sequence from its real end
                order = torch.where(order < lengths[:, None], lengths[:, None] - 1 - order, order)
            inputs = padded.gather(1, order.unsqueeze(-1).expand_as(padded))
            # the input's terms for all positions in one product; then one step per position
            wx, mx = cell.input_terms(inputs)
            per_step = zip(wx.unbind(1), mx.unbind(1) if mx is not None else [None] * steps)
            outs = []
            for t, (wx_t, mx_t) in enumerate(per_step):
                h_new, c_new = cell.step(wx_t, mx_t, h if mask is None else h * mask, c)
                if t < shortest:  # every sequence still running: nothing to hold back
                    h, c = h_new, c_new
                    outs.append(h_new)
                    continue
                live = (t < lengths).unsqueeze(1)
                h = torch.where(live, h_new, h)
                if lstm:
                    c = torch.where(live, c_new, c)
                outs.append(torch.where(live, h_new, torch.zeros_like(h_new)))
            out = torch.stack(outs, dim=1)  # (batch, steps, hidden), in reading order
            if d == 1:
                out = out.gather(1, order.unsqueeze(-1).expand_as(out))
            outputs.append(out)
            finals_h.append(h)
            finals_c.append(c)
        out = torch.cat(outputs, dim=-1)
        final_h = torch.stack(finals_h)
        final = (final_h, torch.stack(finals_c)) if lstm else final_h
        if packed:
            out = pack_padded_sequence(out, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return out, final


def _data(x: Sequence) -> torch.Tensor:
    return x.data if isinstance(x, PackedSequence) else x


def _with_data(x: Sequence, data: torch.Tensor) -> Sequence:
    return x._replace(data=data) if isinstance(x, PackedSequence) else data


def _float_state(state):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.float()
    return tuple(_float_state(s) for s in state)


def run_layer(
    rnn: nn.Module,
    inp: Sequence,
    state,
    lengths: torch.Tensor | None = None,
    full_state: bool = False,
) -> tuple[Sequence, LayerState]:
    """One recurrent layer, in the dtype ``recurrent_dtype`` picks under autocast
    (``s2s.nn.precision``: bf16 where the kernel and the CPU pay for it, else float32).
    With ``lengths`` (right-padded input): ``by_length`` (``full_state``: its)."""
    data = _data(inp)
    device = data.device.type
    autocast = autocast_dtype(device)
    fused = isinstance(rnn, FUSED)
    dtype = recurrent_dtype(
        device,
        autocast,
        fused=fused,
        packed=isinstance(inp, PackedSequence)
        or (lengths is not None and (not fused or full_state)),
        cpu_bf16=cpu_has_bf16(),
    )
    if dtype == torch.float32:
        with torch.autocast(device, enabled=False):
            inp, state = _with_data(inp, data.float()), _float_state(state)
            return by_length(rnn, inp, state, lengths, full_state)
    return by_length(rnn, inp, state, lengths, full_state)


class RecurrentStack(nn.Module):
    """``layers`` recurrent layers; returns the top output and every layer's final state.

    Wiring, with o_l the output of layer l and x_l its input (x_1 = the embeddings;
    sizes match from layer 2 on, so the sums start there):
    none: x_{l+1} = o_l; residual: x_{l+1} = o_l + x_l for l >= 2; dense residual
    (Britz et al. 2017, §4.4): x_{l+1} = o_l + x_2 + ... + x_l, every layer's input
    reaching all layers above it (with two layers it equals residual); skip (Graves
    2013): x_{l+1} = [o_l; x_1] and the stack's output is o_1 + ... + o_L.
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
        recurrent_dropout: float = 0.0,
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
                input_size=input_size
                if i == 0
                else self.output_size + (input_size if stacking == "skip" else 0),
                hidden_size=hidden_size,
                bidirectional=bidirectional,
                activation=activation,
                recurrent_dropout=recurrent_dropout,
            )
            for i in range(layers)
        )
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: Sequence,
        state: list[LayerState] | None = None,
        lengths: torch.Tensor | None = None,
        every: list | None = None,
        full_state: bool = False,
    ) -> tuple[Sequence, list[LayerState]]:
        """x: (batch, time, input) or a PackedSequence of it; with ``lengths``, x is
        right-padded and runs as ``by_length`` says (``full_state``: an LSTM's final c
        too). ``every``: a list that receives each layer's output o_l (as x), bottom
        first."""
        finals: list[LayerState] = []
        inputs = None  # dense: x_2 + ... + x_l
        outputs = None  # skip: o_1 + ... + o_l
        inp = x
        for i, rnn in enumerate(self.layers):
            rnn_in = _with_data(inp, self.dropout(_data(inp))) if i > 0 else inp
            if self.stacking == "skip" and i > 0:  # the input reaches every layer
                rnn_in = _with_data(rnn_in, torch.cat([_data(rnn_in), _data(x)], dim=-1))
            layer_state = None if state is None else state[i]
            out, final = run_layer(rnn, rnn_in, layer_state, lengths, full_state)
            finals.append(final)
            o = _data(out)
            if self.stacking == "residual" and i > 0:
                o = o + _data(inp)
            elif self.stacking == "dense" and i > 0:
                inputs = _data(inp) if inputs is None else inputs + _data(inp)
                o = o + inputs
            elif self.stacking == "skip":  # every layer reaches the output (Graves 2013,
                outputs = o if outputs is None else outputs + o  # eq. 6), as their sum
            inp = _with_data(out, o)
            if every is not None:
                every.append(inp)
        if self.stacking == "skip":
            inp = _with_data(inp, outputs)
        return inp, finals
