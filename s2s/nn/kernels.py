"""How a fused recurrent layer (``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``) is run: over
right-padded input by length (the encoder: the fused kernel for each direction, as if
packed), or one position through PyTorch's cell kernels (a decoder step)."""

from __future__ import annotations

from typing import Union

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from s2s.nn.precision import autocast_dtype

Sequence = Union[torch.Tensor, PackedSequence]
# A layer's recurrent state: h for GRU / vanilla RNN, (h, c) for LSTM;
# each tensor is (directions, batch, hidden).
LayerState = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]

FUSED = (nn.LSTM, nn.GRU, nn.RNN)


def by_length(
    rnn: nn.Module,
    x: Sequence,
    state,
    lengths: torch.Tensor | None,
    full_state: bool = False,
):
    """``rnn`` over x; with ``lengths``, x is right-padded and the result is as if it
    were packed: the output is zero at padding and the final state is each sequence's
    own. Fused layers run padded (oneDNN has no packed kernel, and runs padded input in
    bf16), the backward direction over each sequence reversed within its length; their
    final state is h alone, unless ``full_state`` (an LSTM's c too, for a copied
    bridge): then they run packed. Step-loop layers run packed."""
    if lengths is None:
        if _one_plain_step(rnn, x, state):
            return step_cell(rnn, x, state)
        return rnn(x, state)
    if not isinstance(rnn, FUSED) or full_state:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = rnn(packed, state)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], final
    if state is not None:
        raise ValueError("a fused layer run by length starts from a zero state")
    batch, steps, _ = x.shape
    lengths = lengths.to(x.device)
    t = torch.arange(steps, device=x.device).expand(batch, steps)
    real = t < lengths[:, None]
    outs, finals = [], []
    for suffix in ("", "_reverse")[: 2 if rnn.bidirectional else 1]:
        order = torch.where(real, lengths[:, None] - 1 - t, t) if suffix else None
        inp = x if order is None else x.gather(1, order.unsqueeze(-1).expand_as(x))
        out = _one_direction(rnn, inp, suffix)
        finals.append(out[torch.arange(batch, device=x.device), lengths - 1])
        if order is not None:
            out = out.gather(1, order.unsqueeze(-1).expand_as(out))
        outs.append(out)
    out = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
    return out * real.unsqueeze(-1).to(out.dtype), torch.stack(finals)


def _one_plain_step(rnn: nn.Module, x: Sequence, state) -> bool:
    """A single float32 position for a unidirectional fused layer (under bf16 autocast
    the cell kernels measured no faster: there the sequence kernel stays)."""
    if not isinstance(x, torch.Tensor) or x.shape[1] != 1 or state is None:
        return False
    if not isinstance(rnn, FUSED) or rnn.bidirectional:
        return False
    return autocast_dtype(x.device.type) is None


def step_cell(rnn: nn.Module, x: torch.Tensor, state: LayerState):
    """One time step of a single-layer unidirectional fused module, as ``rnn(x, state)``
    computes it (x: (batch, 1, input)), through PyTorch's cell kernels: a decoder step
    (input feeding, search) without the set-up of a sequence kernel for one position,
    about 1.4x faster (docs/speed.md). Under autocast, in its dtype."""
    dtype = autocast_dtype(x.device.type) or x.dtype
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    weights = [getattr(rnn, name).to(dtype) for name in names]
    inp = x[:, 0].to(dtype)
    if isinstance(rnn, nn.LSTM):
        h, c = torch.lstm_cell(inp, (state[0][0].to(dtype), state[1][0].to(dtype)), *weights)
        return h.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0))
    if isinstance(rnn, nn.GRU):
        cell = torch.gru_cell
    else:
        cell = torch.rnn_relu_cell if rnn.nonlinearity == "relu" else torch.rnn_tanh_cell
    h = cell(inp, state[0].to(dtype), *weights)
    return h.unsqueeze(1), h.unsqueeze(0)


def _one_direction(rnn: nn.Module, x: torch.Tensor, suffix: str) -> torch.Tensor:
    """One direction of a single-layer fused module over padded x, from a zero state."""
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    weights = [getattr(rnn, name + suffix) for name in names]
    zeros = x.new_zeros(1, x.shape[0], rnn.hidden_size)
    common = (True, 1, 0.0, rnn.training, False, True)  # biases, layers, dropout, train, bi, bf
    if isinstance(rnn, nn.LSTM):
        return torch.lstm(x, (zeros, zeros), weights, *common)[0]
    if isinstance(rnn, nn.GRU):
        return torch.gru(x, zeros, weights, *common)[0]
    run = torch.rnn_relu if rnn.nonlinearity == "relu" else torch.rnn_tanh
    return run(x, zeros, weights, *common)[0]
