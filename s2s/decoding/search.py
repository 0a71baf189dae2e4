"""Search: decoding against a small "stepper" interface, apart from the model.

A stepper has ``encode(src, src_lengths) -> enc``, ``init_state(enc) -> state`` and
``step(prev, state, enc) -> StepOutput`` with ``logits`` (batch, vocab), the next
``state`` and ``attention`` (and, as the model's own steps, ``features`` and ``head``:
the output layer's input and the layer, run by ``s2s.decoding.ranking`` a block of rows
at a time). A stepper with ``grouped_encoder`` True takes, in beam
search, one row of ``enc`` for the K consecutive rows of a sentence (no K copies).
Any object with these methods can be searched, which is how the search functions are
tested against stub models with hand-checkable scores.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from s2s.decoding.ranking import step_argmax, step_top_log_probs


@dataclass
class Hypotheses:
    tokens: list[list[int]]  # per sentence, without BOS/EOS
    scores: list[float] | None  # sum of log-probabilities, EOS included when produced


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


ROW_STEP = 8  # bf16 decoding: batches shrink in steps of this many sentences


def bucketed(n: int, rows: int, step: int) -> int:
    """The row count a batch with ``n`` unfinished sentences shrinks to: ``n`` rounded up
    to a multiple of ``step``, never above today's ``rows``. With ROW_STEP, a few shapes
    per batch, not one per step: a bf16 product builds (and caches) a oneDNN kernel per
    shape, a float32 one does not (there step 1 is faster: docs/speed.md)."""
    return min(rows, -(-n // step) * step)


@torch.inference_mode()
def greedy(
    stepper,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    *,
    bos: int,
    eos: int,
    max_len: torch.Tensor,
    scores: bool = True,
    row_step: int = 1,
) -> Hypotheses:
    """Batched greedy decoding: the argmax token at each step, until EOS or max_len.
    Finished sentences leave the batch (their rows of the state and of the encoder
    output are dropped), so the batch never decodes for its longest member alone; with
    ``row_step`` > 1 they leave that many at a time, so the batch runs in a few shapes
    (``bucketed``): rows of finished sentences kept until then decode on, ignored.
    ``scores=False`` skips the log-probabilities (a log-sum-exp over the vocabulary
    per token, about 5% of the search's time, docs/speed.md): ``Hypotheses.scores`` is None."""
    enc = stepper.encode(src, src_lengths)
    state = stepper.init_state(enc)
    batch, device = src.shape[0], src.device
    limit = max_len.to(device)
    steps = int(limit.max())
    table = torch.full((batch, steps), eos, dtype=torch.long, device=device)
    total = torch.zeros(batch, device=device)
    rows = torch.arange(batch, device=device)  # the sentence of each row of the batch
    live = torch.ones(batch, dtype=torch.bool, device=device)  # its sentence unfinished
    prev = torch.full((batch,), bos, dtype=torch.long, device=device)
    for t in range(steps):
        out = stepper.step(prev, state, enc)
        at = rows[live]
        if scores:
            top, token = step_top_log_probs(out, 1)
            top, token = top.squeeze(1), token.squeeze(1)
            total[at] += top[live]
        else:  # log-softmax's argmax, without writing it out
            token = step_argmax(out)
        table[at, t] = token[live]
        live = live & (token != eos) & (t + 1 < limit[rows])
        left = int(live.sum())
        if left == 0:
            break
        prev, state = token, out.state
        size = bucketed(left, rows.shape[0], row_step)
        if size < rows.shape[0]:  # unfinished rows first, then finished ones as filler
            keep = torch.argsort((~live).to(torch.uint8), stable=True)[:size]
            rows, prev, live = rows[keep], prev[keep], live[keep]
            state, enc = reorder(state, keep), reorder(enc, keep)
    tokens = []
    for row in table.tolist():
        tokens.append(row[: row.index(eos)] if eos in row else row)
    return Hypotheses(tokens=tokens, scores=total.tolist() if scores else None)


@torch.inference_mode()
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
    row_step: int = 1,
) -> NBest:
    """Batched beam search: sentences x beams are one batch of rows for the stepper.

    Each step extends every live hypothesis by its K + 1 best tokens and keeps the 2K
    best of these candidates per sentence (K = beam), as over every token (tied scores
    aside). Candidates ending in EOS among the first K are finished (scored with the
    length penalty); the best K others live on. A sentence is done when it has K finished
    hypotheses or when no live one can still beat its N-th best finished one (N =
    nbest), and leaves the batch (``row_step`` sentences at a time, as in greedy
    search). With K = 1 this is exactly greedy search.
    """
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest ({nbest}) must be between 1 and the beam size ({beam})")
    B, K = src.shape[0], beam
    grouped = getattr(stepper, "grouped_encoder", False)
    enc, state, beams = _start(stepper, src, src_lengths, K)
    penalty = functools.partial(length_penalty, alpha=alpha, normalize=normalize)
    limit = max_len.to(src.device)
    prev = torch.full((B,), bos, dtype=torch.long, device=src.device)
    results: list = [None] * B
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)  # kept on as filler
    for t in range(int(limit.max())):
        out = stepper.step(prev, state, enc)
        # Each hypothesis' K + 1 best tokens are enough: they hold its K best that are not
        # EOS, and an EOS among a sentence's K best candidates is among its K best tokens.
        logp = step_top_log_probs(out, K + 1, blocked=eos if t < min_len else None)
        at_limit = (t + 1 >= limit[beams.sent]).unsqueeze(1)
        step_att = out.attention if attention else None
        width = beams.alive_logp.shape[1]  # rows per sentence: 1 at the first step, then K
        parent = _advance(beams, K, logp, step_att, at_limit, t + 1, eos, penalty)
        done = _done(beams, penalty(limit[beams.sent]), at_limit, nbest)
        for i in (done & ~finished).nonzero().flatten().tolist():
            results[int(beams.sent[i])] = beams.collect(i, nbest, eos)
        finished |= done
        if bool(finished.all()):
            break
        state, enc, finished = _drop_done(
            beams, finished, (parent, width), out.state, enc, row_step, grouped
        )
        prev = beams.alive_seq[:, :, -1].reshape(-1)
    return NBest(
        tokens=[r[0] for r in results],
        scores=[r[1] for r in results],
        attention=[r[2] for r in results] if attention else None,
    )


