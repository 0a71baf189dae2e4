"""A sampled softmax for training: the output layer over some of its columns.

Jean et al. (2015, "On Using Very Large Target Vocabulary for Neural Machine
Translation") train the output layer over a subset of the vocabulary per update; here
the subset holds every target piece of the batch and others drawn uniformly at random
(without replacement) up to ``size`` columns in all. The drawn columns stand for all
the pieces not drawn: each of their logits is raised by log((V - n) / (size - n)), the
inverse of its chance of being drawn (n: the batch's distinct targets, always kept), so
that the subset's normaliser is an unbiased estimate of the whole vocabulary's (the
log Q correction of sampled softmax, Bengio & Senecal 2008). Validation, decoding and
the guess pass of scheduled sampling use the whole output layer.

The output layer and loss are most of a training update's multiply-adds (docs/speed.md):
2,048 of 8,000 columns make them about 4x cheaper. The draw uses torch's global
generator, so the same seed gives the same run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COLUMN_STEP = 128  # the subset's size rounded up to a multiple of this (a few shapes)


@dataclass(frozen=True)
class Columns:
    """The columns of one update: ``ids`` into the vocabulary (the batch's targets
    first), ``target`` renumbered into them (negative entries kept: ignored),
    ``offset``, the constant added to each column's logit, and ``smoothing``, each
    column's share of label smoothing's mass (1 / V for a kept column, the pieces a drawn
    one stands for over V: they sum to 1)."""

    ids: torch.Tensor
    target: torch.Tensor
    offset: torch.Tensor
    smoothing: torch.Tensor


def sample_columns(target: torch.Tensor, vocab_size: int, size: int) -> Columns | None:
    """The columns for ``target`` (ids, negatives ignored): ``size`` of them, or where
    the distinct targets fill that, one more than they, rounded up to a multiple of
    COLUMN_STEP; None when that would cover the whole vocabulary."""
    if size <= 0:
        raise ValueError(f"a sampled softmax needs a positive size, got {size}")
    device = target.device
    present = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    present[target[target >= 0]] = True
    kept = present.nonzero().squeeze(1)
    n = kept.numel()
    k = size if n < size else -(-(n + 1) // COLUMN_STEP) * COLUMN_STEP
    if k >= vocab_size > n + 1:  # a small vocabulary: no rounding
        k = max(size, n + 1)
    if k >= vocab_size:
        return None
    others = (~present).nonzero().squeeze(1)
    drawn = others[torch.randperm(others.numel(), device=device)[: k - n]]
    ids = torch.cat([kept, drawn])
    where = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
    where[ids] = torch.arange(k, device=device)
    renumbered = torch.where(target >= 0, where[target.clamp(min=0)], target)
    offset = torch.zeros(k, device=device)
    offset[n:] = math.log((vocab_size - n) / (k - n))
    smoothing = torch.full((k,), 1.0 / vocab_size, device=device)
    smoothing[n:] = (vocab_size - n) / ((k - n) * vocab_size)
    return Columns(ids, renumbered, offset, smoothing)


def column_layer(output: torch.nn.Linear, columns: Columns) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of ``output``'s ``columns`` (differentiable: the gradients go
    back to the chosen rows), the offset folded into the bias."""
    weight = output.weight.index_select(0, columns.ids)
    offset = columns.offset.to(output.weight.dtype)
    if output.bias is None:
        return weight, offset
    return weight, output.bias.index_select(0, columns.ids) + offset


def smoothing_correction(
    rows: torch.Tensor,
    target: torch.Tensor,
    layer: tuple[torch.Tensor, torch.Tensor],
    columns: Columns,
) -> torch.Tensor:
    """What turns the token loss's label smoothing over ``columns`` (the plain mean of
    -log p over them) into the estimate of the whole vocabulary's: summed over the rows
    whose target is kept (>= 0), sum_j (1 / K - s_j) z_j + sum_j s_j o_j, where z are the
    rows' logits through ``layer`` (offsets included), s the columns' ``smoothing``
    shares and o their offsets. It is linear in the logits, so two products of a vector
    give it and its gradients; multiplied by the label smoothing, it is added to the loss."""
    weight, bias = layer
    share = 1.0 / columns.ids.numel() - columns.smoothing
    with torch.autocast(rows.device.type, enabled=False):
        kept = (target >= 0).unsqueeze(1)
        summed = torch.where(kept, rows.float(), 0.0).sum(0)
        count = kept.sum()
        value = summed @ (weight.float().t() @ share)
        value = value + count * (bias.float() @ share + columns.smoothing @ columns.offset)
    return value
