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

``linear_cross_entropy`` runs the output layer and the loss together; over more than
PLAIN_ROWS rows (at any size where the C loss kernel ``xent.c`` is built) ``CHUNK`` rows
at a time, computing the gradients of the rows, weight and bias in the same pass, so that
the (tokens, vocabulary) logits and their gradient never exist whole: the largest
transient of a training step (docs/speed.md, memory). Each chunk's loss and gradient come
from that kernel where it applies (``s2s.nn.xent``), else from ``_loss_and_grad``. The
same value and gradients as the token loss of ``output(rows)`` (in float32 and float64;
under bf16 autocast the weight's gradient is summed over the chunks in float32).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

from s2s.config import COMPILE_MODES
from s2s.errors import ConfigError
from s2s.nn import xent
from s2s.nn.precision import autocast_dtype
from s2s.runtime import compile_unavailable

ROW_BUCKET = 128
CHUNK = 512  # rows of logits alive at a time in linear_cross_entropy
# Up to this many rows the plain way (the whole logits) is no larger and faster: measured
# with scripts/bench_loss.py, 1,024 rows +31 against +42 MB, 1,536 rows +47 against +42
# MB at the same speed, 2,560 rows +79 against +43 MB (docs/speed.md, memory)
PLAIN_ROWS = 1536


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


def _loss_and_grad(
    logits: torch.Tensor, target: torch.Tensor, label_smoothing: float, in_place: bool = False
):
    """Summed cross-entropy (float32 arithmetic for half-precision logits; rows whose
    target is negative ignored) and its gradient with respect to ``logits``, in their
    dtype, without autograd: softmax(z) - (1 - eps) onehot(target) - eps / V.
    ``in_place``: for eager runs, one float32 array of the logits' size edited in place;
    without, the form Inductor fuses into one pass."""
    half = logits.dtype in (torch.float16, torch.bfloat16)
    z = logits.float() if half else logits
    keep = (target >= 0).unsqueeze(1)
    gold = target.clamp(min=0).unsqueeze(1)
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    nll = lse - z.gather(1, gold)
    smooth = lse - z.mean(dim=1, keepdim=True)  # -(1/V) sum_j log p_j
    eps = label_smoothing
    loss = torch.where(keep, (1.0 - eps) * nll + eps * smooth, 0.0).sum()
    if in_place:
        grad = torch.sub(z, lse).exp_().sub_(eps / z.shape[1])
        grad.scatter_add_(1, gold, grad.new_full(gold.shape, eps - 1.0)).mul_(keep)
        return loss, grad.to(logits.dtype)
    onehot = (torch.arange(z.shape[1], device=z.device).unsqueeze(0) == gold).to(z.dtype)
    grad = torch.exp(z - lse) - eps / z.shape[1] - (1.0 - eps) * onehot
    return loss, torch.where(keep, grad, 0.0).to(logits.dtype)


def _chunk_loss(fallback, z, target, eps, out, bias=None, colsum=None) -> torch.Tensor:
    """A chunk's summed loss (its logits ``z`` plus ``bias``), their gradient written
    into ``out`` and its column sums added into ``colsum`` where given (the bias's
    gradient): by the native kernel where it applies (``s2s.nn.xent``), else by
    ``fallback`` (``_loss_and_grad``)."""
    loss = xent.loss_and_grad_into(z, target, eps, out, bias, colsum)
    if loss is None:
        if bias is not None:
            z += bias
        loss, grad = fallback(z, target, eps)
        out.copy_(grad)
        if colsum is not None:
            colsum += out.sum(0, dtype=colsum.dtype)
    return loss


@functools.cache
def _compiled_loss_and_grad():
    return torch.compile(_loss_and_grad, dynamic=True)


def _compiled_fallback(z: torch.Tensor, target: torch.Tensor, eps: float):
    """``_loss_and_grad`` compiled at its first call: where the native kernel takes every
    chunk it is never called, and setting up torch.compile (1.1-1.3 s) is not paid."""
    return _compiled_loss_and_grad()(z, target, eps)


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward: the summed loss, the gradients of rows, weight and bias computed chunk by
    chunk and kept; backward: those gradients scaled by the incoming one.
    ``loss_and_grad(z, target, eps, out, bias, colsum)``: a chunk's loss, the bias added
    to its logits ``z`` (no ``addmm``: it copies the bias into every row before the
    product), their gradient written into ``out`` and its column sums added into
    ``colsum`` (the bias's gradient; None where there is no bias)."""

    @staticmethod
    def forward(ctx, rows, weight, bias, target, label_smoothing, loss_and_grad, dtype):
        acc = torch.promote_types(dtype, torch.float32)  # float32 (float64 in tests)
        want_x, want_w, want_b = ctx.needs_input_grad[:3]
        with torch.autocast(rows.device.type, enabled=False):
            x, w = rows.to(dtype), weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            vocab = w.shape[0]
            grad_x = torch.empty_like(x) if want_x else None
            # half precision: each chunk's weight gradient made apart, summed in float32
            part = None
            if want_w and dtype != acc:
                part = torch.empty(w.shape, dtype=dtype, device=w.device)
            start_w = torch.zeros if part is None else torch.empty  # the first part assigned
            grad_w = start_w(weight.shape, dtype=acc, device=w.device) if want_w else None
            grad_b = torch.zeros(vocab, dtype=acc, device=w.device) if want_b else None
            total = torch.zeros((), dtype=acc, device=w.device)
            zbuf = x.new_empty(min(CHUNK, x.shape[0]), vocab)
            grads = torch.empty_like(zbuf)  # a chunk's gradient
            wt = w.t()
            for start in range(0, x.shape[0], CHUNK):
                xc = x[start : start + CHUNK]
                size = xc.shape[0]
                # a short last chunk gets its own array: a view of zbuf would fail the
                # compiled step's guard on its base's size (a second compilation)
                z = zbuf if size == zbuf.shape[0] else x.new_empty(size, vocab)
                torch.mm(xc, wt, out=z)  # the bias is added by loss_and_grad
                g = grads[:size]
                total += loss_and_grad(
                    z, target[start : start + size], label_smoothing, g, b, grad_b
                )
                if grad_x is not None:
                    torch.mm(g, w, out=grad_x[start : start + size])
                if part is not None:
                    torch.mm(g.t(), xc, out=part)
                    xent.add_into(grad_w, part, assign=start == 0)
                elif grad_w is not None:
                    grad_w.addmm_(g.t(), xc)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.dtypes = (rows.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total):
        # scaled in place: the gradients are this Function's own, made in its forward (a
        # copy of the output layer's weight gradient cost a fresh 8 MB per update). A
        # second backward (retain_graph) is refused by autograd: they were modified.
        grads = []
        for grad, dtype in zip(ctx.saved_tensors, ctx.dtypes):
            grads.append(None if grad is None else grad.mul_(grad_total.to(grad.dtype)).to(dtype))
        return (*grads, None, None, None, None)


def _hooked(module: torch.nn.Module) -> bool:
    """Whether a forward hook would see ``module``'s output (its own or a global one)."""
    hooks = torch.nn.modules.module
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks
    )


def linear_cross_entropy(
    rows: torch.Tensor,
    output: torch.nn.Linear | tuple[torch.Tensor, torch.Tensor | None],
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    token_loss: TokenLoss | None = None,
) -> torch.Tensor:
    """``token_loss(output(rows), target, label_smoothing)`` (targets below 0 ignored);
    ``output`` a linear layer or its (weight, bias) (some of its columns:
    ``s2s.nn.sampled``). Over more than PLAIN_ROWS rows, CHUNK rows at a time, so that
    the whole logits are never held (docs/speed.md, memory): with gradients wanted,
    ``_LinearCrossEntropy`` (compiled where ``token_loss`` is); without, the chunks'
    losses alone. Not in fp16 autocast, nor while a forward hook watches ``output``."""
    token_loss = token_loss or TokenLoss("never")
    dtype = autocast_dtype(rows.device.type) or rows.dtype
    if isinstance(output, torch.nn.Module):
        weight, bias, hooked = output.weight, output.bias, _hooked(output)
    else:
        (weight, bias), hooked = output, False
        output = functools.partial(F.linear, weight=weight, bias=bias)
    # with the native kernel the chunked form is faster at any size
    plain = rows.shape[0] <= PLAIN_ROWS and not xent.usable(rows.device, dtype)
    if plain or dtype == torch.float16 or hooked:
        # fp16: the plain way's gradient carries the loss scale (no underflow); hooks on
        # the output layer (activation histograms) see its whole output as before
        return token_loss(output(rows), target, label_smoothing)
    params = [p for p in (weight, bias) if p is not None]
    if torch.is_grad_enabled() and (rows.requires_grad or any(p.requires_grad for p in params)):
        fallback = (
            _compiled_fallback
            if token_loss.compiled
            else functools.partial(_loss_and_grad, in_place=True)
        )
        fn = functools.partial(_chunk_loss, fallback)
        return _LinearCrossEntropy.apply(rows, weight, bias, target, label_smoothing, fn, dtype)
    chunks = zip(rows.split(CHUNK), target.split(CHUNK))
    return sum(token_loss(output(r), t, label_smoothing) for r, t in chunks)
