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


def score(hyps: list[str], refs: list[str], *, published: bool = False) -> Scores:
    """Cased BLEU with 13a tokenization by default; ``published=True`` lowercases and
    scores already-tokenized text with ``tokenize='none'`` (how papers report Multi30k)."""
    if len(hyps) != len(refs):
        raise DataError(f"hypotheses have {len(hyps)} lines but references have {len(refs)}")
    if not refs:
        raise DataError("no lines to score: the references and hypotheses are empty")
    if published:
        bleu = sacrebleu.BLEU(lowercase=True, tokenize="none")
        chrf = sacrebleu.CHRF(lowercase=True)
    else:
        bleu = sacrebleu.BLEU()
        chrf = sacrebleu.CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return Scores(
        bleu=b.score,
        chrf=c.score,
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
        bleu_text=str(b),
    )
