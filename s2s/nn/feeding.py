"""Teacher-forced input feeding (Luong et al. 2015, §3.3) with the per-position work cut
to one step function: OpenNMT-py's default RNN shape runs this loop at every update.

With input feeding the decoder's input at position t holds h~ of position t - 1, so
training runs one position at a time. The generic loop (``Decoder.forward``) calls the
recurrent module, the attention module and the combination layer at every position, each
casting its weights under autocast and setting up a one-position sequence kernel. Here,
for a single-layer LSTM decoder with additive or multiplicative attention:

- the embedding half of the LSTM's input product runs once for all positions;
- the weights are cast once per batch, and the fed-back half of the input product and the
  recurrent product are one matrix multiply per position (their weights side by side);
- the positions are split once (``unbind``: one gradient copy back, not one per position);
- the weights used at every position (the fed-back and recurrent half, the combination
  layer, the additive attention's query) get their gradient in one product over all
  positions after the loop (``_LateWeightGrad``), not in a thin one per position;
- with ``compiled`` the step (LSTM gates, attention, combination) is one torch.compile'd
  graph per position, its element-wise work fused, forward and backward.

Same values and gradients as the generic loop up to rounding (``tests/test_feeding.py``);
docs/speed.md has the measurements.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from s2s.nn.attention import AdditiveAttention, MultiplicativeAttention
from s2s.nn.precision import autocast_dtype


def supported(decoder: nn.Module) -> bool:
    """Whether ``teacher_forced`` covers this decoder: input feeding, one fused
    unidirectional LSTM layer, additive or multiplicative attention."""
    rnn = decoder.rnn.layers
    return (
        decoder.input_feeding
        and len(rnn) == 1
        and type(rnn[0]) is nn.LSTM
        and not rnn[0].bidirectional
        and rnn[0].num_layers == 1
        and isinstance(decoder.attention, (AdditiveAttention, MultiplicativeAttention))
    )


class _LateWeightGrad(torch.autograd.Function):
    """Identity on ``addend`` (batch, positions, out), the additive input of a product
    ``x_t @ W^T`` that the loop makes at every position t with W detached. Backward:
    addend's gradient G passes on, and W's is one product G^T X over all positions, X
    (batch, positions, in) read from ``inputs`` (filled once the loop is done): one
    (out x rows) by (rows x in) matrix multiply instead of a thin one per position
    (docs/speed.md, fifteenth session)."""

    @staticmethod
    def forward(ctx, addend, weight, inputs: list):
        ctx.inputs = inputs
        return addend.view_as(addend)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        grad_w = None
        if ctx.needs_input_grad[1]:
            x = ctx.inputs[0]
            grad_w = grad.reshape(-1, grad.shape[-1]).t().mm(x.reshape(-1, x.shape[-1]))
        return (grad if ctx.needs_input_grad[0] else None), grad_w, None


class _Taps:
    """The weights whose gradients ``_LateWeightGrad`` gives over all positions at once
    (while gradients are recorded)."""

    def __init__(self):
        self.on = torch.is_grad_enabled()
        self.inputs: list[list] = []

    def tap(self, addend: torch.Tensor, weight: torch.Tensor):
        """(addend, weight) for the loop."""
        if not self.on:
            return addend, weight
        self.inputs.append([])
        return _LateWeightGrad.apply(addend, weight, self.inputs[-1]), weight.detach()

    def fill(self, *xs: torch.Tensor):
        """Each tapped product's input at every position, in the order of ``tap``."""
        if self.on:
            for holder, x in zip(self.inputs, xs):  # the first len(inputs)
                holder.append(x.detach())


def _lstm(pre_t, feed, h, c, w_rec):
    """pre_t: the embedding half of the gates and both biases; w_rec: the fed-back half of
    the input weights beside the recurrent weights."""
    gates = torch.addmm(pre_t, torch.cat([feed, h], -1), w_rec.t())
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _mix(scores, neg, keys, h, b_c, w_c):
    """Masked softmax over the source, context, h~ = tanh(W_c [h; context] + b_c)."""
    weights = torch.softmax(scores.float() + neg, -1).to(keys.dtype)
    context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)
    return torch.tanh(torch.addmm(b_c, torch.cat([h, context], -1), w_c.t())), context


