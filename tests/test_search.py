import math
from dataclasses import dataclass

import pytest
import torch

from s2s.decoding.search import beam_search, greedy, length_penalty, max_lengths

# vocab: 0 pad, 1 unk, 2 bos, 3 eos, 4 a, 5 b
BOS, EOS, A, B = 2, 3, 4, 5


@dataclass
class Out:
    logits: torch.Tensor
    state: torch.Tensor
    attention: torch.Tensor | None = None


class TableStub:
    """Next-token probabilities depend only on the step: table[t] is (vocab,)."""

    def __init__(self, table):
        self.table = torch.log(torch.tensor(table, dtype=torch.float))

    def encode(self, src, lengths):
        return src

    def init_state(self, enc):
        return torch.zeros(enc.shape[0], dtype=torch.long)

    def step(self, prev, t, enc):
        rows = self.table[t.clamp(max=len(self.table) - 1)]
        return Out(logits=rows, state=t + 1)


class BigramStub:
    """Next-token probabilities depend only on the previous token: probs[prev] (vocab,).
    Scores of any sequence are easy to compute by hand."""

    def __init__(self, probs: dict[int, list[float]], vocab: int = 6):
        table = torch.full((vocab, vocab), 1e-9)
        for prev, row in probs.items():
            table[prev] = torch.tensor(row)
        self.logp = torch.log(table / table.sum(-1, keepdim=True))

    def encode(self, src, lengths):
        return src

    def init_state(self, enc):
        return torch.zeros(enc.shape[0])

    def step(self, prev, state, enc):
        att = torch.softmax(prev.float().unsqueeze(1) * torch.ones(1, enc.shape[1]), -1)
        return Out(logits=self.logp[prev], state=state + 1, attention=att)


def run_beam(stub, k, n=1, batch=1, limit=10, **options):
    src = torch.ones(batch, 3, dtype=torch.long)
    return beam_search(
        stub,
        src,
        torch.full((batch,), 3),
        bos=BOS,
        eos=EOS,
        beam=k,
        max_len=torch.full((batch,), limit),
        nbest=n,
        **options,
    )


def test_greedy_picks_argmax_until_eos_with_scores():
    stub = TableStub(
        [
            [0.0, 0.0, 0.0, 0.1, 0.6, 0.3],
            [0.0, 0.0, 0.0, 0.2, 0.3, 0.5],
            [0.0, 0.0, 0.0, 0.7, 0.2, 0.1],
            [0.0, 0.0, 0.0, 0.1, 0.8, 0.1],
        ]
    )
    src = torch.ones(2, 3, dtype=torch.long)
    hyp = greedy(stub, src, torch.tensor([3, 3]), bos=2, eos=3, max_len=torch.tensor([10, 10]))
    assert hyp.tokens == [[4, 5], [4, 5]]
    expected = float(torch.log(torch.tensor(0.6 * 0.5 * 0.7)))
    assert abs(hyp.scores[0] - expected) < 1e-5
    bare = greedy(
        stub, src, torch.tensor([3, 3]), bos=2, eos=3, max_len=torch.tensor([10, 10]), scores=False
    )
    assert bare.tokens == hyp.tokens and bare.scores is None


def test_greedy_respects_per_sentence_max_length():
    stub = TableStub([[0.0, 0.0, 0.0, 0.1, 0.9, 0.0]])  # never prefers EOS
    src = torch.ones(2, 3, dtype=torch.long)
    hyp = greedy(stub, src, torch.tensor([3, 1]), bos=2, eos=3, max_len=torch.tensor([4, 2]))
    assert hyp.tokens == [[4, 4, 4, 4], [4, 4]]


def test_greedy_drops_finished_sentences_from_the_batch():
    """Sentence 0 starts with A (then EOS), sentence 1 with B (then B forever, to its
    cap): the stepper sees two rows, then only the live one, and both results stand
    (rows leave one by one: row_step 1, the default)."""
    stub = BigramStub({A: [0, 0, 0, 1, 0, 0], B: [0, 0, 0, 0, 0, 1]})
    seen = []

    def step(prev, state, enc):
        seen.append(len(prev))
        out = BigramStub.step(stub, prev, state, enc)
        if (prev == BOS).all():  # the first token: A for sentence 0, B for sentence 1
            out.logits = torch.log(torch.eye(6)[[A, B]] + 1e-9)
        return out

    stub.step = step
    src = torch.ones(2, 3, dtype=torch.long)
    hyp = greedy(stub, src, torch.tensor([3, 3]), bos=BOS, eos=EOS, max_len=torch.tensor([6, 5]))
    assert hyp.tokens == [[A], [B, B, B, B, B]]
    assert seen == [2, 2, 1, 1, 1]


