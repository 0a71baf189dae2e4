"""The token loss, eager and compiled (s2s/nn/fused.py), and the guess pass of
parallel scheduled sampling."""

import pytest
import torch
import torch.nn.functional as F

import s2s.nn.fused as fused
from s2s.errors import ConfigError
from s2s.nn import xent
from s2s.nn.fused import TokenLoss
from s2s.runtime import compile_unavailable


def reference(logits, target, eps):
    return F.cross_entropy(logits.float(), target, reduction="sum", label_smoothing=eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_compiled_loss_equals_the_eager_one_in_value_and_gradient(dtype):
    if compile_unavailable(torch.device("cpu")):
        pytest.skip("torch.compile needs a C++ compiler on this machine")
    torch.manual_seed(0)
    loss = TokenLoss("always")
    assert loss.compiled
    for rows in (7, 13):  # a second shape: dynamic, not one compiled shape
        x = torch.randn(rows, 50).to(dtype).requires_grad_()
        target = torch.randint(50, (rows,))
        got = loss(x, target, 0.1)
        (g_got,) = torch.autograd.grad(got, x)
        want = reference(x, target, 0.1)
        (g_want,) = torch.autograd.grad(want, x)
        assert got.dtype == torch.float32
        assert torch.allclose(got, want, rtol=1e-5)
        assert torch.allclose(
            g_got.float(), g_want.float(), atol=1e-2 if dtype != torch.float32 else 1e-6
        )


def test_eager_is_the_reference_and_label_smoothing_counts():
    torch.manual_seed(0)
    x, target = torch.randn(5, 9), torch.randint(9, (5,))
    loss = TokenLoss("never")
    assert not loss.compiled
    assert torch.equal(loss(x, target, 0.2), reference(x, target, 0.2))
    assert not torch.allclose(loss(x, target, 0.2), loss(x, target, 0.0))


def test_always_without_a_compiler_is_a_clear_error_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(fused, "compile_unavailable", lambda device: "no C++ compiler found")
    with pytest.raises(ConfigError, match="train.compile=always.*no C\\+\\+ compiler"):
        TokenLoss("always")
    assert not TokenLoss("auto").compiled


def test_no_compiler_is_found_when_none_is_on_the_path(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    assert "C++ compiler" in compile_unavailable(torch.device("cpu"))


def test_bucketed_rows_are_ignored_by_the_loss_and_its_gradient():
    from s2s.nn.fused import ROW_BUCKET
    from s2s.translation.objective import bucket_rows

    torch.manual_seed(0)
    rows = torch.randn(ROW_BUCKET + 5, 4, requires_grad=True)
    target = torch.randint(7, (ROW_BUCKET + 5,))
    layer = torch.nn.Linear(4, 7)
    padded, padded_target = bucket_rows(rows, target)
    assert padded.shape[0] == 2 * ROW_BUCKET and padded_target.shape[0] == 2 * ROW_BUCKET
    got = TokenLoss("never")(layer(padded), padded_target, 0.1)
    want = reference(layer(rows), target, 0.1)
    assert torch.allclose(got, want)
    (g_got,) = torch.autograd.grad(got, rows)
    (g_want,) = torch.autograd.grad(want, rows)
    assert torch.allclose(g_got, g_want, atol=1e-6)
    same, _ = bucket_rows(padded, padded_target)
    assert same is padded  # already a multiple: unchanged


def _whole(rows, layer, target, eps):
    return F.cross_entropy(layer(rows), target, reduction="sum", label_smoothing=eps)


@pytest.mark.parametrize("bias", [True, False])
def test_the_chunked_output_layer_and_loss_equal_the_whole_ones(monkeypatch, bias):
    # several chunks (CHUNK made small), ignored rows, smoothing, a scaled gradient
    monkeypatch.setattr(fused, "CHUNK", 8)
    monkeypatch.setattr(fused, "PLAIN_ROWS", 8)
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 11, bias=bias).double()
    params = [x for x in layer.parameters()]
    for n, eps in ((21, 0.1), (16, 0.0), (9, 0.3)):
        x = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
        target = torch.randint(11, (n,))
        target[::4] = -100
        want = _whole(x, layer, target, eps)
        got = fused.linear_cross_entropy(x, layer, target, eps)
        assert torch.allclose(got, want, rtol=1e-12)
        g_want = torch.autograd.grad(2.5 * want, [x, *params])
        g_got = torch.autograd.grad(2.5 * got, [x, *params])
        for a, b in zip(g_got, g_want):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
        with torch.no_grad():  # without gradients: the chunks' losses alone
            assert torch.allclose(fused.linear_cross_entropy(x, layer, target, eps), want)


def test_the_chunked_loss_never_holds_the_whole_logits(monkeypatch):
    from torch.utils._python_dispatch import TorchDispatchMode

    monkeypatch.setattr(fused, "CHUNK", 8)
    monkeypatch.setattr(fused, "PLAIN_ROWS", 8)
    sizes = []

    class Sizes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            sizes.extend(
                t.numel() for t in torch.utils._pytree.tree_leaves(out) if torch.is_tensor(t)
            )
            return out

    layer = torch.nn.Linear(6, 50)
    x = torch.randn(40, 6, requires_grad=True)
    target = torch.randint(50, (40,))
    xent.usable(x.device, x.dtype)  # the native kernel's check (once per process) first
    with Sizes():
        fused.linear_cross_entropy(x, layer, target, 0.1).backward()
    assert max(sizes) <= 8 * 50  # a chunk of logits at most, never 40 x 50
    sizes.clear()
    with Sizes():
        _whole(x, layer, target, 0.1).backward()
    assert max(sizes) >= 40 * 50  # what the plain way holds


def test_the_chunked_loss_in_bf16_and_compiled_is_close_to_float32(monkeypatch):
    if compile_unavailable(torch.device("cpu")):
        pytest.skip("torch.compile needs a C++ compiler on this machine")
    from torch._dynamo.utils import counters

    monkeypatch.setattr(fused, "CHUNK", 16)
    monkeypatch.setattr(fused, "PLAIN_ROWS", 16)
    monkeypatch.setattr(xent, "_kernel", lambda: None)  # the compiled PyTorch form
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 64)
    x = torch.randn(40, 32, requires_grad=True)
    target = torch.randint(64, (40,))
    want = _whole(x, layer, target, 0.1)
    g_want = torch.autograd.grad(want, [x, layer.weight, layer.bias])
    torch._dynamo.reset()
    compiles = counters["frames"]["ok"]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # chunks of 16, 16 and 8 rows
        got = fused.linear_cross_entropy(x, layer, target, 0.1, TokenLoss("always"))
    assert counters["frames"]["ok"] - compiles == 1  # the short chunk: no second graph
    g_got = torch.autograd.grad(got, [x, layer.weight, layer.bias])
    assert got.dtype == torch.float32 and abs(got.item() - want.item()) < 0.01 * want.item()
    for a, b in zip(g_got, g_want):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).norm() < 0.05 * b.norm()


