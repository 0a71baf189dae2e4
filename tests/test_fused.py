"""The token loss, eager and compiled (s2s/nn/fused.py), and the guess pass of
parallel scheduled sampling."""

import pytest
import torch
import torch.nn.functional as F

import s2s.nn.fused as fused
from s2s.errors import ConfigError
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