class CountdownStub:
    """Sentence i (its length in src[i, 0]) is A repeated that many times, then EOS; the
    state counts the steps of each row, so a row that moves keeps its own count. The
    chosen token has probability ``top``, the five others share the rest unevenly (no
    ties, which a search may break either way; EOS the least likely of them)."""

    def __init__(self, top: float = 1.0 - 5e-9):
        self.seen, self.top = [], top

    def encode(self, src, lengths):
        return src

    def init_state(self, enc):
        return torch.zeros(enc.shape[0], dtype=torch.long)

    def step(self, prev, state, enc):
        self.seen.append(len(prev))
        token = torch.where(state < enc[:, 0], A, EOS)
        chosen = torch.eye(6)[token]
        weights = torch.tensor([1.0, 1.1, 1.2, 0.5, 1.4, 1.5]) * (1 - chosen)
        probs = chosen * self.top + weights / weights.sum(-1, keepdim=True) * (1 - self.top)
        return Out(logits=torch.log(probs), state=state + 1)


ROWS_1 = [12, 11, 10, 9, 8, 7, 5, 4, 3, 2, 1]
ROWS_8 = [12] * 4 + [8] * 7


@pytest.mark.parametrize("row_step, rows", [(1, ROWS_1), (8, ROWS_8)])
def test_greedy_shrinks_the_batch_in_steps_of_rows(row_step, rows):
    """12 sentences of 0..11 tokens (shuffled; the 11 cut to 6 by its length limit), about
    one finishing per step: with row_step 8 the batch keeps 12 rows until 8 sentences
    are left, then 8 (finished rows decode on as filler, their tokens and scores
    ignored); every sentence's tokens and score are its own either way."""
    stub = CountdownStub(top=0.5)
    lengths = torch.tensor([5, 0, 11, 3, 8, 1, 10, 2, 7, 4, 9, 6])
    src = torch.stack([lengths, torch.ones(12, dtype=torch.long)], dim=1)
    limit = torch.where(lengths == 11, 6, 20)
    hyp = greedy(
        stub, src, torch.full((12,), 2), bos=BOS, eos=EOS, max_len=limit, row_step=row_step
    )
    expected = [[A] * min(int(n), 6 if n == 11 else 20) for n in lengths]
    assert hyp.tokens == expected
    # one log(0.5) per token, EOS included when produced
    counts = [len(t) + (0 if n == 11 else 1) for t, n in zip(expected, lengths)]
    assert hyp.scores == pytest.approx([c * math.log(0.5) for c in counts], abs=1e-5)
    assert stub.seen == rows


@pytest.mark.parametrize("row_step, rows", [(1, [12, 22, 20, 18]), (8, [12] + [24] * 3 + [16] * 8)])
def test_beam_search_shrinks_the_batch_in_steps_of_sentences(row_step, rows):
    """The same 12 sentences in beams of 2: the first step runs one row per sentence (one
    live hypothesis), then two; finished sentences leave row_step at a time (the rows
    of a kept one follow their parents), and each result is its own."""
    stub = CountdownStub()
    lengths = torch.tensor([5, 0, 11, 3, 8, 1, 10, 2, 7, 4, 9, 6])
    src = torch.stack([lengths, torch.ones(12, dtype=torch.long)], dim=1)
    nb = beam_search(
        stub,
        src,
        torch.full((12,), 2),
        bos=BOS,
        eos=EOS,
        beam=2,
        max_len=torch.full((12,), 20),
        row_step=row_step,
    )
    assert nb.best().tokens == [[A] * int(n) for n in lengths]
    assert stub.seen[: len(rows)] == rows


def test_max_lengths():
    assert max_lengths(torch.tensor([1, 10]), 1.5, 10).tolist() == [11, 25]


# From BOS: a 0.6, b 0.4. After a: EOS 0.4, a 0.3, b 0.3. After b: EOS 0.9, a/b 0.05.
# Greedy takes a, then EOS: 0.6 * 0.4 = 0.24. The best sequence is b EOS: 0.36.
TRAP = {BOS: [0, 0, 0, 0, 0.6, 0.4], A: [0, 0, 0, 0.4, 0.3, 0.3], B: [0, 0, 0, 0.9, 0.05, 0.05]}


