"""A lexical shortlist: each batch decodes over the target pieces its source makes likely.

On a CPU without fast bf16 the output layer is most of a search step (docs/speed.md):
every hypothesis scores all target pieces, though a sentence's translation uses few.
Marian's lexical shortlists and CTranslate2's vocabulary map cut that work; this is
the same idea. From the training pairs, each source piece ``s`` keeps the ``top``
target pieces ``t`` with the highest p(t | s) = (pairs holding both) / (pairs holding
``s``); a batch decodes over the union of its source pieces' lists, the ``frequent``
most common target pieces and the special tokens. The output layer, its log-softmax
and the ranking run over those rows only, so log-probabilities are normalised over the
shortlist; where a piece outside it would have won, the output differs from a search
over the whole vocabulary (BENCHMARKS.md measures by how much).

Build one with ``s2s shortlist CKPT --out FILE``; decode with ``s2s translate CKPT
--shortlist FILE``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from s2s.data.tokenize import SPECIALS
from s2s.decoding.packed import packed_product
from s2s.errors import CheckpointError

KIND = "s2s-shortlist"
VERSION = 1


@dataclass
class Shortlist:
    table: torch.Tensor  # (source vocabulary, top) target ids per source id, best first; -1 pads
    frequent: torch.Tensor  # (F,) target ids always decoded over: the specials, the commonest
    tgt_vocab: int
    # sha1 of the source and target pieces it was counted over (``vocab_digest``); ""
    # in files written before it was kept, which are checked by their sizes only
    digest: str = ""

    @property
    def src_vocab(self) -> int:
        return self.table.shape[0]

    def vocab(self, src: torch.Tensor) -> torch.Tensor:
        """The sorted target ids a batch of source ids (any shape, padding included)
        decodes over."""
        cand = self.table.index_select(0, torch.unique(src.cpu()).long()).flatten()
        return torch.unique(torch.cat([cand[cand >= 0].long(), self.frequent]))

    def state(self) -> dict:
        return {
            "kind": KIND,
            "version": VERSION,
            "table": self.table,
            "frequent": self.frequent,
            "tgt_vocab": self.tgt_vocab,
            "digest": self.digest,
        }

    @classmethod
    def from_state(cls, state: dict, name: str = "shortlist") -> Shortlist:
        if not isinstance(state, dict) or state.get("kind") != KIND:
            raise CheckpointError(f"{name} is not an s2s shortlist (s2s shortlist writes one)")
        if state.get("version") != VERSION:
            raise CheckpointError(
                f"{name} has shortlist version {state.get('version')}; this s2s reads {VERSION}"
            )
        table, frequent, tgt_vocab = (
            state.get("table"),
            state.get("frequent"),
            state.get("tgt_vocab"),
        )
        damaged = not (
            isinstance(tgt_vocab, int)
            and isinstance(table, torch.Tensor)
            and isinstance(frequent, torch.Tensor)
            and table.dim() == 2
            and frequent.dim() == 1
            and not table.is_floating_point()
            and not frequent.is_floating_point()
            and bool(((table >= -1) & (table < tgt_vocab)).all())
            and bool(((frequent >= 0) & (frequent < tgt_vocab)).all())
        )
        if damaged:
            raise CheckpointError(
                f"{name} is damaged: its tables are not target ids below its vocabulary "
                "size (build it again with s2s shortlist)"
            )
        return cls(table, frequent.long(), tgt_vocab, state.get("digest", ""))

    def save(self, path: str | Path) -> None:
        from s2s.training.checkpoint import atomic_write

        atomic_write(Path(path), lambda handle: torch.save(self.state(), handle))

    @classmethod
    def load(cls, path: str | Path) -> Shortlist:
        from s2s.training.checkpoint import read

        return cls.from_state(read(path, "shortlist"), str(path))

    def check(self, src_tok, tgt_tok, name: str = "the shortlist") -> None:
        """A clear error unless this shortlist was built for these tokenizers: the same
        vocabulary sizes and (where the file keeps it) the same pieces."""
        src_vocab, tgt_vocab = src_tok.vocab_size, tgt_tok.vocab_size
        if (self.src_vocab, self.tgt_vocab) != (src_vocab, tgt_vocab):
            raise CheckpointError(
                f"{name} was built for vocabularies of {self.src_vocab} source and "
                f"{self.tgt_vocab} target pieces; the model has {src_vocab} and {tgt_vocab}"
            )
        if self.digest and self.digest != vocab_digest(src_tok, tgt_tok):
            raise CheckpointError(
                f"{name} was built for another model's vocabulary (same sizes, other "
                "pieces); build one for this model with s2s shortlist"
            )


def vocab_digest(src_tok, tgt_tok) -> str:
    """A fingerprint of a model's source and target pieces, in order."""
    text = "\n".join(src_tok.vocabulary()) + "\n\x00\n" + "\n".join(tgt_tok.vocabulary())
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def build(
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    src_vocab: int,
    tgt_vocab: int,
    *,
    top: int = 200,
    frequent: int = 300,
) -> Shortlist:
    """The shortlist of aligned token-id sequences (see the module docstring); ties
    go to the lower target id."""
    if top < 1 or frequent < 0:
        raise ValueError(f"top must be at least 1 and frequent at least 0 (got {top}, {frequent})")
    top = min(top, tgt_vocab)  # no more pieces than there are: the rest would be padding
    keys, seen_src, seen_tgt = [], [], []
    for s, t in zip(src_ids, tgt_ids):
        s, t = torch.unique(torch.as_tensor(s)), torch.unique(torch.as_tensor(t))
        keys.append((s.unsqueeze(1) * tgt_vocab + t.unsqueeze(0)).flatten())
        seen_src.append(s)
        seen_tgt.append(t)
    if not keys:
        raise ValueError("a shortlist needs at least one sentence pair")
    pair, count = torch.unique(torch.cat(keys), return_counts=True)  # sorted by (s, t)
    source, target = pair // tgt_vocab, pair % tgt_vocab
    per_src = torch.bincount(torch.cat(seen_src), minlength=src_vocab)
    per_tgt = torch.bincount(torch.cat(seen_tgt), minlength=tgt_vocab)
    score = count.double() / per_src[source].double()  # p(t | s)
    order = torch.sort(-score, stable=True).indices  # best first, lower t among ties
    order = order[torch.sort(source[order], stable=True).indices]  # grouped by s
    source, target = source[order], target[order]
    starts = torch.searchsorted(source, torch.arange(src_vocab))
    rank = torch.arange(len(source)) - starts[source]
    keep = rank < top
    table = torch.full((src_vocab, top), -1, dtype=torch.int32)
    table[source[keep], rank[keep]] = target[keep].to(torch.int32)
    commonest = torch.sort(-per_tgt, stable=True).indices[:frequent]
    always = torch.cat([torch.arange(min(len(SPECIALS), tgt_vocab)), commonest])
    return Shortlist(table, torch.unique(always), tgt_vocab)


