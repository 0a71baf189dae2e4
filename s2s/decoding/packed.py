"""Linear layers with their weights packed once for decoding on the CPU.

A bf16 product through ``F.linear`` hands oneDNN the weight in PyTorch's plain layout,
and with a bias first copies the bias into every row of the output: over a beam batch
(1,280 rows x 8,000 tokens) that copy alone cost a quarter of the product. Packed once
into oneDNN's own blocked layout (``mkldnn._reorder_linear_weight``, as Inductor's
freezing does), the product adds the bias itself and ran 15-35% faster on the 2-core
VM, with the same result to the bit (docs/speed.md, twelfth session). Decoding's bf16
copy of the model is never trained or saved, so its layers can be swapped for these.

In float32 (``precision`` fp32, or auto on a CPU without bf16) decoding runs the model
itself, whose layers stay as they are: ``PackedHead`` hands search a packed copy of
the output layer only, which search runs a block of rows at a time (docs/speed.md,
nineteenth session).
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward with the weight in oneDNN's layout (inference only): a
    module holding a ``Product``, whose weight and bias it shows as its own."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.product = Product(linear.weight, linear.bias)

    @property
    def weight(self) -> torch.Tensor:
        return self.product.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.product.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.product(x)


def _packable(linear: nn.Module) -> bool:
    if type(linear) is not nn.Linear:
        return False
    weight = linear.weight
    return weight.device.type == "cpu" and weight.dtype == torch.bfloat16


@functools.cache
def _works(dtype: torch.dtype = torch.bfloat16) -> bool:
    """The oneDNN ops exist in this build and give F.linear's result for ``dtype``
    (checked once): bf16 to the bit; float32 within rounding, its sums in another order."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        # the global random state untouched: a training run checks this at its first
        # validation, and its resumed run must draw the same numbers after it
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            probe = nn.Linear(32, 48).to(dtype)
            x = torch.randn(5, 32, dtype=dtype)
            got, want = PackedLinear(probe)(x), probe(x)
    except (RuntimeError, AttributeError) as err:  # a build without these ops
        log.debug("packed %s linear layers unavailable: %s", dtype, err)
        return False
    if dtype == torch.bfloat16:
        return torch.equal(got, want)
    return torch.allclose(got, want, rtol=1e-5, atol=1e-5)


class Product:
    """``F.linear(x, weight, bias)`` as a function of x, with ``weight`` and ``bias``
    readable (search rescores a few columns of a bf16 layer from them,
    ``s2s.decoding.ranking``) and the weight packed once where ``pack_linears`` would
    pack a layer holding it (the same values), and with ``float32`` a float32 CPU weight
    too (the same values up to rounding)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, float32: bool = False):
        self.weight, self.bias = weight.detach(), None if bias is None else bias.detach()
        dtypes = (torch.bfloat16, torch.float32) if float32 else (torch.bfloat16,)
        packs = weight.device.type == "cpu" and weight.dtype in dtypes and _works(weight.dtype)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight) if packs else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def packed_product(weight: torch.Tensor, bias: torch.Tensor | None, *, float32: bool = False):
    """A ``Product`` of ``weight`` and ``bias`` (see there)."""
    return Product(weight, bias, float32=float32)


class PackedHead:
    """A stepper (``s2s.decoding.search``) whose steps hand search their output layer
    with its float32 weight packed once (``packed_product``): over a beam batch, 256
    rows of logits at a time from the packed weight, with their log-softmax and top-k
    (``s2s.decoding.ranking``), beat one product over all 1,280 rows (docs/speed.md,
    nineteenth session). Decoding only: the weight is packed when the search starts."""

    def __init__(self, stepper, output: nn.Linear):
        self.stepper = stepper
        self.grouped_encoder = getattr(stepper, "grouped_encoder", False)
        self.head = packed_product(output.weight, output.bias, float32=True)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor):
        return self.stepper.encode(src, src_lengths)

    def init_state(self, enc):
        return self.stepper.init_state(enc)

    def step(self, prev: torch.Tensor, state, enc):
        return dataclasses.replace(self.stepper.step(prev, state, enc), head=self.head)


def packed_head(stepper, model):
    """``stepper`` as a ``PackedHead`` where ``model`` (its model) has a float32 CPU
    output layer and this build packs float32 weights; else ``stepper`` itself."""
    output = getattr(getattr(model, "decoder", None), "output", None)
    if type(output) is not nn.Linear:  # an ensemble, or a bf16 copy's PackedLinear
        return stepper
    weight = output.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not _works(weight.dtype):
        return stepper
    return PackedHead(stepper, output)


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
