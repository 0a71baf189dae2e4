"""Scoring translations: corpus BLEU and chrF through sacrebleu, with signatures."""

from __future__ import annotations

from dataclasses import dataclass

import sacrebleu

from s2s.errors import DataError


@dataclass
class Scores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    bleu_text: str  # sacrebleu's one-line summary (with n-gram precisions, BP)

    def as_dict(self) -> dict:
        return {
            "bleu": self.bleu,
            "chrf": self.chrf,
            "bleu_signature": self.bleu_signature,
            "chrf_signature": self.chrf_signature,
        }


def score(
    hyps: list[str],
    refs: list[str] | list[list[str]],
    *,
    published: bool = False,
    tokenize: str | None = None,
    lowercase: bool = False,
    chrf_word_order: int = 0,
) -> Scores:
    """Cased BLEU with 13a tokenization by default; ``published=True`` lowercases and
    scores already-tokenized text with ``tokenize='none'`` (how papers report Multi30k).
    ``refs``: one reference per hypothesis, or several such lists (multi-reference
    BLEU and chrF); ``tokenize`` one of sacrebleu's tokenizers (``zh``, ``ja-mecab``,
    ``intl``, ...); ``chrf_word_order`` 2 gives chrF++."""
    sets = refs if refs and isinstance(refs[0], list) else [refs]
    for ref in sets:
        if len(hyps) != len(ref):
            raise DataError(f"hypotheses have {len(hyps)} lines but references have {len(ref)}")
    if not sets[0]:
        raise DataError("no lines to score: the references and hypotheses are empty")
    if published:  # tokenized on purpose: sacrebleu's "forgot to detokenize?" is wrong here
        bleu = sacrebleu.BLEU(lowercase=True, tokenize="none", force=True)
        chrf = sacrebleu.CHRF(lowercase=True, word_order=chrf_word_order)
    else:
        bleu = sacrebleu.BLEU(lowercase=lowercase, tokenize=tokenize)
        chrf = sacrebleu.CHRF(lowercase=lowercase, word_order=chrf_word_order)
    b = bleu.corpus_score(hyps, sets)
    c = chrf.corpus_score(hyps, sets)
    return Scores(
        bleu=b.score,
        chrf=c.score,
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
        bleu_text=str(b),
    )