class ShortlistStepper:
    """A stepper (``s2s.decoding.search``) whose steps score only the batch's shortlist:
    ``encode`` picks the batch's target ids (``Shortlist.vocab``) and their rows of the
    output layer (``output``, cast to ``dtype`` and, on the CPU, packed), and each
    step hands search that smaller layer and the ids (``StepOutput.vocab``), which
    ``s2s.decoding.ranking`` maps its choices back through."""

    def __init__(self, stepper, output: nn.Linear, shortlist: Shortlist, dtype: torch.dtype):
        self.stepper, self.shortlist, self.dtype = stepper, shortlist, dtype
        self.grouped_encoder = getattr(stepper, "grouped_encoder", False)
        self.weight, self.bias = output.weight.detach(), output.bias
        self.head, self.ids = None, None

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor):
        ids = self.shortlist.vocab(src).to(self.weight.device)
        weight = self.weight.index_select(0, ids).to(self.dtype)
        bias = None if self.bias is None else self.bias.detach()[ids].to(self.dtype)
        self.head, self.ids = packed_product(weight, bias, float32=True), ids
        return self.stepper.encode(src, src_lengths)

    def init_state(self, enc):
        return self.stepper.init_state(enc)

    def step(self, prev: torch.Tensor, state, enc):
        out = self.stepper.step(prev, state, enc)
        return dataclasses.replace(out, head=self.head, vocab=self.ids)