def test_beam_finds_the_best_sequence_where_greedy_does_not():
    stub = BigramStub(TRAP)
    src = torch.ones(1, 3, dtype=torch.long)
    g = greedy(stub, src, torch.tensor([3]), bos=BOS, eos=EOS, max_len=torch.tensor([10]))
    assert g.tokens == [[A]]
    assert g.scores[0] == pytest.approx(math.log(0.24), abs=1e-5)
    nb = run_beam(stub, 2)
    assert nb.tokens == [[[B]]]
    assert nb.scores[0][0] == pytest.approx(math.log(0.36), abs=1e-5)


def test_nbest_holds_distinct_hypotheses_in_score_order():
    stub = BigramStub(TRAP)
    nb = run_beam(stub, 3, n=3)
    tokens, scores = nb.tokens[0], nb.scores[0]
    assert len(tokens) == 3 and len({tuple(t) for t in tokens}) == 3
    assert scores == sorted(scores, reverse=True)
    # b EOS (0.36), a EOS (0.24), then a b EOS: 0.6 * 0.3 * 0.9 = 0.162.
    assert tokens == [[B], [A], [A, B]]
    assert scores[2] == pytest.approx(math.log(0.162), abs=1e-5)


# From BOS: EOS 0.55 (the empty output), a 0.45. After a: EOS 0.9, a 0.1.
# log P([]) = log 0.55 over 1 token; log P([a]) = log 0.405 over 2 tokens.
SHORT = {BOS: [0, 0, 0, 0.55, 0.45, 0], A: [0, 0, 0, 0.9, 0.1, 0]}


@pytest.mark.parametrize(
    "options, winner",
    [
        ({}, []),  # -0.598 > -0.904
        ({"normalize": True}, [A]),  # -0.598 / 1 < -0.904 / 2 = -0.452
        ({"alpha": 1.0}, []),  # -0.904 / (7/6) = -0.775 < -0.598
        ({"alpha": 3.0}, [A]),  # -0.904 / (7/6)**3 = -0.569 > -0.598
    ],
)
def test_length_penalty_changes_the_winner_as_computed(options, winner):
    nb = run_beam(BigramStub(SHORT), 2, n=2, **options)
    assert nb.tokens[0][0] == winner
    logp = {(): math.log(0.55), (A,): math.log(0.405)}
    for tokens, value in zip(nb.tokens[0], nb.scores[0]):
        n = len(tokens) + 1
        divisor = n if options.get("normalize") else ((5 + n) / 6) ** options.get("alpha", 0.0)
        assert value == pytest.approx(logp[tuple(tokens)] / divisor, abs=1e-5)


def test_length_penalty_formula():
    lengths = torch.tensor([1, 4])
    assert length_penalty(lengths, 0.0, False).tolist() == [1.0, 1.0]
    assert length_penalty(lengths, 0.0, True).tolist() == [1.0, 4.0]
    assert length_penalty(lengths, 0.6, False)[1].item() == pytest.approx((9 / 6) ** 0.6)


def test_finished_hypotheses_are_kept_while_others_go_on():
    # The empty output finishes at step 0 and stays best although a live
    # hypothesis (a a ...) keeps a high per-step probability for a while.
    probs = {
        BOS: [0, 0, 0, 0.5, 0.5, 0],
        A: [0, 0, 0, 0.001, 0.9, 0.099],
        B: [0, 0, 0, 0.001, 0.5, 0.499],
    }
    nb = run_beam(BigramStub(probs), 2, n=2, limit=6)
    assert nb.tokens[0][0] == []
    assert nb.scores[0][0] == pytest.approx(math.log(0.5), abs=1e-5)
    # The other finished hypothesis is the a-run cut at the length limit: 0.5 * 0.9**5.
    assert nb.tokens[0][1] == [A] * 6
    assert nb.scores[0][1] == pytest.approx(math.log(0.5 * 0.9**5), abs=1e-5)


@pytest.mark.parametrize(
    "min_len, best",
    [(0, []), (1, [A]), (2, [A, A]), (3, [A, A, A])],
)
def test_min_length_forbids_eos_before_that_many_tokens(min_len, best):
    # SHORT prefers stopping at once; with EOS forbidden for min_len steps the best
    # output holds exactly min_len tokens (a, then a again: b is impossible)
    nb = run_beam(BigramStub(SHORT), 2, min_len=min_len)
    assert nb.tokens[0][0] == best
    p_eos = {0: 0.55, 1: 0.45 * 0.9, 2: 0.45 * 0.1 * 0.9, 3: 0.45 * 0.1 * 0.1 * 0.9}
    assert nb.scores[0][0] == pytest.approx(math.log(p_eos[min_len]), abs=1e-5)


