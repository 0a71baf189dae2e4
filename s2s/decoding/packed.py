"""Linear layers with their weights packed once for decoding on the CPU.

A bf16 product through ``F.linear`` hands oneDNN the weight in PyTorch's plain layout,
and with a bias first copies the bias into every row of the output: over a beam batch
(1,280 rows x 8,000 tokens) that copy alone cost a quarter of the product. Packed once
into oneDNN's own blocked layout (``mkldnn._reorder_linear_weight``, as Inductor's
freezing does), the product adds the bias itself and ran 15-35% faster on the 2-core
VM, with the same result to the bit (docs/speed.md, twelfth session). Decoding's bf16
copy of the model is never trained or saved, so its layers can be swapped for these.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward with the weight in oneDNN's layout (inference only)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def _packable(linear: nn.Module) -> bool:
    if type(linear) is not nn.Linear:
        return False
    weight = linear.weight
    return weight.device.type == "cpu" and weight.dtype == torch.bfloat16


@functools.cache
def _works() -> bool:
    """The oneDNN ops exist in this build and give F.linear's result (checked once)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = nn.Linear(32, 48).to(torch.bfloat16)
        x = torch.randn(5, 32, dtype=torch.bfloat16)
        with torch.inference_mode():
            return torch.equal(PackedLinear(probe)(x), probe(x))
    except (RuntimeError, AttributeError) as err:  # a build without these ops
        log.debug("packed linear layers unavailable: %s", err)
        return False


def packed_product(weight: torch.Tensor, bias: torch.Tensor | None):
    """``F.linear(x, weight, bias)`` as a function of x, with the weight packed once
    where ``pack_linears`` would pack a layer holding it (the same values)."""
    if weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and _works():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return lambda x: F.linear(x, weight, bias)


def pack_linears(model: nn.Module) -> int:
    """Swap every bf16 CPU ``nn.Linear`` inside ``model`` (in place) for a
    ``PackedLinear``; returns how many. Nothing is swapped where the build lacks the
    oneDNN ops."""
    targets = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if _packable(child)
    ]
    if not targets or not _works():
        return 0
    for parent, name in targets:
        setattr(parent, name, PackedLinear(getattr(parent, name)))
    return len(targets)
