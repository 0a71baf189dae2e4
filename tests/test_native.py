"""The C ranking kernel (s2s/decoding/rank.c through s2s.runtime.native): the same
ranking as PyTorch's path where it is built, and that path wherever it is not."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import pytest
import torch

from s2s.decoding import ranking
from s2s.runtime import native

SOURCE = Path(ranking.__file__).with_name("rank.c")


def torch_path(monkeypatch):
    """Make ranking use PyTorch's operators only."""
    monkeypatch.setattr(ranking, "_native_top", lambda *a, **k: None)


def test_the_kernel_is_built_where_a_compiler_is_found():
    """This machine has gcc (as CI's): the kernel builds, loads and passes its check."""
    if native.compiler() is None:
        assert ranking._kernel() is None
    else:
        assert ranking._kernel() is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("columns, k", [(8000, 6), (1000 + 37, 11), (300, 1), (5, 8)])
def test_the_kernels_ranking_equals_pytorchs(monkeypatch, dtype, columns, k):
    """Each row's k best log-probabilities: the same values within float32 rounding,
    ids whose values are the same (bf16 has ties, which either may order differently),
    the blocked token never among them but counted in the normaliser; a last, shorter
    segment; a row whose best columns are -inf; fewer columns than k."""
    kernel = ranking._built_kernel()  # as built: not hidden by the check at loading
    if kernel is None:
        pytest.skip("no C compiler here: the PyTorch path is the only one")  # CI has gcc
    gen = torch.Generator().manual_seed(columns + k)
    logits = (torch.randn(37, columns, generator=gen) * 3).to(dtype)
    logits[0, : columns // 2] = float("-inf")
    logits[1, -30:] += 10.0
    blocked = int(logits[2].float().argmax())
    for block in (None, blocked):
        values, ids = ranking._call(kernel, logits, k, block, True)
        with monkeypatch.context() as m:
            torch_path(m)
            want_values, want_ids = ranking.top_log_probs(logits, k, block)
        assert values.shape == want_values.shape == (37, min(k, columns))
        assert torch.allclose(values, want_values, rtol=0, atol=2e-5)
        logp = torch.log_softmax(logits.float(), -1)
        assert torch.equal(logp.gather(1, ids), logp.gather(1, want_ids))
        if block is not None and k < columns:
            assert block not in ids[2].tolist()
    best = ranking._call(kernel, logits, 1, None, False)[1].squeeze(1)
    assert torch.equal(logits.gather(1, best[:, None]), logits.amax(-1, keepdim=True))


def test_search_steps_use_the_kernel_and_agree_with_pytorch(monkeypatch):
    """step_top_log_probs and step_argmax through the kernel (counted) give what the
    PyTorch path gives, over float32 logits without ties: whole, and from a step that
    hands search its output layer (run HEAD_ROWS rows at a time)."""
    if ranking._kernel() is None:
        pytest.skip("no C compiler here: the PyTorch path is the only one")  # CI has gcc
    from s2s.nn.decoder import StepOutput

    gen = torch.Generator().manual_seed(3)
    head = torch.nn.Linear(8, 500)
    monkeypatch.setattr(ranking, "HEAD_ROWS", 6)
    steps = [
        StepOutput(
            features=torch.randn(20, 8, generator=gen), head=head, state=None, attention=None
        ),
        types.SimpleNamespace(logits=torch.randn(20, 500, generator=gen)),
    ]
    calls, real = [], ranking._native_top
    for out in steps:
        calls.clear()
        with monkeypatch.context() as m:
            m.setattr(ranking, "_native_top", lambda *a, **k: calls.append(1) or real(*a, **k))
            got = ranking.step_top_log_probs(out, 4, blocked=9), ranking.step_argmax(out)
        assert len(calls) == (8 if isinstance(out, StepOutput) else 2)  # 4 blocks of rows
        with monkeypatch.context() as m:
            torch_path(m)
            want = ranking.step_top_log_probs(out, 4, blocked=9), ranking.step_argmax(out)
        assert torch.equal(got[0][1], want[0][1]) and torch.equal(got[1], want[1])
        assert torch.allclose(got[0][0], want[0][0], rtol=0, atol=1e-5)


def test_a_row_of_nan_still_gives_valid_ids():
    """A diverged model's NaN logits: the kernel returns ids inside the vocabulary (search
    goes on and writes something, as with PyTorch's path), never a negative one."""
    kernel = ranking._built_kernel()
    if kernel is None:
        pytest.skip("no C compiler here: the PyTorch path is the only one")  # CI has gcc
    logits = torch.randn(3, 300)
    logits[1] = float("nan")
    for normalise in (True, False):
        values, ids = ranking._call(kernel, logits, 4, None, normalise)
        assert ids.min() >= 0 and ids.max() < 300
        assert torch.isfinite(values[0]).all()


def test_inputs_the_kernel_does_not_take_go_to_pytorch():
    """Columns not contiguous, float16, an empty batch: no kernel call, PyTorch's path."""
    logits = torch.randn(6, 400, generator=torch.Generator().manual_seed(4))
    for odd in (logits.t().contiguous().t(), logits.half(), logits[:0]):
        assert ranking._native_top(odd, 3, None, normalise=True) is None
    values, ids = ranking.top_log_probs(logits.t().contiguous().t(), 3)
    assert torch.equal(ids, torch.log_softmax(logits, -1).topk(3, -1).indices)


def test_the_library_is_built_once_and_kept(monkeypatch, tmp_path):
    """Built into $S2S_CACHE_DIR/native on first use; a second load (a new process,
    here a cleared cache) reuses the file."""
    if native.compiler() is None:
        pytest.skip("no C compiler here")  # CI has gcc
    monkeypatch.setenv("S2S_CACHE_DIR", str(tmp_path))
    native.load.cache_clear()
    try:
        assert native.load(SOURCE) is not None
        (built,) = (tmp_path / "native").glob("rank-*.so")
        stamp = built.stat().st_mtime_ns
        native.load.cache_clear()
        assert native.load(SOURCE) is not None
        assert built.stat().st_mtime_ns == stamp
        assert list((tmp_path / "native").iterdir()) == [built]  # no scratch file left
    finally:
        native.load.cache_clear()


def test_a_change_to_the_shared_header_builds_anew(monkeypatch, tmp_path):
    """The build is keyed by the kernels' shared header too: another header, another
    library (a kernel never runs on a stale copy of the shared code)."""
    if native.compiler() is None:
        pytest.skip("no C compiler here")  # CI has gcc
    monkeypatch.setenv("S2S_CACHE_DIR", str(tmp_path / "cache"))
    header = tmp_path / "include" / "native_math.h"
    header.parent.mkdir()
    header.write_text(native.HEADER.read_text() + "/* changed */\n")
    native.load.cache_clear()
    try:
        assert native.load(SOURCE) is not None
        monkeypatch.setattr(native, "HEADER", header)
        native.load.cache_clear()
        assert native.load(SOURCE) is not None
        assert len(list((tmp_path / "cache" / "native").glob("rank-*.so"))) == 2
    finally:
        native.load.cache_clear()


def test_a_kernel_that_disagrees_with_pytorch_is_not_used(caplog):
    kernel = object()
    with caplog.at_level(logging.WARNING, logger="s2s.runtime.native"):
        assert native.checked(kernel, lambda k: k is kernel, "test") is kernel
        assert caplog.text == ""
        assert native.checked(kernel, lambda k: False, "test") is None
    assert "the native test kernel disagrees with PyTorch's: not used" in caplog.text
    assert native.checked(None, lambda k: pytest.fail("checked nothing"), "test") is None


def test_no_compiler_a_failed_build_or_s2s_native_0_give_none(monkeypatch, tmp_path, caplog):
    """Where the kernel cannot be had, load says why (a log line, no exception) and
    returns None, and nothing half-built is left in the cache."""
    monkeypatch.setenv("S2S_CACHE_DIR", str(tmp_path))
    try:
        native.load.cache_clear()
        monkeypatch.setattr(native, "compiler", lambda: None)
        assert native.load(SOURCE) is None
        native.load.cache_clear()
        monkeypatch.setattr(native, "compiler", lambda: "/bin/false")  # a build that fails
        with caplog.at_level(logging.INFO, logger="s2s.runtime.native"):
            assert native.load(SOURCE) is None
        assert "rank.c not built" in caplog.text
        assert list((tmp_path / "native").iterdir()) == []
        native.load.cache_clear()
        monkeypatch.setenv("S2S_NATIVE", "0")
        monkeypatch.setattr(native, "compiler", lambda: pytest.fail("looked for a compiler"))
        assert native.load(SOURCE) is None
    finally:
        native.load.cache_clear()