def test_min_length_holds_without_a_beam_too():
    """--min-length without --beam went to greedy search, which ignored it."""
    from s2s.decoding.translate import _search

    src, lengths, limit = (
        torch.ones(1, 3, dtype=torch.long),
        torch.full((1,), 3),
        torch.tensor([10]),
    )
    options = dict(beam=None, nbest=1, alpha=0.0, normalize=False, alignments=False)
    options.update(scores=True, row_step=1)
    best = [
        _search(BigramStub(SHORT), src, lengths, limit, min_len=n, **options)[0][0][0]
        for n in (2, 0)
    ]
    assert best == [[A, A], []]


def test_beam_one_equals_greedy_on_the_stubs():
    for probs in (TRAP, SHORT):
        stub = BigramStub(probs)
        src = torch.ones(3, 3, dtype=torch.long)
        limit = torch.tensor([10] * 3)
        g = greedy(stub, src, torch.tensor([3] * 3), bos=BOS, eos=EOS, max_len=limit)
        nb = run_beam(stub, 1, batch=3)
        assert [t[0] for t in nb.tokens] == g.tokens
        assert [s[0] for s in nb.scores] == pytest.approx(g.scores, abs=1e-6)


def test_beam_returns_one_alignment_row_per_output_token():
    nb = run_beam(BigramStub(TRAP), 2, attention=True)
    (att,) = nb.attention[0]
    assert att.shape == (len(nb.tokens[0][0]) + 1, 3)  # tokens + EOS, src_len
    assert torch.allclose(att.sum(-1), torch.ones(att.shape[0]))


def test_nbest_larger_than_beam_is_refused():
    with pytest.raises(ValueError, match="nbest"):
        run_beam(BigramStub(TRAP), 2, n=3)


def test_only_the_k_best_candidates_may_finish():
    """An EOS ranked below the beam must not finish: with K = 2, the empty output
    (EOS third at step 0, 0.25) and 'a' (EOS third at step 1, 0.18) would fill the
    finished pool and stop the search before 'b c' (0.35 * 0.9 * 0.95 = 0.299) ends."""
    C = 1  # a third real token for the stub
    probs = {
        BOS: [0, 0, 0, 0.25, 0.4, 0.35],
        A: [0, 0, 0, 0.45, 0.55, 0],
        B: [0, 0.9, 0, 0.1, 0, 0],
        C: [0, 0.05, 0, 0.95, 0, 0],
    }
    nb = run_beam(BigramStub(probs), 2)
    assert nb.tokens[0][0] == [B, C]
    assert nb.scores[0][0] == pytest.approx(math.log(0.35 * 0.9 * 0.95), abs=1e-5)


