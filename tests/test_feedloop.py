"""Teacher-forced input feeding with additive attention by hand, its element-wise work in C
(s2s/nn/feedloop.c through s2s/nn/feedloop.py): the same values and gradients as the
generic loop, in float32 and near them under bf16 autocast, at any length; a kernel that
disagrees with PyTorch's loop is not used."""

import pytest
import torch
from test_feeding import assert_equals_the_generic_loop, feeding_model, run
from test_model import toy_batch

from s2s.nn import feedloop
from s2s.runtime import native

needs_kernel = pytest.mark.skipif(native.compiler() is None, reason="no C compiler here")


def used_the_kernel(model, batch) -> bool:
    enc = model.encode(batch.src, batch.src_lengths)
    node = model.decoder(batch.tgt_in, enc).grad_fn
    seen = set()
    while node is not None and node not in seen:  # down the first inputs to the loop
        seen.add(node)
        if type(node).__name__ == "_LoopBackward":
            return True
        node = next((n for n, _ in node.next_functions if n is not None), None)
    return False


@needs_kernel
@pytest.mark.parametrize("shape", ["additive", "tied, bridge", "linear h~, copied bridge"])
@pytest.mark.parametrize("sizes", [(4, 5, 6), (2, 3, 2), (6, 9, 11)])
def test_the_kernel_loop_equals_the_generic_loop(shape, sizes, monkeypatch):
    batch_size, src_len, tgt_len = sizes
    model = feeding_model(shape)
    batch = toy_batch(seed=7, batch=batch_size, src_len=src_len, tgt_len=tgt_len)
    assert used_the_kernel(model, batch)
    assert_equals_the_generic_loop(model, batch, monkeypatch)


@needs_kernel
def test_under_bf16_autocast_the_kernel_loop_stays_near_the_float32_one(monkeypatch):
    model = feeding_model("additive")
    batch = toy_batch(seed=8, batch=5, src_len=7, tgt_len=8)
    want, want_grads = run(model, batch, monkeypatch, generic=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert used_the_kernel(model, batch)
        got, got_grads = run(model, batch)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 0.05
    for name, g in want_grads.items():
        assert got_grads[name].dtype == torch.float32
        err = (got_grads[name] - g).norm() / g.norm().clamp(min=1e-6)
        assert err < 0.05, name


@needs_kernel
def test_without_gradients_it_gives_the_same_values(monkeypatch):
    model = feeding_model("additive")
    batch = toy_batch(seed=9)
    want, _ = run(model, batch, monkeypatch, generic=True)
    with torch.no_grad():
        got = model.decoder(batch.tgt_in, model.encode(batch.src, batch.src_lengths))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@needs_kernel
def test_a_kernel_that_disagrees_is_not_used():
    built = feedloop._built()
    assert built is not None and feedloop._agrees(built)
    real = built._fns["out_fwd"]  # h~ = tanh(...) left without its tanh

    def no_tanh(B, N, bf, x, feed, fs, tanh, threads):
        return real(B, N, bf, x, feed, fs, 0, threads)

    broken = feedloop._Kernels({**built._fns, "out_fwd": no_tanh})
    assert not feedloop._agrees(broken)
    assert native.checked(broken, feedloop._agrees, "input-feeding") is None


def test_where_the_kernel_is_not_built_the_step_function_runs(monkeypatch):
    model = feeding_model("additive")
    batch = toy_batch(seed=3)
    with monkeypatch.context() as patch:
        patch.setattr(feedloop, "kernels", lambda: None)
        assert not used_the_kernel(model, batch)
        got, _ = run(model, batch)
    assert used_the_kernel(model, batch)
    want, _ = run(model, batch, monkeypatch, generic=True)  # (undoes every patch)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_refusing_kernel_call_raises_naming_it():
    kernels = feedloop._Kernels({"attn_fwd": lambda *args: 1})
    with pytest.raises(RuntimeError, match="attn_fwd refused"):
        kernels.attn_fwd(1, 2)