def test_hooks_and_fp16_take_the_plain_way(monkeypatch):
    # a forward hook on the output layer (diagnostics' activation histograms) sees its
    # whole output; fp16 autocast keeps the plain way's loss-scaled gradient
    monkeypatch.setattr(fused, "CHUNK", 8)
    monkeypatch.setattr(fused, "PLAIN_ROWS", 8)
    layer = torch.nn.Linear(6, 50)
    x = torch.randn(40, 6, requires_grad=True)
    target = torch.randint(50, (40,))
    seen = []
    handle = layer.register_forward_hook(lambda m, i, out: seen.append(out.shape))
    fused.linear_cross_entropy(x, layer, target, 0.1).backward()
    handle.remove()
    assert seen == [(40, 50)]
    fused.linear_cross_entropy(x, layer, target, 0.1).backward()
    assert seen == [(40, 50)]  # unhooked: the chunks, and the layer is never called
    calls = []
    monkeypatch.setattr(fused._LinearCrossEntropy, "apply", lambda *a: calls.append(a))
    with torch.autocast("cpu", dtype=torch.float16):
        loss = fused.linear_cross_entropy(x, layer, target, 0.1)
    assert not calls and loss.requires_grad


def test_only_the_gradients_asked_for_are_computed(monkeypatch):
    monkeypatch.setattr(fused, "CHUNK", 8)
    monkeypatch.setattr(fused, "PLAIN_ROWS", 8)
    layer = torch.nn.Linear(6, 50).double()
    layer.weight.requires_grad_(False)
    x = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randint(50, (40,))
    saved = []
    backward = fused._LinearCrossEntropy.backward
    monkeypatch.setattr(
        fused._LinearCrossEntropy,
        "backward",
        staticmethod(lambda ctx, g: saved.append(ctx.saved_tensors) or backward(ctx, g)),
    )
    got = fused.linear_cross_entropy(x, layer, target, 0.1)
    gx, gb = torch.autograd.grad(got, [x, layer.bias])
    want = _whole(x, layer, target, 0.1)
    wx, wb = torch.autograd.grad(want, [x, layer.bias])
    assert torch.allclose(gx, wx) and torch.allclose(gb, wb)
    assert saved[0][1] is None  # no weight gradient made for a frozen weight


def test_its_gradients_are_scaled_in_place_once_and_a_second_backward_is_refused():
    """The backward pass scales the gradients made in the forward pass in place (no copy
    of the weight gradient per update): the first backward is right, a second one
    through the same graph (retain_graph) fails loudly instead of scaling them twice."""
    torch.manual_seed(0)
    x = torch.randn(600, 16, requires_grad=True)
    lin = torch.nn.Linear(16, 50)
    target = torch.randint(0, 50, (600,))
    loss = fused.linear_cross_entropy(x, lin, target) * 0.5
    loss.backward(retain_graph=True)
    ref = torch.nn.functional.cross_entropy(x @ lin.weight.t() + lin.bias, target, reduction="sum")
    want = torch.autograd.grad(ref * 0.5, [x, lin.weight, lin.bias])
    for got, w in zip([x.grad, lin.weight.grad, lin.bias.grad], want):
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


def test_where_the_kernel_takes_every_chunk_torch_compile_is_not_set_up():
    """The compiled PyTorch form is the kernel's fallback: made at its first use, so a
    training that never needs it does not pay torch.compile's set-up (about 1.2 s)."""
    if compile_unavailable(torch.device("cpu")) or not xent.usable(
        torch.device("cpu"), torch.float32
    ):
        pytest.skip("needs the C loss kernel and a C++ compiler")
    fused._compiled_loss_and_grad.cache_clear()
    token_loss = TokenLoss("auto")
    assert token_loss.compiled
    x = torch.randn(600, 16, requires_grad=True)
    loss = fused.linear_cross_entropy(
        x, torch.nn.Linear(16, 50), torch.randint(0, 50, (600,)), token_loss=token_loss
    )
    loss.backward()
    assert x.grad is not None
    assert fused._compiled_loss_and_grad.cache_info().currsize == 0
