"""Weight initialisation (level 1): every initialiser lives here.

The default scheme draws each weight from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), where
fan_in is the input width of the matrix (the last dimension), and zeroes biases. An
embedding is a lookup: one row is read per token, so its fan_in is 1 and its rows are
drawn from U(-1, 1). (Reading it as a V-wide linear map gives rows near zero that
rare tokens take thousands of updates to grow out of: training stalls.) LSTM
forget-gate biases are then set to ``forget_bias`` (Gers et al. 2000; Jozefowicz et al.
2015).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from s2s.config import INIT_SCHEMES


@torch.no_grad()
def fan_in_uniform_(weight: torch.Tensor) -> None:
    bound = 1.0 / math.sqrt(weight.shape[-1])
    weight.uniform_(-bound, bound)


@torch.no_grad()
def set_forget_bias_(lstm: nn.LSTM, value: float) -> None:
    """PyTorch's LSTM has two bias vectors (b_ih + b_hh), gates ordered i, f, g, o:
    put the whole value in b_ih and zero in b_hh so that the sum is ``value``."""
    for name, param in lstm.named_parameters():
        if name.startswith("bias_"):
            hidden = param.shape[0] // 4
            param[hidden : 2 * hidden] = value if name.startswith("bias_ih") else 0.0


@torch.no_grad()
def initialize(
    model: nn.Module, *, scheme: str = "fan_in_uniform", forget_bias: float = 1.0
) -> None:
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme '{scheme}'; valid: {', '.join(INIT_SCHEMES)}")
    for param in model.parameters():
        if param.dim() >= 2:
            fan_in_uniform_(param)
        else:
            param.zero_()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            module.weight.uniform_(-1.0, 1.0)  # fan_in of a lookup is 1
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LSTM):
            set_forget_bias_(module, forget_bias)
