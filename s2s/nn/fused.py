"""The token loss over a large output layer, in one compiled kernel where that pays.

Measured (docs/speed.md): over 1,900 x 8,000 logits, PyTorch's eager cross-entropy with
label smoothing walks the logits five or six times (cast, log-softmax, smoothing sum,
and as many in the backward pass) and costs more than the output layer's bf16 matrix
multiplies; ``torch.compile`` fuses it into two passes, about 3x faster on a 2-core CPU.
The value is the same either way (float32 arithmetic for half-precision logits); only the
time differs.

``compile`` is "never", "always" (fail if torch.compile cannot run here) or "auto" (compile
when a C++ compiler is found on CPU, or Triton on CUDA; else eager, said once).

``pad_rows`` gives the (rows, vocabulary) products a few shapes: oneDNN builds and caches
a kernel for every bf16 shape it sees (docs/speed.md, memory).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

from s2s.config import COMPILE_MODES
from s2s.errors import ConfigError
from s2s.runtime import compile_unavailable

ROW_BUCKET = 128


def pad_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` with zero rows appended up to a multiple of ROW_BUCKET: a few shapes of
    the large (tokens, vocab) products instead of one per batch, which the allocator and
    oneDNN's primitive cache would each keep (docs/speed.md, memory)."""
    pad = -rows.shape[0] % ROW_BUCKET
    return torch.cat([rows, rows.new_zeros(pad, rows.shape[1])]) if pad else rows


log = logging.getLogger(__name__)


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float):
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # half precision in, float32 arithmetic; float64 stays
    return F.cross_entropy(logits, target, reduction="sum", label_smoothing=label_smoothing)


@functools.cache
def _compiled_cross_entropy():
    return torch.compile(_cross_entropy, dynamic=True)


class TokenLoss:
    """Summed cross-entropy of (tokens, vocab) logits in float32, label smoothing
    included; compiled or eager as ``mode`` and the machine allow."""

    def __init__(self, mode: str = "never", device: torch.device | str = "cpu"):
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
        device = torch.device(device)
        self.compiled = False
        if mode != "never":
            why = compile_unavailable(device)
            if why is None:
                self.compiled = True
            elif mode == "always":
                raise ConfigError(f"train.compile=always, but torch.compile cannot run: {why}")
            else:
                log.info("train.compile=auto: the loss runs eager (%s)", why)

    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        if self.compiled:
            return _compiled_cross_entropy()(logits, target, label_smoothing)
        return _cross_entropy(logits, target, label_smoothing)