@dataclass
class _Beams:
    """Beam search's hypotheses for each active sentence (n of them, K hypotheses each,
    best first; before the first step one live, empty hypothesis: W = 1 below, else K).
    Attention, kept only when asked for, is (n, W, length, src_len)."""

    sent: torch.Tensor  # (n,) original index of each active sentence
    alive_logp: torch.Tensor  # (n, W) log-probabilities of the live hypotheses
    alive_seq: torch.Tensor  # (n, W, length) their tokens
    fin_score: torch.Tensor  # (n, K) finished ones' scores (log-probability / penalty)
    fin_seq: torch.Tensor  # (n, K, length) their tokens, padded with EOS
    alive_att: torch.Tensor | None = None
    fin_att: torch.Tensor | None = None

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the sentences ``keep`` (indices into the active ones)."""
        for name in ("sent", "alive_logp", "alive_seq", "fin_seq", "fin_score"):
            setattr(self, name, getattr(self, name).index_select(0, keep))
        if self.alive_att is not None:
            self.alive_att = self.alive_att.index_select(0, keep)
            self.fin_att = self.fin_att.index_select(0, keep)

    def collect(self, i: int, nbest: int, eos: int):
        """Sentence i's up to N best finished hypotheses: tokens, scores, attention."""
        return _collect(self.fin_seq[i], self.fin_score[i], self.fin_att, i, nbest, eos)


def _start(stepper, src: torch.Tensor, src_lengths: torch.Tensor, K: int):
    """The encoder output, the decoder state and the beams, with one row (one live,
    empty hypothesis) per sentence: the first step extends it into K."""
    B, device = src.shape[0], src.device
    enc = stepper.encode(src, src_lengths)
    beams = _Beams(
        sent=torch.arange(B, device=device),
        alive_logp=torch.zeros(B, 1, device=device),
        alive_seq=torch.empty(B, 1, 0, dtype=torch.long, device=device),
        fin_score=torch.full((B, K), float("-inf"), device=device),
        fin_seq=torch.empty(B, K, 0, dtype=torch.long, device=device),
    )
    return enc, stepper.init_state(enc), beams


