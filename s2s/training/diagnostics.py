"""Diagnostics that catch a broken run early: where a non-finite value first
appears, the size of each update relative to its weights, and activation histograms.

Parameters are grouped by module path (``encoder.rnn``, ``decoder.output``, ...): the
two leading components of a parameter's name.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


def group_of(name: str) -> str:
    return ".".join(name.split(".")[:2])


def parameter_groups(model: nn.Module) -> dict[str, list[tuple[str, torch.Tensor]]]:
    groups: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for name, param in model.named_parameters():  # tied weights appear once
        groups.setdefault(group_of(name), []).append((name, param))
    return groups


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def update_ratios(before: dict[str, torch.Tensor], model: nn.Module) -> dict[str, float]:
    """||w_after - w_before|| / ||w_before|| per parameter group (Karpathy's rule of
    thumb: about 1e-3 in a healthy run)."""
    ratios = {}
    for group, params in parameter_groups(model).items():
        update = sum(float((p.detach() - before[n]).pow(2).sum()) for n, p in params)
        weight = sum(float(before[n].pow(2).sum()) for n, _ in params)
        ratios[group] = math.sqrt(update) / max(math.sqrt(weight), 1e-12)
    return ratios


def nonfinite_gradients(model: nn.Module) -> list[str]:
    return [
        name
        for name, p in model.named_parameters()
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if hasattr(value, "data") and isinstance(value.data, torch.Tensor):  # PackedSequence
        return value.data
    return None


def first_nonfinite_module(model: nn.Module, forward: Callable[[], object]) -> str | None:
    """Run ``forward()`` with hooks and return the name of the first module (in call
    order) whose parameters or output hold a NaN or Inf; None if all are finite."""
    found: list[str] = []
    names = {module: name for name, module in model.named_modules() if name}

    def hook(module, _inputs, output):
        if found:
            return
        own = [p for p in module.parameters(recurse=False)]
        if any(not bool(torch.isfinite(p).all()) for p in own):
            found.append(f"{names[module]} (its weights)")
            return
        tensor = _first_tensor(output)
        if (
            tensor is not None
            and tensor.is_floating_point()
            and not bool(torch.isfinite(tensor).all())
        ):
            found.append(f"{names[module]} (its output)")

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


@contextmanager
def record_activations(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Collect the outputs of the model's top-level submodules of each side
    (embeddings, recurrent stacks, attention, output layer) during one forward pass."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if name.count(".") != 1:
            continue

        def hook(_module, _inputs, output, name=name):
            tensor = _first_tensor(output)
            if tensor is not None and tensor.is_floating_point():
                store[name] = tensor.detach().float().cpu()

        handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
