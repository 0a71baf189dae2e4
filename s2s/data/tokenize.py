"""Tokenizers: SentencePiece (unigram or BPE), characters, whitespace words.

Every tokenizer maps text to ids with the same special ids (pad 0, unk 1, bos 2, eos 3)
and back, and serialises to a small state dict (the SentencePiece model as bytes), so a
checkpoint carries its tokenizers and translates with nothing else.
"""

from __future__ import annotations

import collections
import io
import logging
import unicodedata
from pathlib import Path

import sentencepiece as spm
import torch

from s2s.config import TokenizerConfig
from s2s.errors import CheckpointError, DataError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
log = logging.getLogger(__name__)

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


class SpmTokenizer:
    kind = "spm"

    def __init__(self, model_proto: bytes):
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    # One thread: the list API otherwise starts a thread pool at each call, which
    # competes with PyTorch's spinning OpenMP threads (a call on 1,000 sentences took
    # 3 ms or, now and then, 90 ms; docs/speed.md).
    def encode(self, lines: list[str]) -> list[list[int]]:
        return self.sp.encode(lines, num_threads=1)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.sp.decode(ids, num_threads=1)

    def save(self, path: Path) -> None:
        path.write_bytes(self.proto)

    def vocabulary(self) -> list[str]:
        return [self.sp.id_to_piece(i) for i in range(self.vocab_size)]

    def state(self) -> dict:
        return {
            "kind": self.kind,
            "model": torch.frombuffer(bytearray(self.proto), dtype=torch.uint8),
        }


class VocabTokenizer:
    """Characters (``kind='char'``) or whitespace-separated words (``kind='word'``)."""

    def __init__(self, kind: str, symbols: list[str]):
        self.kind = kind
        self.symbols = symbols
        self.index = {s: i for i, s in enumerate(symbols)}

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def split(self, line: str) -> list[str]:
        return list(line) if self.kind == "char" else line.split()

    def encode(self, lines: list[str]) -> list[list[int]]:
        get = self.index.get
        return [[get(s, UNK) for s in self.split(line)] for line in lines]

    def decode(self, ids: list[list[int]]) -> list[str]:
        joiner = "" if self.kind == "char" else " "
        out = []
        for seq in ids:
            out.append(joiner.join(self.symbols[i] for i in seq if i == UNK or i >= len(SPECIALS)))
        return out

    def save(self, path: Path) -> None:
        path.write_text("\n".join(self.symbols[len(SPECIALS) :]) + "\n", encoding="utf-8")

    def state(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols}

    def vocabulary(self) -> list[str]:
        return list(self.symbols)


class TargetSubset:
    """The target side's own vocabulary inside a joint tokenizer: the joint model's pieces
    that the target side of the training data uses (specials first), renumbered densely,
    so the decoder's embedding and output layer cover only those (OpenNMT-py and Joey NMT
    build the target vocabulary from the target side too). Pieces outside it encode as
    unk; text is split exactly as the joint model splits it."""

    kind = "subset"

    def __init__(self, base: SpmTokenizer | VocabTokenizer, ids: list[int]):
        if ids[: len(SPECIALS)] != list(range(len(SPECIALS))):
            raise CheckpointError("a target vocabulary must start with the special ids")
        self.base = base
        self.ids = ids
        self.local = {i: n for n, i in enumerate(ids)}

    @classmethod
    def fit(cls, base: SpmTokenizer | VocabTokenizer, lines: list[str]) -> TargetSubset:
        used = {i for seq in base.encode(lines) for i in seq}
        return cls(base, list(range(len(SPECIALS))) + sorted(used - set(range(len(SPECIALS)))))

    @property
    def vocab_size(self) -> int:
        return len(self.ids)

    def encode(self, lines: list[str]) -> list[list[int]]:
        get = self.local.get
        return [[get(i, UNK) for i in seq] for seq in self.base.encode(lines)]

    def decode(self, ids: list[list[int]]) -> list[str]:
        full = self.ids
        return self.base.decode([[full[i] for i in seq] for seq in ids])

    def save(self, path: Path) -> None:
        """The joint model is saved beside it; this writes the target pieces, one a line."""
        path.write_text("\n".join(self.vocabulary()) + "\n", encoding="utf-8")

    def vocabulary(self) -> list[str]:
        pieces = self.base.vocabulary()
        return [pieces[i] for i in self.ids]

    def state(self) -> dict:
        return {"kind": self.kind, "ids": torch.tensor(self.ids, dtype=torch.int32)}


Tokenizer = SpmTokenizer | VocabTokenizer | TargetSubset


SPM_LINE_BYTES = 4192  # SentencePiece leaves longer lines out of its training


