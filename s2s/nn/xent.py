"""The token loss of a chunk of logits and its gradient by a C kernel built on this
machine (``xent.c``, through ``s2s.runtime.native``): the same values as
``s2s.nn.fused._loss_and_grad`` up to float32 rounding, about 3-4x faster than its
compiled form on a 2-core CPU (docs/speed.md, thirty-seventh session).

``loss_and_grad_into`` returns None wherever the kernel does not apply (not built, not
on the CPU, logits neither bf16 nor float32, columns not contiguous) or disagreed with
the PyTorch form on the check made once per process: the caller keeps that form.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from s2s.runtime import native

_ARGS = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int] + [ctypes.c_int64] * 3
_ARGS += [ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
_ARGS += [ctypes.c_int]
DTYPES = (torch.bfloat16, torch.float32)


_ADD_ARGS = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int]


@functools.cache
def _adder():
    """``s2s_add_bf16`` of xent.c, or None where it is not built."""
    return native.function(Path(__file__).with_name("xent.c"), "s2s_add_bf16", _ADD_ARGS)


def add_into(acc: torch.Tensor, part: torch.Tensor, assign: bool = False) -> None:
    """``acc += part`` (``acc[:] = part`` if ``assign``): a float32 sum of a bf16 part, in
    one pass by the kernel where it applies (both contiguous, on the CPU, of one size),
    else by PyTorch."""
    adder = _adder() if _summable(acc, part) else None
    if adder is None or adder(acc.data_ptr(), part.data_ptr(), part.numel(), assign, _threads()):
        if assign:
            acc.copy_(part)
        else:
            acc += part


def _summable(acc: torch.Tensor, part: torch.Tensor) -> bool:
    return (
        acc.device.type == part.device.type == "cpu"
        and acc.dtype == torch.float32
        and part.dtype == torch.bfloat16
        and acc.shape == part.shape
        and acc.is_contiguous()
        and part.is_contiguous()
    )


def _threads() -> int:
    return torch.get_num_threads()


# xent.c's ``s2s_xent_grad`` as built, and where it agrees with the PyTorch form on a
# probe (``_agrees``, checked once per process)
_built_kernel, _kernel = native.kernel(
    Path(__file__).with_name("xent.c"), "s2s_xent_grad", _ARGS, lambda k: _agrees(k), "loss"
)


def usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether logits of ``dtype`` on ``device`` would go through the kernel."""
    return device.type == "cpu" and dtype in DTYPES and _kernel() is not None


def _call(kernel, z, target, eps: float, out, bias=None, colsum=None):
    rows, cols = z.shape
    losses = torch.empty(rows)
    target = target.to(torch.long).contiguous()
    status = kernel(
        z.data_ptr(),
        None if bias is None else bias.data_ptr(),
        z.dtype == torch.bfloat16,
        rows,
        cols,
        z.stride(0),
        target.data_ptr(),
        eps,
        losses.data_ptr(),
        out.data_ptr(),
        None if colsum is None else colsum.data_ptr(),
        _threads(),
    )
    return None if status else losses.sum()


def loss_and_grad_into(
    z: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    out: torch.Tensor,
    bias: torch.Tensor | None = None,
    colsum: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The summed label-smoothed cross-entropy of logits ``z`` (rows, columns), plus
    ``bias`` (columns,) where given, against ``target`` (rows whose target is negative
    ignored), float32, its gradient with respect to the logits written into ``out``
    (contiguous, ``z``'s shape and dtype) and, where ``colsum`` (columns, float32,
    contiguous) is given, that gradient's column sums added into it (the bias's
    gradient); None where the kernel does not apply (``out`` and ``colsum`` then
    untouched)."""
    fits = (
        z.device.type == "cpu"
        and z.dtype in DTYPES
        and z.dim() == 2
        and z.stride(1) == 1
        and out.dtype == z.dtype
        and out.shape == z.shape
        and out.is_contiguous()
        and target.shape == z.shape[:1]
        and (bias is None or _fits_bias(bias, z))
        and (colsum is None or _fits_colsum(colsum, z))
    )
    kernel = _kernel() if fits else None
    return None if kernel is None else _call(kernel, z, target, eps, out, bias, colsum)


def _fits_colsum(colsum: torch.Tensor, z: torch.Tensor) -> bool:
    return (
        colsum.dtype == torch.float32
        and colsum.device.type == "cpu"
        and colsum.shape == z.shape[1:]
        and colsum.is_contiguous()
    )


def _fits_bias(bias: torch.Tensor, z: torch.Tensor) -> bool:
    return bias.dtype == z.dtype and bias.shape == z.shape[1:] and bias.is_contiguous()


def _agrees(kernel) -> bool:
    """The kernel's loss and gradient equal PyTorch's cross-entropy and softmax less the
    smoothed one-hot (evaluated in float64) on random bf16 and float32 logits, an
    ignored row included, within float32 rounding (and bf16's, for the gradient it
    writes in bf16). No autograd: the check may first run inside an autograd Function's
    forward, or under autocast."""
    gen = torch.Generator().manual_seed(0)
    eps = 0.1
    for dtype in DTYPES:
        z = (torch.randn(7, 300, generator=gen) * 3).to(dtype)
        target = torch.randint(0, 300, (7,), generator=gen)
        target[2] = -100
        with torch.autocast(z.device.type, enabled=False):
            wide = z.double()
            want_loss = torch.nn.functional.cross_entropy(
                wide, target, reduction="sum", label_smoothing=eps
            )
            onehot = torch.nn.functional.one_hot(target.clamp(min=0), 300).double()
            want = torch.softmax(wide, -1) - (1 - eps) * onehot - eps / 300
            want[2] = 0.0
        got, sums = torch.empty_like(z), torch.ones(300)
        loss = _call(kernel, z, target, eps, got, colsum=sums)
        if loss is None or not torch.isclose(loss.double(), want_loss, rtol=1e-5, atol=1e-4):
            return False
        if not torch.allclose(sums.double(), 1 + want.sum(0), rtol=1e-5, atol=1e-5):
            return False
        tol = 1e-6 if dtype == torch.float32 else 4e-3
        if not torch.allclose(got.double(), want, rtol=tol, atol=1e-6):
            return False
    return True