def additive_step(pre_t, b_c, q_t, feed, h, c, w_rec, prepared, keys, neg, w_c, w_q, w_v):
    """One position with additive attention (b_c: its combination bias, q_t: the query's
    addend, zeros): returns h~, h, c, context."""
    h, c = _lstm(pre_t, feed, h, c, w_rec)
    q = torch.addmm(q_t, h, w_q.t()).unsqueeze(1)  # (batch, 1, attention)
    scores = (torch.tanh(q + prepared) @ w_v.t()).squeeze(-1)  # (batch, src_len)
    out, context = _mix(scores, neg, keys, h, b_c, w_c)
    return out, h, c, context


def multiplicative_step(pre_t, b_c, feed, h, c, w_rec, prepared, keys, neg, w_c):
    """One position with multiplicative attention (prepared = W k, or k for "dot")."""
    h, c = _lstm(pre_t, feed, h, c, w_rec)
    scores = torch.bmm(prepared, h.unsqueeze(-1)).squeeze(-1)
    out, context = _mix(scores, neg, keys, h, b_c, w_c)
    return out, h, c, context


@functools.cache
def _compiled(step):
    # dynamic: batch and source length change from batch to batch
    return torch.compile(step, dynamic=True)


def _prepare(decoder, tgt_in, enc, cast, taps):
    """The per-position addends (batch, tgt_len, .) and the fixed arguments of the step,
    its weights detached where ``taps`` gives their gradients."""
    rnn, att = decoder.rnn.layers[0], decoder.attention
    emb = decoder.embedding_dropout(decoder.embedding(tgt_in))
    w_ih = cast(rnn.weight_ih_l0)
    split = emb.shape[-1]
    pre = emb @ w_ih[:, :split].t() + cast(rnn.bias_ih_l0 + rnn.bias_hh_l0)
    pre, w_rec = taps.tap(pre, torch.cat([w_ih[:, split:], cast(rnn.weight_hh_l0)], 1))
    combine = decoder.combine
    b_c, w_c = taps.tap(cast(combine.bias).expand(*tgt_in.shape, -1), cast(combine.weight))
    prepared = cast(enc.prepared if enc.prepared is not None else att.prepare(enc.states))
    neg = torch.zeros(enc.mask.shape, device=tgt_in.device).masked_fill(~enc.mask, float("-inf"))
    fixed = [w_rec, prepared, cast(enc.states), neg, w_c]
    if isinstance(att, AdditiveAttention):
        w_q = cast(att.query_proj.weight)
        q, w_q = taps.tap(w_q.new_zeros(*tgt_in.shape, w_q.shape[0]), w_q)
        return additive_step, [pre, b_c, q], fixed + [w_q, cast(att.v.weight)]
    return multiplicative_step, [pre, b_c], fixed


def teacher_forced(
    decoder: nn.Module, tgt_in: torch.Tensor, enc, *, compiled: bool = False
) -> torch.Tensor:
    """h~ for every target position, dropout not yet applied (as the generic loop's, and
    fed back without it). tgt_in: (batch, tgt_len) -> (batch, tgt_len, out_size)."""
    dtype = autocast_dtype(tgt_in.device.type)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t if dtype is None else t.to(dtype)

    state = decoder.init_state(enc)
    taps = _Taps()
    step, addends, fixed = _prepare(decoder, tgt_in, enc, cast, taps)
    h, c = state.hidden[0]
    h, c, feed = cast(h[0]), c[0], cast(state.feed)
    feeds, hs, contexts = [feed], [h], []
    positions = list(zip(*(a.unbind(1) for a in addends)))
    # The first position runs eager: its state has no gradient (or only in part), which a
    # compiled step would take as a second graph.
    run = step
    for t, here in enumerate(positions):
        if t == 1 and compiled:
            run = _compiled(step)
        # copies when compiled: each position's view has its own storage offset, on which
        # a compiled step's guards would fail (a recompilation per position, then eager)
        here = [a.clone() for a in here] if t and compiled else here
        feed, h, c, context = run(*here, feed, h, c, *fixed)
        feeds.append(feed)
        hs.append(h)
        contexts.append(context)
    out = torch.stack(feeds[1:], 1)
    hidden = torch.stack(hs[1:], 1)
    # the inputs of the tapped products: [h~_{t-1}; h_{t-1}], [h_t; context_t], h_t
    taps.fill(
        torch.cat([torch.stack(feeds[:-1], 1), torch.stack(hs[:-1], 1)], -1),
        torch.cat([hidden, torch.stack(contexts, 1)], -1),
        hidden,
    )
    return out
