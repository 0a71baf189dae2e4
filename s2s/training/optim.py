"""Optimizers: Adam, AdamW or SGD over parameter groups with learning-rate
multipliers by name prefix; the engine builds one for every task."""

from __future__ import annotations

import torch

from s2s.errors import ConfigError


def lr_groups(model: torch.nn.Module, multipliers: dict[str, float]) -> list[dict]:
    """Parameter groups by learning-rate multiplier: each parameter takes the
    multiplier of the longest prefix of its name in ``multipliers`` (else 1)."""
    names = [n for n, _ in model.named_parameters()]
    for prefix in multipliers:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            raise ConfigError(
                f"train.lr_multipliers: '{prefix}' matches no parameter "
                f"(parameters start with {', '.join(sorted({n.split('.')[0] for n in names}))})"
            )
    groups: dict[float, list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        best = max(
            (k for k in multipliers if name == k or name.startswith(k + ".")), key=len, default=None
        )
        groups.setdefault(1.0 if best is None else multipliers[best], []).append(param)
    return [{"params": ps, "lr_mult": mult} for mult, ps in groups.items()]


def fusable(model: torch.nn.Module) -> bool:
    """Whether PyTorch's fused Adam kernel takes every parameter: floating point, on the
    CPU or a GPU. It updates all of them in one pass instead of a dozen element-wise
    operations per parameter (the for-loop default on CPU): 7% of an update of
    OpenNMT-py's RNN shape went to Adam's loop (docs/speed.md)."""
    params = list(model.parameters())
    return bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )


def make_optimizer(model: torch.nn.Module, t) -> torch.optim.Optimizer:
    groups = lr_groups(model, t.lr_multipliers)
    for group in groups:
        group["lr"] = t.lr * group["lr_mult"]
    if t.optimizer in ("adam", "adamw"):
        kind = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
        return kind(
            groups, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, fused=fusable(model)
        )
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=t.lr,
            momentum=t.momentum,
            nesterov=t.nesterov,
            weight_decay=t.weight_decay,
        )
    raise ConfigError(f"unknown optimizer {t.optimizer!r}")