def _train_spm(cfg: TokenizerConfig, lines: list[str], side: str = "joint") -> SpmTokenizer:
    buffer = io.BytesIO()
    long = sum(len(line.encode("utf-8")) > SPM_LINE_BYTES for line in lines)
    if long:
        log.warning(
            "%d of the %s training lines are over %d bytes: SentencePiece leaves them out "
            "of the tokenizer's training",
            long,
            side,
            SPM_LINE_BYTES,
        )
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=buffer,
            vocab_size=cfg.vocab_size,
            model_type=cfg.spm_model,
            character_coverage=cfg.character_coverage,
            pad_id=PAD,
            unk_id=UNK,
            bos_id=BOS,
            eos_id=EOS,
            num_threads=cfg.threads,
            minloglevel=2,
            hard_vocab_limit=False,
            max_sentence_length=SPM_LINE_BYTES,
        )
    except RuntimeError as err:
        cause = (
            f"every {side} training line is over {SPM_LINE_BYTES} bytes"
            if long == len(lines)
            else "data.tokenizer.vocab_size may be too small for the text's characters"
        )
        raise DataError(
            f"SentencePiece training failed ({side} tokenizer): {err}".splitlines()[0]
            + f" ({cause})"
        ) from None
    tok = SpmTokenizer(buffer.getvalue())
    if tok.vocab_size < cfg.vocab_size:  # hard_vocab_limit off: the text holds no more
        log.warning(
            "SentencePiece made %d pieces for the %s tokenizer, not data.tokenizer.vocab_size "
            "%d: the training text holds no more",
            tok.vocab_size,
            side,
            cfg.vocab_size,
        )
    return tok


def _build_vocab(cfg: TokenizerConfig, lines: list[str], side: str = "joint") -> VocabTokenizer:
    probe = VocabTokenizer(cfg.kind, list(SPECIALS))
    counts = collections.Counter(s for line in lines for s in probe.split(line))
    # Most frequent first, ties broken alphabetically so the vocabulary is deterministic.
    ranked = sorted(
        (s for s, c in counts.items() if c >= cfg.min_freq), key=lambda s: (-counts[s], s)
    )
    return VocabTokenizer(
        cfg.kind, list(SPECIALS) + ranked[: max(0, cfg.vocab_size - len(SPECIALS))]
    )


SPACES = {"Cc", "Zl", "Zp"}  # control characters, line and paragraph separators
DROPPED = "\u00ad"  # the soft hyphen: a hint where a word may break, inside the word


def clean_source(line: str) -> str:
    """A source line as every model reads it, in training, translation and shortlists
    alike: control characters (tab aside) and line or paragraph separators made spaces,
    soft hyphens dropped, the ends stripped. Format characters that carry meaning (the
    zero-width joiner and non-joiner of Persian, Indic scripts and emoji, direction
    marks) and other spaces stay as they are."""
    if line.isprintable():
        return line.strip()
    return "".join(_clean_char(ch) for ch in line).strip()


def _clean_char(ch: str) -> str:
    if ch.isprintable() or ch == "\t":
        return ch
    if ch in DROPPED:
        return ""
    return " " if unicodedata.category(ch) in SPACES else ch


def train_tokenizers(
    cfg: TokenizerConfig, src_lines: list[str], tgt_lines: list[str]
) -> tuple[Tokenizer, Tokenizer]:
    """Fit on the training side (sources as ``clean_source`` gives them); joint models
    share one tokenizer object, or, with ``target_vocab: train``, the target side keeps
    the pieces its training text uses."""
    src_lines = [clean_source(line) for line in src_lines]
    fit = _train_spm if cfg.kind == "spm" else _build_vocab
    if cfg.kind == "spm" and cfg.min_freq > 1:
        log.warning("data.tokenizer.min_freq applies to char and word vocabularies, not spm")
    if cfg.joint:
        tok = fit(cfg, src_lines + tgt_lines)
        return tok, (TargetSubset.fit(tok, tgt_lines) if cfg.target_vocab == "train" else tok)
    return fit(cfg, src_lines, "source"), fit(cfg, tgt_lines, "target")


def from_state(state: dict, base: Tokenizer | None = None) -> Tokenizer:
    """A tokenizer from its state; a target subset needs the joint tokenizer (``base``)."""
    kind = state.get("kind")
    if kind == "subset":
        if not isinstance(base, SpmTokenizer | VocabTokenizer):
            raise CheckpointError("checkpoint holds a target vocabulary without its tokenizer")
        return TargetSubset(base, [int(i) for i in state["ids"].tolist()])
    if kind == "spm":
        return SpmTokenizer(bytes(state["model"].numpy().tobytes()))
    if kind in ("char", "word"):
        return VocabTokenizer(kind, list(state["symbols"]))
    raise CheckpointError(f"checkpoint holds an unknown tokenizer kind '{kind}'")


def save_tokenizers(src: Tokenizer, tgt: Tokenizer, folder: Path) -> None:
    """Human-usable copies in the run folder (the checkpoint holds them too)."""
    suffix = ".model" if src.kind == "spm" else ".vocab"
    if src is tgt:
        src.save(folder / f"tokenizer.joint{suffix}")
    elif isinstance(tgt, TargetSubset):
        src.save(folder / f"tokenizer.joint{suffix}")
        tgt.save(folder / "tokenizer.tgt.pieces")
    else:
        src.save(folder / f"tokenizer.src{suffix}")
        tgt.save(folder / f"tokenizer.tgt{suffix}")
