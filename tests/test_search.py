from dataclasses import dataclass

import torch

from s2s.search import greedy, max_lengths


@dataclass
class Out:
    logits: torch.Tensor
    state: torch.Tensor
    attention: None = None


class TableStub:
    """Next-token log-probs depend only on the step: table[t] is (vocab,)."""

    def __init__(self, table):
        self.table = torch.log(torch.tensor(table, dtype=torch.float))

    def encode(self, src, lengths):
        return src

    def init_state(self, enc):
        return torch.zeros(enc.shape[0], dtype=torch.long)

    def step(self, prev, t, enc):
        row = self.table[min(int(t[0]), len(self.table) - 1)]
        return Out(logits=row.expand(prev.shape[0], -1), state=t + 1)


def test_greedy_picks_argmax_until_eos_with_scores():
    # vocab: 0 pad, 1 unk, 2 bos, 3 eos, 4 a, 5 b
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


def test_greedy_respects_per_sentence_max_length():
    stub = TableStub([[0.0, 0.0, 0.0, 0.1, 0.9, 0.0]])  # never prefers EOS
    src = torch.ones(2, 3, dtype=torch.long)
    hyp = greedy(stub, src, torch.tensor([3, 1]), bos=2, eos=3, max_len=torch.tensor([4, 2]))
    assert hyp.tokens == [[4, 4, 4, 4], [4, 4]]


def test_max_lengths():
    assert max_lengths(torch.tensor([1, 10]), 1.5, 10).tolist() == [11, 25]
