"""Weight initialisation: every initialiser lives here.

The default scheme draws each weight from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), where
fan_in is the input width of the matrix (the last dimension), and zeroes biases. An
embedding is a lookup: one row is read per token, so its fan_in is 1 and its rows are
drawn from U(-1, 1). (Reading it as a V-wide linear map gives rows near zero that
rare tokens take thousands of updates to grow out of: training stalls.) Embeddings
keep U(-1, 1) under every scheme except ``normal`` (N(0, std)) and ``uniform``
(U(-range, range) for every weight and embedding, OpenNMT-py's ``param_init``).

Recurrent kernels stack their gates (LSTM: i, f, g, o; GRU: r, z, n), so every
scheme is applied to each gate's block on its own: fan_out is the hidden size, not
4x it. LSTM forget-gate biases are set to ``forget_bias`` last (Gers et al. 2000;
Jozefowicz et al. 2015).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from s2s.config import INIT_SCHEMES, RECURRENT_INITS
from s2s.nn.cells import LoopCell

GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    return weight.shape[-1], weight.shape[0]  # (fan_in, fan_out) of a (out, in) matrix


@torch.no_grad()
def fan_in_uniform_(weight: torch.Tensor) -> None:
    bound = 1.0 / math.sqrt(weight.shape[-1])
    weight.uniform_(-bound, bound)


@torch.no_grad()
def variance_scaling_(weight: torch.Tensor, *, scale: float, mode: str, distribution: str) -> None:
    """Var(w) = scale / n with n = fan_in, fan_out or their mean (He et al. 2015 with
    scale 2 and fan_in; Glorot & Bengio 2010 with scale 1 and fan_avg)."""
    fan_in, fan_out = _fans(weight)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    std = math.sqrt(scale / n)
    if distribution == "uniform":
        bound = math.sqrt(3.0) * std
        weight.uniform_(-bound, bound)
    else:
        weight.normal_(0.0, std)


@torch.no_grad()
def init_matrix_(weight: torch.Tensor, *, scheme: str, init_cfg) -> None:
    if scheme == "fan_in_uniform":
        fan_in_uniform_(weight)
    elif scheme == "xavier_uniform":
        variance_scaling_(weight, scale=1.0, mode="fan_avg", distribution="uniform")
    elif scheme == "xavier_normal":
        variance_scaling_(weight, scale=1.0, mode="fan_avg", distribution="normal")
    elif scheme == "variance_scaling":
        variance_scaling_(
            weight, scale=init_cfg.scale, mode=init_cfg.mode, distribution=init_cfg.distribution
        )
    elif scheme == "normal":
        weight.normal_(0.0, init_cfg.std)
    elif scheme == "scaled":
        weight.normal_(0.0, init_cfg.scale / math.sqrt(weight.shape[-1]))
    elif scheme == "uniform":
        weight.uniform_(-init_cfg.range, init_cfg.range)
    else:
        raise ValueError(f"unknown init scheme '{scheme}'; valid: {', '.join(INIT_SCHEMES)}")


@torch.no_grad()
def orthogonal_(weight: torch.Tensor) -> None:
    nn.init.orthogonal_(weight)


@torch.no_grad()
def set_forget_bias_(lstm: nn.Module, value: float) -> None:
    """PyTorch's LSTM has two bias vectors (b_ih + b_hh), gates ordered i, f, g, o:
    put the whole value in b_ih and zero in b_hh so that the sum is ``value``."""
    for name, param in lstm.named_parameters():
        if name.startswith("bias_"):
            hidden = param.shape[0] // 4
            param[hidden : 2 * hidden] = value if name.startswith("bias_ih") else 0.0


def _blockwise_same(init_cfg) -> bool:
    """Schemes that depend only on fan_in (the last dimension), or on no dimension at
    all, give the same distribution per gate as for the whole stacked matrix: no second
    pass."""
    fan_in_only = init_cfg.scheme in ("fan_in_uniform", "normal", "scaled", "uniform") or (
        init_cfg.scheme == "variance_scaling" and init_cfg.mode == "fan_in"
    )
    return fan_in_only and init_cfg.recurrent == "same"


@torch.no_grad()
def _init_recurrent(module: nn.Module, gates: int, init_cfg) -> None:
    for name, param in module.named_parameters(recurse=False):
        if param.dim() < 2:
            continue
        # the gates' matrices are initialised a gate at a time; an mLSTM's W_mx and W_mh
        # (no gates) whole, W_mh as the recurrent matrix it is
        stacked = name.startswith(("weight_ih", "weight_hh"))
        hh = name.startswith(("weight_hh", "weight_mh"))
        for block in param.chunk(gates if stacked else 1, dim=0):
            if hh and init_cfg.recurrent == "orthogonal":
                orthogonal_(block)
            elif hh and init_cfg.recurrent == "identity":
                block.copy_(torch.eye(*block.shape))
            else:
                init_matrix_(block, scheme=init_cfg.scheme, init_cfg=init_cfg)


@torch.no_grad()
def initialize(model: nn.Module, init_cfg) -> None:
    """Initialise every parameter of ``model`` as ``init_cfg`` (a config.InitConfig) says."""
    if init_cfg.scheme not in INIT_SCHEMES:
        raise ValueError(
            f"unknown init scheme '{init_cfg.scheme}'; valid: {', '.join(INIT_SCHEMES)}"
        )
    if init_cfg.recurrent not in RECURRENT_INITS:
        raise ValueError(f"unknown recurrent init '{init_cfg.recurrent}'")
    for param in model.parameters():
        if param.dim() >= 2:
            init_matrix_(param, scheme=init_cfg.scheme, init_cfg=init_cfg)
        else:
            param.zero_()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            if init_cfg.scheme == "normal":
                module.weight.normal_(0.0, init_cfg.std)
            elif init_cfg.scheme == "uniform":
                module.weight.uniform_(-init_cfg.range, init_cfg.range)
            else:
                module.weight.uniform_(-1.0, 1.0)  # fan_in of a lookup is 1
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)  # gains start at 1, biases at 0
        gates = next((g for kind, g in GATES.items() if isinstance(module, kind)), None)
        if isinstance(module, LoopCell):
            gates = module.gates
        if gates is not None and not _blockwise_same(init_cfg):
            _init_recurrent(module, gates, init_cfg)
        if isinstance(module, nn.LSTM) or (isinstance(module, LoopCell) and module.kind == "lstm"):
            set_forget_bias_(module, init_cfg.forget_bias)
