"""The C loss kernel (s2s/nn/xent.c through s2s.nn.xent): the token loss and its
gradient as the PyTorch form computes them, the chunked output-layer loss through it at
any size, and the PyTorch form wherever it does not apply."""

from __future__ import annotations

import pytest
import torch

import s2s.nn.fused as fused
from s2s.nn import xent
from s2s.runtime import native


def built():
    kernel = xent._built_kernel()  # as built: not hidden by the check at loading
    if kernel is None:
        pytest.skip("no C compiler here: the PyTorch form is the only one")  # CI has gcc
    return kernel


def test_the_kernel_is_built_and_passes_its_check_where_a_compiler_is_found():
    if native.compiler() is None:
        assert not xent.usable(torch.device("cpu"), torch.bfloat16)
    else:
        assert xent._kernel() is not None
        assert xent.usable(torch.device("cpu"), torch.bfloat16)
        assert xent.usable(torch.device("cpu"), torch.float32)
        assert not xent.usable(torch.device("cpu"), torch.float16)
        assert not xent.usable(torch.device("cpu"), torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("columns, eps", [(8000, 0.1), (1000 + 37, 0.0), (3, 0.3)])
def test_the_kernels_loss_and_gradient_equal_the_pytorch_forms(dtype, columns, eps):
    """Against PyTorch's cross-entropy evaluated in float64: rows ignored (negative target), a
    row read with a stride longer than its columns, a row whose other logits are -inf
    (smoothing off); the loss within float32 rounding, the gradient within its dtype's."""
    kernel = built()
    gen = torch.Generator().manual_seed(columns)
    wide = (torch.randn(41, columns + 5, generator=gen) * 4).to(dtype)
    z = wide[:, :columns]  # rows columns + 5 apart
    target = torch.randint(0, columns, (41,), generator=gen)
    target[[3, 17]] = -100
    if eps == 0:
        z[5] = float("-inf")
        z[5, target[5]] = 2.0
    grad = torch.full(z.shape, 7.0, dtype=dtype)  # every value overwritten
    loss = xent._call(kernel, z, target, eps, grad)
    reference = z.double().requires_grad_()
    want_loss = torch.nn.functional.cross_entropy(
        reference, target, reduction="sum", label_smoothing=eps, ignore_index=-100
    )
    (want,) = torch.autograd.grad(want_loss, [reference])
    assert loss.dtype == torch.float32
    assert torch.isclose(loss.double(), want_loss, rtol=2e-6, atol=1e-4)
    tol = 2e-6 if dtype == torch.float32 else 4e-3  # bf16: 8 bits of mantissa
    assert torch.allclose(grad.double(), want, rtol=tol, atol=1e-7)
    assert torch.all(grad[[3, 17]] == 0)
    if dtype == torch.bfloat16:  # the float32 gradient rounded as PyTorch rounds (to even)
        wide32 = torch.empty(z.shape)
        xent._call(kernel, z.float(), target, eps, wide32)
        assert torch.equal(grad, wide32.to(torch.bfloat16))
    # the gradient of each kept row sums to zero (softmax less the smoothed one-hot)
    assert grad[:3].double().sum(1).abs().max() < (1e-5 if dtype == torch.float32 else 1e-2)


def test_a_bf16_gradient_halfway_between_two_values_rounds_to_even():
    """Two equal logits, target 0, eps = 0.5 - 2^-9: the second column's gradient is
    0.5 - eps / 2 = 0.25 + 2^-10, exactly halfway between the bf16 values 0.25 and
    0.25 + 2^-9; PyTorch (and the kernel) round to the even one, 0.25."""
    kernel = built()
    exact = torch.tensor(0.25 + 2**-10)
    assert exact.to(torch.bfloat16).item() == 0.25
    grad = torch.empty(1, 2, dtype=torch.bfloat16)
    xent._call(
        kernel, torch.zeros(1, 2, dtype=torch.bfloat16), torch.tensor([0]), 0.5 - 2**-9, grad
    )
    assert grad[0, 1].item() == 0.25


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_bias_is_added_to_every_row(dtype):
    """Logits less a bias, with the bias: the loss and gradient of the logits; the
    checked entry point takes a bias of the logits' dtype and columns only."""
    kernel = built()
    gen = torch.Generator().manual_seed(4)
    z = (torch.randn(9, 600, generator=gen) * 3).to(dtype)
    bias = (torch.randn(600, generator=gen) * 2).to(dtype)
    target = torch.randint(0, 600, (9,), generator=gen)
    want, got = torch.empty(z.shape), torch.empty_like(z)
    # the sum in float32, as the kernel forms it (not rounded to bf16)
    want_loss = xent._call(kernel, z.float() + bias.float(), target, 0.1, want)
    loss = xent.loss_and_grad_into(z, target, 0.1, got, bias)
    assert torch.isclose(loss, want_loss, rtol=1e-6)
    assert torch.equal(got, want.to(dtype))
    for wrong in (bias.double(), bias[:-1], torch.stack([bias, bias], 1)[:, 0]):
        assert xent.loss_and_grad_into(z, target, 0.1, got, wrong) is None


def test_the_checked_entry_point_refuses_what_it_does_not_take():
    built()
    target = torch.tensor([1, 0])
    for z in (torch.randn(2, 9, dtype=torch.float16), torch.randn(2, 9, dtype=torch.float64)):
        out = torch.full_like(z, 7.0)
        assert xent.loss_and_grad_into(z, target, 0.1, out) is None
        assert torch.all(out == 7.0)
    z = torch.randn(9, 2).t()  # columns not contiguous
    assert xent.loss_and_grad_into(z, target, 0.1, torch.empty(2, 9)) is None
    z = torch.randn(2, 9)
    assert xent.loss_and_grad_into(z, target, 0.1, torch.empty(2, 9).t().t()) is not None
    assert xent.loss_and_grad_into(z, target, 0.1, torch.empty(9, 2).t()) is None


def _whole(x, layer, target, eps):
    return torch.nn.functional.cross_entropy(
        layer(x).float(), target, reduction="sum", label_smoothing=eps, ignore_index=-100
    )


@pytest.mark.parametrize("rows", [40, 5])
def test_the_output_layer_loss_runs_through_the_kernel_at_any_size(monkeypatch, rows):
    """Under bf16 autocast, over more rows than a chunk and over fewer than PLAIN_ROWS:
    every chunk goes through the kernel (counted), and the loss and the gradients of
    rows, weight and bias are those of the whole float32 loss within bf16's rounding."""
    if xent._kernel() is None:
        pytest.skip("no C compiler here: the PyTorch form is the only one")  # CI has gcc
    monkeypatch.setattr(fused, "CHUNK", 16)
    calls = []
    into = xent.loss_and_grad_into
    monkeypatch.setattr(xent, "loss_and_grad_into", lambda *a: calls.append(1) or into(*a))
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 64)
    x = torch.randn(rows, 32, requires_grad=True)
    target = torch.randint(64, (rows,))
    target[::7] = -100
    want = _whole(x, layer, target, 0.1)
    g_want = torch.autograd.grad(want, [x, layer.weight, layer.bias])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fused.linear_cross_entropy(x, layer, target, 0.1)
    assert len(calls) == -(-rows // 16)  # one per chunk: 16, 16 and 8 rows, or 5
    g_got = torch.autograd.grad(got, [x, layer.weight, layer.bias])
    assert got.dtype == torch.float32 and abs(got.item() - want.item()) < 0.01 * want.item()
    for a, b in zip(g_got, g_want):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).norm() < 0.02 * b.norm()


