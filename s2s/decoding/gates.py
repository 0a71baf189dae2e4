"""A decoder step for search with the LSTM's input product looked up, not multiplied.

Without input feeding, a single-layer LSTM decoder's input at each step is the embedding
of the previous token, so the input half of its gate product, ``E[prev] @ W_ih^T + b_ih``,
is one of ``vocabulary`` fixed rows. ``TableStepper`` computes them once (one product
over the embedding matrix, 8,000 x 1,024 values for the default model) and gathers the
rows of each step's tokens, leaving the recurrent half, ``h @ W_hh^T + b_hh``, as the
step's only product in the cell. The rest is what PyTorch's CPU ``lstm_cell`` computes,
operation for operation (the gates summed, chunked, their nonlinearities in place, then
``c' = f * c + i * g`` and ``h' = o * tanh(c')``), so the values are those of the model's
own step (``tests/test_gates.py``), at one product of two per step less
(docs/speed.md, thirteenth session).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s2s.decoding.packed import packed_product
from s2s.nn.decoder import DecoderState, StepOutput


def table_steps(model) -> bool:
    """Whether ``TableStepper`` covers ``model``'s decoder: a plain model (not an
    ensemble) whose decoder is one ``nn.LSTM`` layer without input feeding."""
    decoder = getattr(model, "decoder", None)
    if decoder is None or not hasattr(model, "encode"):
        return False
    layers = getattr(decoder.rnn, "layers", [])
    return (
        not decoder.input_feeding
        and len(layers) == 1
        and type(layers[0]) is nn.LSTM
        and not layers[0].bidirectional
        and layers[0].proj_size == 0
    )


class TableStepper:
    """The search interface of ``model`` (``encode``, ``init_state``, ``step``) with
    the decoder's input product as a table (see the module docstring). Evaluation only:
    no dropout, no gradient. ``model`` must satisfy ``table_steps``."""

    def __init__(self, model):
        if not table_steps(model):
            raise ValueError("TableStepper needs a one-layer LSTM decoder without input feeding")
        self.model = model
        self.grouped_encoder = getattr(model, "grouped_encoder", False)
        decoder = model.decoder
        lstm = decoder.rnn.layers[0]
        with torch.inference_mode():  # (vocabulary, 4 x hidden)
            embedded = decoder.embedding.weight
            self.input_gates = F.linear(embedded, lstm.weight_ih_l0, lstm.bias_ih_l0)
        self.recurrent = packed_product(lstm.weight_hh_l0, lstm.bias_hh_l0)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor):
        return self.model.encode(src, src_lengths)

    def init_state(self, enc):
        return self.model.init_state(enc)

    def step(self, prev: torch.Tensor, state: DecoderState, enc) -> StepOutput:
        decoder = self.model.decoder
        h, c = state.hidden[0]  # (1, batch, hidden) each
        gates = self.recurrent(h[0])
        gates.add_(self.input_gates.index_select(0, prev))
        i, f, g, o = gates.unsafe_chunk(4, 1)
        i.sigmoid_()
        f.sigmoid_()
        g.tanh_()
        o.sigmoid_()
        cy = (f * c[0]).add_(i * g)
        hy = o * cy.tanh()
        att_vec, weights = decoder.attend(hy.unsqueeze(1), enc)
        return StepOutput(
            features=att_vec.squeeze(1),
            head=decoder.output,
            state=DecoderState(hidden=[(hy.unsqueeze(0), cy.unsqueeze(0))]),
            attention=None if weights is None else weights.squeeze(1),
        )