class RandomStub:
    """Per sentence and step, random next-token logits over 16 tokens that depend on the
    previous token (no two sequences tie); EOS a little less likely, so that hypotheses
    run a few steps. The state, (sentence, step) per row, follows reordered rows."""

    def __init__(self, sentences: int, vocab: int = 16, steps: int = 10, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.table = torch.randn(sentences, steps, vocab, vocab, generator=gen) * 2
        self.table[..., EOS] -= 1.5

    def encode(self, src, lengths):
        return src

    def init_state(self, enc):
        return torch.stack(
            [torch.arange(enc.shape[0]), torch.zeros(enc.shape[0], dtype=torch.long)], 1
        )

    def step(self, prev, state, enc):
        logits = self.table[state[:, 0], state[:, 1], prev]
        return Out(logits=logits, state=state + torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "k, alpha, min_len, vocab",
    [(3, 0.0, 0, 16), (4, 1.0, 2, 16), (2, 0.6, 0, 16), (5, 0.0, 3, 300)],
)
def test_ranking_each_hypothesis_k_plus_1_best_tokens_equals_ranking_all(
    monkeypatch, k, alpha, min_len, vocab
):
    """The beam search ranks only each live hypothesis' K + 1 best tokens: they hold its
    K best that are not EOS, and any EOS among a sentence's K best candidates, so the
    n-best lists and scores equal those of a search that ranks every candidate
    (top_log_probs over the whole vocabulary), on random stubs with 16 tokens (> 2K) and
    with 300 (the top-k by segments of 64 columns, and a shorter last one)."""
    from s2s.decoding import search

    def run():
        return beam_search(
            RandomStub(6, vocab=vocab),
            torch.ones(6, 3, dtype=torch.long),
            torch.full((6,), 3),
            bos=BOS,
            eos=EOS,
            beam=k,
            max_len=torch.full((6,), 9),
            nbest=k,
            alpha=alpha,
            min_len=min_len,
        )

    fast = run()
    plain = search.step_top_log_probs
    monkeypatch.setattr(
        search, "step_top_log_probs", lambda out, _k, **o: plain(out, out.logits.shape[-1], **o)
    )
    full = run()
    assert fast.tokens == full.tokens
    for mine, theirs in zip(fast.scores, full.scores):
        assert mine == pytest.approx(theirs, abs=1e-6)
    assert any(len(t) > 2 for nbest in full.tokens for t in nbest)  # not all one token long


def test_a_steps_output_layer_in_blocks_of_rows_equals_the_whole(monkeypatch):
    """A step that hands search its output layer's input and the layer (float32, CPU)
    is ranked a block of rows at a time: each row's k best log-probabilities and ids,
    and its argmax, as from the whole logits; a blocked token never among them."""
    from s2s.decoding import ranking
    from s2s.nn.decoder import StepOutput

    monkeypatch.setattr(ranking, "HEAD_ROWS", 4)
    gen = torch.Generator().manual_seed(2)
    head = torch.nn.Linear(8, 300)
    out = StepOutput(
        features=torch.randn(11, 8, generator=gen), head=head, state=None, attention=None
    )
    assert ranking._head_blocks(out) is not None  # the block path runs here
    expect_values, expect_ids = torch.log_softmax(head(out.features), -1).topk(6, -1)
    values, ids = ranking.step_top_log_probs(out, 6)
    assert torch.equal(ids, expect_ids) and torch.allclose(values, expect_values)
    assert torch.equal(ranking.step_argmax(out), expect_ids[:, 0])
    values, ids = ranking.step_top_log_probs(out, 6, blocked=int(expect_ids[10, 0]))
    assert int(expect_ids[10, 0]) not in ids[10].tolist()
    assert torch.allclose(values[10, 0], expect_values[10, 1])


def test_top_log_probs_in_blocks_equals_the_whole(monkeypatch):
    """Over more rows than a block: log-softmax's k best per row, values and ids, as over
    the whole at once, in float32 from bf16 logits; a blocked token never among them."""
    from s2s.decoding import ranking

    monkeypatch.setattr(ranking, "ROW_BLOCK", 4)
    logits = torch.randn(11, 30, generator=torch.Generator().manual_seed(1)).bfloat16()
    values, ids = ranking.top_log_probs(logits, 5)
    expect_values, expect_ids = torch.log_softmax(logits.float(), -1).topk(5, -1)
    assert values.dtype == torch.float32
    assert torch.equal(ids, expect_ids) and torch.allclose(values, expect_values)
    values, ids = ranking.top_log_probs(logits, 5, blocked=int(expect_ids[0, 0]))
    assert int(expect_ids[0, 0]) not in ids[0].tolist()
    assert torch.allclose(values[0, 0], expect_values[0, 1])


@pytest.mark.parametrize("columns, k", [(8000, 10), (8000, 1), (1000 + 37, 6), (100, 5)])
def test_fast_topk_equals_topk(columns, k):
    """The segment-wise top-k equals torch.topk: values and (without ties) ids, with a
    last, shorter segment and rows where -inf fills the best segments."""
    from s2s.decoding.ranking import fast_topk

    gen = torch.Generator().manual_seed(columns + k)
    x = torch.randn(37, columns, generator=gen)
    x[0, :200] = float("-inf")
    x[1, -30:] += 10.0  # the best values in the last columns (a shorter segment at 1,037)
    values, ids = fast_topk(x, k)
    expect_values, expect_ids = x.topk(k, dim=-1)
    assert torch.equal(values, expect_values) and torch.equal(ids, expect_ids)
    bf16 = torch.cat([x] * 4).bfloat16()  # more rows than one block of the float copy
    values, ids = fast_topk(bf16, k)
    assert values.dtype == torch.bfloat16
    assert torch.equal(values, bf16.topk(k, dim=-1).values)
    assert torch.equal(bf16.gather(1, ids), values)


@pytest.mark.parametrize("k", [4, 7])
def test_a_beam_wider_than_the_vocabulary_finds_the_best_sequence(k):
    """Beams of 4 (2K = 8 candidates from one hypothesis of 6 tokens at the first step)
    and of 7 (more than the vocabulary): the best sequence as with beams of 2."""
    nb = run_beam(BigramStub(TRAP), k, n=2)
    assert nb.tokens[0][0] == [B]
    assert nb.scores[0][0] == pytest.approx(math.log(0.36), abs=1e-5)
    assert nb.scores[0][1] < nb.scores[0][0]
