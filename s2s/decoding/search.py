"""Search (level 4): decoding against a small "stepper" interface, apart from the model.

A stepper has ``encode(src, src_lengths) -> enc``, ``init_state(enc) -> state`` and
``step(prev, state, enc) -> StepOutput`` with ``logits`` (batch, vocab), the next
``state`` and ``attention``. Any object with these methods can be searched, which is
how the search functions are tested against stub models with hand-checkable scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Hypotheses:
    tokens: list[list[int]]  # per sentence, without BOS/EOS
    scores: list[float]  # sum of log-probabilities, EOS included when produced


@dataclass
class NBest:
    """Per sentence, up to N hypotheses, best first."""

    tokens: list[list[list[int]]]  # without BOS/EOS
    scores: list[list[float]]  # search scores: log-probability / length penalty
    attention: list[list[torch.Tensor]] | None = field(default=None)  # (tgt_len, src_len)

    def best(self) -> Hypotheses:
        return Hypotheses(tokens=[t[0] for t in self.tokens], scores=[s[0] for s in self.scores])


def reorder(obj, index: torch.Tensor):
    """Select batch rows of a search state: objects with ``reorder(index)`` (encoder
    outputs, decoder states), tensors (rows = first dimension), tuples and lists."""
    if hasattr(obj, "reorder"):
        return obj.reorder(index)
    if isinstance(obj, torch.Tensor):
        return obj.index_select(0, index)
    if isinstance(obj, (tuple, list)):
        return type(obj)(reorder(o, index) for o in obj)
    raise TypeError(f"cannot reorder a search state of type {type(obj).__name__}")


def length_penalty(lengths: torch.Tensor, alpha: float, normalize: bool) -> torch.Tensor:
    """Divisor of a hypothesis' log-probability. ``normalize``: its length (average
    log-probability per token); else GNMT's ((5 + |Y|) / 6) ** alpha (Wu et al. 2016,
    eq. 14); alpha = 0 gives 1 (plain log-probability). Lengths count the EOS."""
    lengths = lengths.float()
    if normalize:
        return lengths
    return ((5.0 + lengths) / 6.0) ** alpha


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


@torch.no_grad()
def beam_search(
    stepper,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    *,
    bos: int,
    eos: int,
    beam: int,
    max_len: torch.Tensor,
    min_len: int = 0,
    alpha: float = 0.0,
    normalize: bool = False,
    nbest: int = 1,
    attention: bool = False,
) -> NBest:
    """Batched beam search: sentences x beams are one batch of rows for the stepper.

    Each step extends every live hypothesis by every token and keeps the 2K best
    candidates per sentence (K = beam). Candidates ending in EOS among the first K
    are finished (scored with the length penalty); the best K others live on. A
    sentence is done when it has K finished hypotheses or when no live one can
    still beat its N-th best finished one (N = nbest), and leaves the batch. With
    K = 1 this is exactly greedy search.
    """
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest ({nbest}) must be between 1 and the beam size ({beam})")
    device = src.device
    B, K = src.shape[0], beam
    enc = stepper.encode(src, src_lengths)
    rows = torch.arange(B, device=device).repeat_interleave(K)  # sentence of each row
    state = reorder(stepper.init_state(enc), rows)
    enc = reorder(enc, rows)
    limit = max_len.to(device)
    sent = torch.arange(B, device=device)  # original index of each active sentence
    alive_logp = torch.full((B, K), float("-inf"), device=device)
    alive_logp[:, 0] = 0.0  # one live hypothesis at the start, not K copies
    alive_seq = torch.empty(B, K, 0, dtype=torch.long, device=device)
    fin_seq = torch.empty(B, K, 0, dtype=torch.long, device=device)
    fin_score = torch.full((B, K), float("-inf"), device=device)
    alive_att = fin_att = None
    prev = torch.full((B * K,), bos, dtype=torch.long, device=device)
    results: list = [None] * B
    for t in range(int(limit.max())):
        n = sent.shape[0]
        out = stepper.step(prev, state, enc)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        V = logp.shape[-1]
        if t < min_len:
            logp[:, eos] = float("-inf")
        cand = (alive_logp.unsqueeze(-1) + logp.view(n, K, V)).view(n, K * V)
        top, idx = cand.topk(min(2 * K, K * V), dim=1)  # (n, 2K), best first
        origin = torch.div(idx, V, rounding_mode="floor")  # which live hypothesis
        token = idx % V
        seq = torch.cat([_take(alive_seq, origin), token.unsqueeze(-1)], dim=-1)
        if attention:
            att = _take(out.attention.view(n, K, 1, -1), origin)  # (n, 2K, 1, src_len)
            step_att = att if alive_att is None else torch.cat([_take(alive_att, origin), att], 2)
        rank = torch.arange(top.shape[1], device=device).unsqueeze(0)
        at_limit = (t + 1 >= limit[sent]).unsqueeze(1)
        ends = ((token == eos) & (rank < K)) | at_limit
        # Finished: merge this step's ended candidates into the K best so far.
        lengths = torch.full_like(top, t + 1)
        normed = top / length_penalty(lengths, alpha, normalize)
        normed = normed.masked_fill(~ends | torch.isinf(top), float("-inf"))
        pad = torch.full((n, K, 1), eos, dtype=torch.long, device=device)
        pool_seq = torch.cat([torch.cat([fin_seq, pad], dim=-1), seq], dim=1)
        fin_score, pick = torch.cat([fin_score, normed], dim=1).topk(K, dim=1)
        fin_seq = _take(pool_seq, pick)
        if attention:
            padded = (
                torch.cat([fin_att, torch.zeros_like(fin_att[:, :, :1])], dim=2)
                if fin_att is not None
                else torch.zeros_like(step_att[:, :K])
            )
            fin_att = _take(torch.cat([padded, step_att], dim=1), pick)
        # Live: the K best candidates that did not end (EOS never lives on).
        alive_logp, pick = top.masked_fill(ends | (token == eos), float("-inf")).topk(K, dim=1)
        alive_seq = _take(seq, pick)
        if attention:
            alive_att = _take(step_att, pick)
        parent = origin.gather(1, pick)  # (n, K)
        # Done: K finished, or the best live one cannot beat the N-th finished one
        # (its log-probability only falls; the penalty is at most that of the limit).
        bound = alive_logp[:, 0] / length_penalty(limit[sent], alpha, normalize)
        done = (fin_score[:, K - 1] > float("-inf")) | (fin_score[:, nbest - 1] >= bound)
        done |= at_limit.squeeze(1)
        for i in done.nonzero().flatten().tolist():
            results[int(sent[i])] = _collect(fin_seq[i], fin_score[i], fin_att, i, nbest, eos)
        if bool(done.all()):
            break
        keep = (~done).nonzero().flatten()
        beam_rows = (keep.unsqueeze(1) * K + parent.index_select(0, keep)).view(-1)
        state = reorder(out.state, beam_rows)
        if keep.shape[0] < n:
            base = (keep.unsqueeze(1) * K + torch.arange(K, device=device)).view(-1)
            enc = reorder(enc, base)
            sent = sent.index_select(0, keep)
            alive_logp, alive_seq, fin_seq, fin_score = (
                x.index_select(0, keep) for x in (alive_logp, alive_seq, fin_seq, fin_score)
            )
            if attention:
                alive_att, fin_att = alive_att.index_select(0, keep), fin_att.index_select(0, keep)
        prev = alive_seq[:, :, -1].reshape(-1)
    return NBest(
        tokens=[r[0] for r in results],
        scores=[r[1] for r in results],
        attention=[r[2] for r in results] if attention else None,
    )


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (n, M, ...) ; index: (n, J) -> (n, J, ...): per-sentence row selection."""
    shape = index.shape + x.shape[2:]
    expanded = index.view(index.shape + (1,) * (x.dim() - 2)).expand(shape)
    return x.gather(1, expanded)


def _collect(seqs, scores, att, i, nbest, eos):
    tokens, values, alignments = [], [], []
    for j in range(nbest):
        if scores[j] == float("-inf"):
            break
        row = seqs[j].tolist()
        cut = row.index(eos) if eos in row else len(row)
        tokens.append(row[:cut])
        values.append(float(scores[j]))
        if att is not None:
            alignments.append(att[i, j, : cut + 1 if cut < len(row) else cut].cpu())
    return tokens, values, alignments
