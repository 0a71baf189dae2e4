"""Search (level 4): decoding against a small "stepper" interface, apart from the model.

A stepper has ``encode(src, src_lengths) -> enc``, ``init_state(enc) -> state`` and
``step(prev, state, enc) -> StepOutput`` with ``logits`` (batch, vocab), the next
``state`` and ``attention``. Any object with these methods can be searched, which is
how the search functions are tested against stub models with hand-checkable scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Hypotheses:
    tokens: list[list[int]]  # per sentence, without BOS/EOS
    scores: list[float]  # sum of log-probabilities, EOS included when produced


def max_lengths(src_lengths: torch.Tensor, ratio: float, extra: int = 10) -> torch.Tensor:
    """Per-sentence cap on output length: ratio * source length + extra."""
    return (src_lengths.float() * ratio).long() + extra


@torch.no_grad()
def greedy(
    stepper,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    *,
    bos: int,
    eos: int,
    max_len: torch.Tensor,
) -> Hypotheses:
    """Batched greedy decoding: the argmax token at each step, until EOS or max_len."""
    enc = stepper.encode(src, src_lengths)
    state = stepper.init_state(enc)
    batch = src.shape[0]
    prev = torch.full((batch,), bos, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    scores = torch.zeros(batch, device=src.device)
    steps = []
    limit = max_len.to(src.device)
    for t in range(int(limit.max())):
        out = stepper.step(prev, state, enc)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        best, token = logp.max(dim=-1)
        scores += best.masked_fill(finished, 0.0)
        token = token.masked_fill(finished, eos)
        steps.append(token)
        finished |= (token == eos) | (t + 1 >= limit)
        if bool(finished.all()):
            break
        prev, state = token, out.state
    table = torch.stack(steps, dim=1).tolist()  # (batch, steps)
    tokens = []
    for row in table:
        tokens.append(row[: row.index(eos)] if eos in row else row)
    return Hypotheses(tokens=tokens, scores=scores.tolist())
