"""Translation of raw text: tokenize, batch by length, search, detokenize.

Output order equals input order, one result per line; an empty (or all-whitespace)
input line gives an empty output without reaching the model. ``beam=None`` decodes
greedily; ``beam=K`` runs beam search (K = 1 gives the greedy output by another path).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch

from s2s.data.corpus import as_source, length_batches
from s2s.data.tokenize import BOS, EOS, PAD, Tokenizer, clean_source
from s2s.decoding.gates import TableStepper, table_steps
from s2s.decoding.packed import pack_linears, packed_head
from s2s.decoding.search import ROW_STEP, beam_search, greedy, max_lengths
from s2s.decoding.shortlist import Shortlist, ShortlistStepper
from s2s.errors import S2SError
from s2s.runtime import resolve_precision

log = logging.getLogger(__name__)


@dataclass
class Translation:
    texts: list[str]  # n-best, best first; [""] for an empty input line
    scores: list[float] | None  # search scores (log-probability / length penalty);
    # None from greedy search asked for no scores
    alignment: str = ""  # "SRC-TGT" pairs over subword positions (see hard_alignment)


def hard_alignment(
    weights: torch.Tensor, src_len: int, reverse_source: bool, tgt_len: int | None = None
) -> str:
    """Attention weights (a row per target token, and one for EOS where the output
    ended with it; padded src_len) -> Pharaoh-style pairs "i-j": of the source tokens,
    target token j attends most to token i. Positions count subword tokens from 0 in
    the original source order; EOS on either side is left out. ``tgt_len``: the output's
    tokens (None: all rows but the last, taken for EOS)."""
    pairs = []
    n_src = src_len - 1  # the source EOS
    if n_src <= 0:
        return ""
    rows = weights[:-1] if tgt_len is None else weights[:tgt_len]  # no EOS row at the cap
    for j, row in enumerate(rows):
        i = int(row[:n_src].argmax())
        if reverse_source:
            i = n_src - 1 - i
        pairs.append(f"{i}-{j}")
    return " ".join(pairs)


@torch.inference_mode()
def translate(
    model,
    src_tok: Tokenizer,
    tgt_tok: Tokenizer,
    lines: list[str],
    *,
    reverse_source: bool,
    batch_size: int = 64,
    batch_unit: str = "sentences",
    max_output_ratio: float = 2.0,
    max_src_len: int = 250,
    device: torch.device | str = "cpu",
    beam: int | None = None,
    nbest: int = 1,
    alpha: float = 0.0,
    normalize: bool = False,
    min_len: int = 0,
    alignments: bool = False,
    precision: str = "fp32",
    scores: bool = True,
    shortlist: Shortlist | None = None,
    packed: bool = True,
) -> list[Translation]:
    """Translate ``lines`` (see the module docstring), in batches of similar length:
    ``batch_size`` sentences, or source tokens (padded) with ``batch_unit="tokens"``.
    ``precision``: "fp32", "bf16" (a bfloat16 copy of the model, scores in float32)
    or "auto" (bf16 where the device has it at hardware speed). ``scores=False``: greedy
    search skips its log-probabilities (``Translation.scores`` None); beam search
    always has them. ``shortlist``: each batch scores only its shortlist's target pieces
    (``s2s.decoding.shortlist``). ``packed=False``: a float32 output layer unpacked
    (validation: packing it raised training's peak memory, docs/speed.md)."""
    decoder = decoding_model(model, precision, torch.device(device))
    # a bf16 copy runs its batches in a few row counts (search.bucketed), float32 not
    row_step = 1 if decoder is model else ROW_STEP
    original, model, was_training = model, decoder, model.training
    model.eval()
    stepper = _stepper(model, original, shortlist, (src_tok, tgt_tok), packed)
    cleaned = [clean_source(line) for line in lines]
    todo = [i for i, line in enumerate(cleaned) if line]
    ids = _sources(src_tok, [cleaned[i] for i in todo], reverse_source, max_src_len)
    results = [Translation(texts=[""], scores=[0.0]) for _ in lines]
    order = length_batches(
        [len(s) for s in ids], batch_size=batch_size, unit=batch_unit, pool=1, rng=None
    )
    options = dict(beam=beam, nbest=nbest, alpha=alpha, normalize=normalize, min_len=min_len)
    options |= dict(alignments=alignments, scores=scores, row_step=row_step)
    for batch in order:
        seqs = [torch.tensor(ids[j]) for j in batch]
        src = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=PAD)
        lengths = torch.tensor([len(s) for s in seqs])
        limit = max_lengths(lengths, max_output_ratio)
        found = _search(stepper, src.to(device), lengths, limit, **options)
        for j, result in zip(batch, _translations(found, tgt_tok, seqs, reverse_source)):
            results[todo[j]] = result
    model.train(was_training)
    return results


