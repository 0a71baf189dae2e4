"""Search over a bf16 output layer: the best candidates by the rounded logits are
rescored with float32 sums (s2s.decoding.ranking.refined, rank.c's s2s_rescore), so
that near-ties are decided as a float32 result of the same bf16 products decides them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s2s.decoding import ranking
from s2s.decoding.packed import PackedLinear, _works, packed_product
from s2s.nn.decoder import StepOutput
from s2s.runtime import native

PATHS = ["kernel", "pytorch"]


def use(path: str, monkeypatch) -> None:
    """Rescore with rank.c's kernel (skipped where none is built) or PyTorch's path."""
    if path == "pytorch":
        monkeypatch.setattr(ranking, "_native_rescore", lambda *a: None)
    elif native.compiler() is None:
        pytest.skip("no C compiler here: the PyTorch path is the only one")  # CI has gcc
    else:  # built and passing its check at loading
        assert ranking._rescore_kernel() is not None


def bf16_layer(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """A bf16 output layer as decoding's copy has it: packed where this build packs."""
    layer = nn.Linear(weight.shape[1], weight.shape[0]).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return PackedLinear(layer) if _works() else layer


def step(head: nn.Module, features: torch.Tensor) -> StepOutput:
    return StepOutput(features=features, head=head, state=None, attention=None)


def exact(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The layer's logits from its bf16 operands, multiplied and summed in float64."""
    return features.double() @ head.weight.double().t() + head.bias.double()


@pytest.mark.parametrize("path", PATHS)
def test_a_near_tie_that_bf16_rounds_away_is_decided_by_the_float32_sums(path, monkeypatch):
    """Columns 0 and 1 score 1 + 2^-10 and 1 + 3 * 2^-10: both 1.0 in bf16, which rank
    column 0 first (ties: the first). The rescored search picks column 1, greedy and in
    the k best, with log-probabilities of the float32 logits."""
    use(path, monkeypatch)
    weight = torch.tensor([[1.0, 2**-10], [1.0, 3 * 2**-10], [0.5, 0.0], [0.25, 0.0]])
    head = bf16_layer(weight, torch.zeros(4))
    features = torch.ones(3, 2, dtype=torch.bfloat16)
    out = step(head, features)
    logits = out.logits
    assert logits.dtype == torch.bfloat16 and torch.equal(logits[:, 0], logits[:, 1])
    assert ranking.refinable(out)
    assert ranking.step_argmax(out).tolist() == [1, 1, 1]
    values, ids = ranking.step_top_log_probs(out, 2)
    assert ids.tolist() == [[1, 0]] * 3
    want = torch.log_softmax(exact(head, features), -1).gather(1, ids)
    assert torch.allclose(values.double(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_rescored_search_ranks_by_float32_logits_over_a_vocabulary(path, monkeypatch):
    """A random bf16 layer (500 columns, 40 rows): the greedy token is the argmax of the
    float64 logits of the bf16 operands; the k best are in their order, a blocked token
    never chosen; log-probabilities within 5e-3 of theirs (the normaliser is corrected
    over the candidates only: unrescored, 0.026 off here and in another order)."""
    use(path, monkeypatch)
    gen = torch.Generator().manual_seed(5)
    weight, bias = torch.randn(500, 64, generator=gen) * 0.3, torch.randn(500, generator=gen)
    head = bf16_layer(weight, bias)
    features = torch.randn(40, 64, generator=gen).to(torch.bfloat16)
    out = step(head, features)
    truth = exact(head, features)
    assert torch.equal(ranking.step_argmax(out), truth.argmax(-1))
    values, ids = ranking.step_top_log_probs(out, 4, blocked=int(truth[0].argmax()))
    logp = torch.log_softmax(truth, -1)
    logp[:, int(truth[0].argmax())] = float("-inf")
    assert torch.equal(ids, logp.topk(4, -1).indices)
    assert torch.allclose(values.double(), logp.gather(1, ids), rtol=0, atol=5e-3)


def test_the_kernels_logits_equal_pytorchs_and_a_wrong_id_is_refused():
    """s2s_rescore's values: the float64 sums of the bf16 products within float32
    rounding, equal to the PyTorch path's; an id outside the weight: refused (None)."""
    kernel = ranking._built_rescore()  # as built: not hidden by the check at loading
    if kernel is None:
        pytest.skip("no C compiler here: the PyTorch path is the only one")  # CI has gcc
    gen = torch.Generator().manual_seed(6)
    weight = torch.randn(300, 256, generator=gen).to(torch.bfloat16)
    features = torch.randn(17, 256, generator=gen).to(torch.bfloat16)
    ids = torch.randint(0, 300, (17, 5), generator=gen)
    got = ranking._rescore_call(kernel, weight, features, ids)
    want = (weight.double()[ids] * features.double().unsqueeze(1)).sum(-1)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)
    ids[16, 4] = 300
    assert ranking._rescore_call(kernel, weight, features, ids) is None
    assert not ranking._rescores(lambda *args: 0)  # a kernel that writes nothing: refused


@pytest.mark.parametrize("path", PATHS)
def test_a_shortlists_rows_are_rescored_and_mapped_to_their_tokens(path, monkeypatch):
    """A shortlisted step (its layer the rows of tokens 10, 20, 30, 40) decides the
    near tie above in float32 too, and hands back the tokens, not the columns."""
    use(path, monkeypatch)
    weight = torch.tensor([[1.0, 2**-10], [1.0, 3 * 2**-10], [0.5, 0.0], [0.25, 0.0]])
    head = packed_product(weight.to(torch.bfloat16), torch.zeros(4, dtype=torch.bfloat16))
    features = torch.ones(2, 2, dtype=torch.bfloat16)
    vocab = torch.tensor([10, 20, 30, 40])
    out = StepOutput(features=features, head=head, state=None, attention=None, vocab=vocab)
    assert ranking.step_argmax(out).tolist() == [20, 20]
    assert ranking.step_top_log_probs(out, 2)[1].tolist() == [[20, 10]] * 2


def test_float32_steps_and_layers_without_a_readable_weight_are_not_rescored():
    half = bf16_layer(torch.randn(50, 8), torch.zeros(50))
    features = torch.randn(3, 8)
    assert ranking.refinable(step(half, features.to(torch.bfloat16)))
    assert not ranking.refinable(step(nn.Linear(8, 50), features))
    assert not ranking.refinable(step(lambda x: half(x), features.to(torch.bfloat16)))


def test_bf16_decoding_rescores_and_fp32_does_not(monkeypatch):
    """A bf16 decoding copy's searches rescore (greedy with and without scores, picking
    the same tokens; beam search); the float32 model's never do."""
    from s2s.decoding.search import beam_search, greedy
    from s2s.decoding.translate import decoding_model
    from tests.test_decoding import sharp_model, sources

    calls, real = [], ranking.exact_logits
    monkeypatch.setattr(ranking, "exact_logits", lambda *a: calls.append(1) or real(*a))
    model = sharp_model(7)
    src, lengths = sources()
    for precision, rescored in (("fp32", False), ("bf16", True)):
        decoder = decoding_model(model, precision, torch.device("cpu"))
        found = []
        for scores in (True, False):
            calls.clear()
            limit = torch.full_like(lengths, 5)
            found.append(greedy(decoder, src, lengths, bos=2, eos=3, max_len=limit, scores=scores))
            assert bool(calls) == rescored
        assert found[0].tokens == found[1].tokens
        calls.clear()
        beam_search(decoder, src, lengths, bos=2, eos=3, beam=3, max_len=lengths + 3)
        assert bool(calls) == rescored
