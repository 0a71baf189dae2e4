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
- with ``compiled`` the step (LSTM gates, attention, combination) is one torch.compile'd
  graph per position, its element-wise work fused, forward and backward;
- with additive attention, where its C kernel is built, the whole loop runs by hand
  forward and backward instead (``s2s.nn.feedloop``: no autograd per position).

Same values and gradients as the generic loop up to rounding (``tests/test_feeding.py``);
docs/speed.md has the measurements.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from s2s.nn import feedloop
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


def _lstm(pre_t, feed, h, c, w_rec):
    """pre_t: the embedding half of the gates and both biases; w_rec: the fed-back half of
    the input weights beside the recurrent weights."""
    gates = torch.addmm(pre_t, torch.cat([feed, h], -1), w_rec.t())
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _mix(scores, neg, keys, h, w_c, b_c, tanh):
    """Masked softmax over the source, context, h~ = tanh(W_c [h; context] + b_c) (without
    the tanh where ``tanh`` is false: ``model.attentional_vector`` linear)."""
    weights = torch.softmax(scores.float() + neg, -1).to(keys.dtype)
    context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)
    att_vec = torch.addmm(b_c, torch.cat([h, context], -1), w_c.t())
    return torch.tanh(att_vec) if tanh else att_vec


def additive_step(pre_t, feed, h, c, w_rec, prepared, keys, neg, w_c, b_c, tanh, w_q, w_v):
    """One position with additive attention: returns h~, h, c."""
    h, c = _lstm(pre_t, feed, h, c, w_rec)
    q = (h @ w_q.t()).unsqueeze(1)  # (batch, 1, attention)
    scores = (torch.tanh(q + prepared) @ w_v.t()).squeeze(-1)  # (batch, src_len)
    return _mix(scores, neg, keys, h, w_c, b_c, tanh), h, c


def multiplicative_step(pre_t, feed, h, c, w_rec, prepared, keys, neg, w_c, b_c, tanh):
    """One position with multiplicative attention (prepared = W k, or k for "dot")."""
    h, c = _lstm(pre_t, feed, h, c, w_rec)
    scores = torch.bmm(prepared, h.unsqueeze(-1)).squeeze(-1)
    return _mix(scores, neg, keys, h, w_c, b_c, tanh), h, c


@functools.cache
def _compiled(step):
    # dynamic: batch and source length change from batch to batch
    return torch.compile(step, dynamic=True)


def teacher_forced(
    decoder: nn.Module, tgt_in: torch.Tensor, enc, *, compiled: bool = False
) -> torch.Tensor:
    """h~ for every target position, dropout not yet applied (as the generic loop's, and
    fed back without it). tgt_in: (batch, tgt_len) -> (batch, tgt_len, out_size)."""
    dtype = autocast_dtype(tgt_in.device.type)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t if dtype is None else t.to(dtype)

    state = decoder.init_state(enc)
    rnn, att = decoder.rnn.layers[0], decoder.attention
    emb = decoder.embedding_dropout(decoder.embedding(tgt_in))
    w_ih = cast(rnn.weight_ih_l0)
    split = emb.shape[-1]
    pre = emb @ w_ih[:, :split].t() + cast(rnn.bias_ih_l0 + rnn.bias_hh_l0)
    w_rec = torch.cat([w_ih[:, split:], cast(rnn.weight_hh_l0)], 1)
    h, c = state.hidden[0]
    h, c, feed = cast(h[0]), c[0], cast(state.feed)
    prepared = cast(enc.prepared if enc.prepared is not None else att.prepare(enc.states))
    neg = torch.zeros(enc.mask.shape, device=tgt_in.device).masked_fill(~enc.mask, float("-inf"))
    fixed = [w_rec, prepared, cast(enc.states), neg]
    fixed += [cast(decoder.combine.weight), cast(decoder.combine.bias), decoder.attentional_tanh]
    if isinstance(att, AdditiveAttention):
        step = additive_step
        fixed += [cast(att.query_proj.weight), cast(att.v.weight)]
        # the whole loop by hand, its element-wise work in C, where that kernel is built
        out = feedloop.run(pre.transpose(0, 1), h, c, feed, *fixed)
        if out is not None:
            return out.transpose(0, 1)
    else:
        step = multiplicative_step
    first, *rest = pre.unbind(1)
    # The first position runs eager: its state has no gradient (or only in part), which a
    # compiled step would take as a second graph.
    feed, h, c = step(first, feed, h, c, *fixed)
    outs = [feed]
    step = _compiled(step) if compiled else step
    for pre_t in rest:
        # a copy: each position's view has its own storage offset, on which a compiled
        # step's guards would fail (a recompilation per position, then eager)
        feed, h, c = step(pre_t.clone() if compiled else pre_t, feed, h, c, *fixed)
        outs.append(feed)
    return torch.stack(outs, 1)