def _translations(found, tgt_tok: Tokenizer, seqs, reverse_source: bool) -> list[Translation]:
    """One batch's search results (n-best tokens, scores, attention) as Translations."""
    # one decode call for the whole batch: SentencePiece's list API costs about 0.1-0.2
    # ms a call on its own, as much as all the text (docs/speed.md)
    flat = tgt_tok.decode([tokens for nbest in found[0] for tokens in nbest])
    out, start = [], 0
    for k, nbest in enumerate(found[0]):
        texts = [t.replace("\n", " ") for t in flat[start : start + len(nbest)]]
        start += len(nbest)
        result = Translation(texts=texts, scores=found[1][k])
        if found[2] is not None:
            tokens = len(nbest[0])
            result.alignment = hard_alignment(
                found[2][k][0], len(seqs[k]), reverse_source, tgt_len=tokens
            )
        out.append(result)
    return out


def decoding_model(model, precision: str, device: torch.device):
    """The model a search runs: ``model`` itself in fp32, or for bf16 a bfloat16 copy
    (its weights cast once, as fairseq's ``--bf16`` generation does, rather than
    autocast casting inputs at every step)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown decoding precision '{precision}'; valid: auto, fp32, bf16")
    chosen = resolve_precision(precision, device)
    if precision == "auto":
        log.info("decoding precision auto: %s on %s", chosen, device.type)
    if chosen == "bf16":
        half = copy.deepcopy(model).to(torch.bfloat16)
        for member in getattr(half, "models", [half]):  # an Ensemble's, or the model
            pack_linears(member)
        return half
    return model


def _stepper(model, original, shortlist: Shortlist | None, tokenizers: tuple, packed: bool):
    """What search steps: ``model`` (the decoding copy of ``original``), its gates from
    a table where it can, over a shortlist or with a packed float32 output layer."""
    stepper = TableStepper(model) if table_steps(model) else model
    if shortlist is not None:
        return _shortlisted(stepper, original, shortlist, tokenizers, model is not original)
    return packed_head(stepper, model) if packed else stepper  # float32: the layer packed


def _shortlisted(stepper, model, shortlist: Shortlist, tokenizers: tuple, bf16: bool):
    """``stepper`` scoring each batch's shortlist, the rows of ``model``'s own output
    layer (a bf16 copy's are packed, so taken from the float32 model and cast)."""
    output = getattr(getattr(model, "decoder", None), "output", None)
    if output is None:
        raise S2SError("a shortlist decodes one model, not an ensemble")
    shortlist.check(*tokenizers)
    return ShortlistStepper(stepper, output, shortlist, torch.bfloat16 if bf16 else torch.float32)


def _sources(src_tok: Tokenizer, lines: list[str], reverse: bool, max_src_len: int):
    """The lines' source ids; very long lines are cut to a length the model can handle
    (0: no limit; their first tokens, before any reversal, and EOS), and said."""
    ids = src_tok.encode(lines)
    cut = sum(len(seq) > max_src_len for seq in ids) if max_src_len else 0
    if cut:
        log.warning(
            "%d source line(s) longer than %d tokens cut to that length "
            "(--max-source-length; 0 = no limit)",
            cut,
            max_src_len,
        )
    return [as_source(seq, reverse, max_src_len) for seq in ids]


def _search(
    model,
    src,
    lengths,
    limit,
    *,
    beam,
    nbest,
    alpha,
    normalize,
    min_len,
    alignments,
    scores,
    row_step,
):
    """One batch's search: per sentence, the n-best tokens and scores, and their
    attention (None unless ``alignments``). Greedy unless beam search is asked for."""
    if beam is None and nbest == 1 and not alignments and not min_len:  # else beam 1
        hyp = greedy(
            model,
            src,
            lengths,
            bos=BOS,
            eos=EOS,
            max_len=limit,
            scores=scores,
            row_step=row_step,
        )
        values = [None] * len(hyp.tokens) if hyp.scores is None else [[s] for s in hyp.scores]
        return [[t] for t in hyp.tokens], values, None
    nb = beam_search(
        model,
        src,
        lengths,
        bos=BOS,
        eos=EOS,
        beam=beam or 1,
        max_len=limit,
        min_len=min_len,
        alpha=alpha,
        normalize=normalize,
        nbest=nbest,
        attention=alignments,
        row_step=row_step,
    )
    return nb.tokens, nb.scores, nb.attention


def translate_lines(model, src_tok: Tokenizer, tgt_tok: Tokenizer, lines: list[str], **options):
    """The best translation of each line, as text (see ``translate`` for options)."""
    options.setdefault("scores", False)
    return [t.texts[0] for t in translate(model, src_tok, tgt_tok, lines, **options)]
