"""Dropout whose mask is cheap to draw on the CPU.

``torch.nn.Dropout`` on the CPU draws one Bernoulli number per element from the MT19937
generator: about 10 ns an element on the development VM, 10% of a default training update
(docs/speed.md). Here each 64-bit draw of the same generator gives four 15-bit uniform
numbers, each compared with the drop probability rounded to a multiple of 1/32,768 (0.3
becomes 9,830/32,768 = 0.29999); kept elements are scaled by the inverse of the exact
keep probability, so the expectation is unchanged. The mask depends only on
``torch.manual_seed``, so runs stay reproducible. Elsewhere than the CPU (GPUs have a fused
kernel) and outside training, it is ``torch.nn.functional.dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 1 << 15  # 15 random bits per element


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of ``shape``: 0 where dropped (probability ``p`` up to 1/32,768),
    1 / keep probability elsewhere, in ``dtype``."""
    drop = round(p * LEVELS)
    n = shape.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_().view(torch.int16)[:n]
    keep = (bits.view(shape) & (LEVELS - 1)) >= drop
    return keep.to(dtype).mul_(LEVELS / (LEVELS - drop))


class Dropout(nn.Module):
    """``nn.Dropout``'s interface and expectation; a faster mask on the CPU."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p == 1.0 or round(self.p * LEVELS) == LEVELS:
            return F.dropout(x, self.p, True)
        return x * keep_mask(x.shape, self.p, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_words(ids: torch.Tensor, p: float, *, unk: int, pad: int) -> torch.Tensor:
    """Word dropout on the decoder's inputs (Bowman et al. 2016): each token of ``ids``
    (batch, time) after the first (BOS) and not padding becomes ``unk`` with probability
    ``p``; a new tensor (the batch's own is left as it is). The draws come from
    ``torch.rand`` on the ids' device, so they follow ``torch.manual_seed``."""
    drop = torch.rand(ids.shape, device=ids.device) < p
    drop[:, 0] = False
    return torch.where(drop & (ids != pad), torch.full_like(ids, unk), ids)