def _advance(beams: _Beams, K: int, logp, attention, at_limit, length: int, eos: int, penalty):
    """One search step on ``beams`` (beam size K): ``logp``, each live hypothesis' best
    next tokens (log-probabilities and ids, (n * W, J) each, W live hypotheses per
    sentence, J >= K + 1 or the whole vocabulary), extends every live hypothesis; returns
    for each of the K new live ones the index of the one it extends."""
    n, width = beams.alive_logp.shape
    values, ids = logp
    J = values.shape[-1]
    cand = (beams.alive_logp.unsqueeze(-1) + values.view(n, width, J)).view(n, width * J)
    ids = ids.view(n, width * J)
    if width * J < 2 * K:  # fewer than 2K: the first step's one hypothesis, a tiny vocabulary
        cand = F.pad(cand, (0, 2 * K - width * J), value=float("-inf"))
        ids = F.pad(ids, (0, 2 * K - width * J), value=eos)
    top, idx = cand.topk(2 * K, dim=1)  # (n, 2K), best first
    origin = torch.div(idx, J, rounding_mode="floor").clamp(max=width - 1)  # which one
    token = ids.gather(1, idx)
    seq = torch.cat([_take(beams.alive_seq, origin), token.unsqueeze(-1)], dim=-1)
    step_att = None
    if attention is not None:
        att = _take(attention.view(n, width, 1, -1), origin)  # (n, 2K, 1, src_len)
        earlier = beams.alive_att
        step_att = att if earlier is None else torch.cat([_take(earlier, origin), att], 2)
    rank = torch.arange(top.shape[1], device=top.device).unsqueeze(0)
    ends = ((token == eos) & (rank < K)) | at_limit
    normed = top / penalty(torch.full_like(top, length))
    _finish(beams, normed.masked_fill(~ends | torch.isinf(top), float("-inf")), seq, step_att, eos)
    # Live: the K best candidates that did not end (EOS never lives on).
    beams.alive_logp, pick = top.masked_fill(ends | (token == eos), float("-inf")).topk(K, dim=1)
    beams.alive_seq = _take(seq, pick)
    if step_att is not None:
        beams.alive_att = _take(step_att, pick)
    return origin.gather(1, pick)  # (n, K)


def _finish(beams: _Beams, normed, seq, step_att, eos: int) -> None:
    """Merge a step's ended candidates (scores ``normed``, -inf for those that did not
    end) into each sentence's K best finished hypotheses."""
    n, K = beams.fin_score.shape
    pad = torch.full((n, K, 1), eos, dtype=torch.long, device=seq.device)
    pool_seq = torch.cat([torch.cat([beams.fin_seq, pad], dim=-1), seq], dim=1)
    beams.fin_score, pick = torch.cat([beams.fin_score, normed], dim=1).topk(K, dim=1)
    beams.fin_seq = _take(pool_seq, pick)
    if step_att is not None:
        fin_att = beams.fin_att
        padded = (
            torch.cat([fin_att, torch.zeros_like(fin_att[:, :, :1])], dim=2)
            if fin_att is not None
            else torch.zeros_like(step_att[:, :K])
        )
        beams.fin_att = _take(torch.cat([padded, step_att], dim=1), pick)


def _done(beams: _Beams, limit_penalty: torch.Tensor, at_limit, nbest: int) -> torch.Tensor:
    """Sentences whose search is over: K finished, the length limit reached, or the best
    live one cannot beat the N-th finished one (its log-probability only falls; the
    penalty is at most ``limit_penalty``, that of the length limit)."""
    fin_score, K = beams.fin_score, beams.fin_score.shape[1]
    bound = beams.alive_logp[:, 0] / limit_penalty
    done = (fin_score[:, K - 1] > float("-inf")) | (fin_score[:, nbest - 1] >= bound)
    done |= at_limit.squeeze(1)
    return done


def _drop_done(beams: _Beams, finished, parents, state, enc, row_step: int, grouped: bool):
    """The decoder state (each live hypothesis takes its parent's row) and encoder
    output (one row per sentence if ``grouped``, else K) of the sentences kept, and
    which of them are finished. ``parents``: (n, K) the parent of each new hypothesis
    among the ``width`` rows its sentence had in this step. Finished sentences leave
    the batch ``row_step`` at a time (``bucketed``); until then they decode on as
    filler, their results already taken."""
    parent, width = parents
    n, K = parent.shape
    device = parent.device
    size = bucketed(int((~finished).sum()), n, row_step)
    keep = torch.arange(n, device=device)
    if size < n:  # unfinished sentences first, then finished ones as filler
        keep = torch.argsort(finished.to(torch.uint8), stable=True)[:size]
    beam_rows = (keep.unsqueeze(1) * width + parent.index_select(0, keep)).view(-1)
    state = reorder(state, beam_rows)
    if not grouped and (size < n or width < K):  # K copies of each sentence's rows
        enc = reorder(enc, (keep * width).repeat_interleave(K))
    elif size < n:
        enc = reorder(enc, keep)
    if size < n:
        beams.select(keep)
        finished = finished[keep]
    return state, enc, finished


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
            alignments.append(att[i, j, : cut + 1 if cut < len(row) else cut].float().cpu())
    return tokens, values, alignments