def test_the_first_use_may_come_inside_a_training_step():
    """The kernel's check (once per process) run first from inside the autograd
    Function's forward pass, under bf16 autocast, as in `s2s train`: it passes there."""
    if native.compiler() is None:
        pytest.skip("no C compiler here: the PyTorch form is the only one")  # CI has gcc
    xent._kernel.cache_clear()
    layer = torch.nn.Linear(8, 30)
    x = torch.randn(2000, 8, requires_grad=True)  # more rows than PLAIN_ROWS
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fused.linear_cross_entropy(x, layer, torch.randint(30, (2000,)), 0.1)
    loss.backward()
    assert xent._kernel() is not None and x.grad is not None


def test_without_the_kernel_small_outputs_take_the_plain_way(monkeypatch):
    monkeypatch.setattr(xent, "_kernel", lambda: None)
    calls = []
    monkeypatch.setattr(fused._LinearCrossEntropy, "apply", lambda *a: calls.append(a))
    layer = torch.nn.Linear(6, 50)
    x = torch.randn(40, 6, requires_grad=True)
    loss = fused.linear_cross_entropy(x, layer, torch.randint(50, (40,)), 0.1)
    assert not calls and loss.requires_grad  # 40 rows <= PLAIN_ROWS: the whole logits


def test_adding_a_bf16_part_into_a_float32_sum_equals_pytorchs():
    """add_into: the kernel where it applies, PyTorch's += where it does not (a
    transposed part); the same sums either way."""
    if xent._adder() is None:
        pytest.skip("no C compiler here: the PyTorch form is the only one")  # CI has gcc
    gen = torch.Generator().manual_seed(2)
    acc = torch.randn(300, 37, generator=gen)
    part = torch.randn(300, 37, generator=gen).to(torch.bfloat16)
    want = acc + part.float()
    xent.add_into(acc, part)
    assert torch.equal(acc, want)
    skew = torch.randn(37, 300, generator=gen).to(torch.bfloat16).t()
    want = acc + skew.float()
    xent.add_into(acc, skew)
    assert torch.equal(acc, want)
    for each in (part, skew):  # assigned: what was there is gone
        acc.fill_(7.0)
        xent.add_into(acc, each, assign=True)
        assert torch.equal(acc, each.float())
