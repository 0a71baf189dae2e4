"""Data: parallel text through Hugging Face ``datasets``, token ids, batches.

Local corpora are line-aligned files ``PREFIX.LANG`` (plain or ``.gz``); a prefix that
names an unset ``${VAR}`` falls back to the hub dataset in ``data.hub``. Lines are split
on ``\\n`` only, so alignment never depends on exotic Unicode line separators.
Batches are length-bucketed (by a token budget or a sentence count) and reshuffled
every epoch from ``seed`` and the epoch number alone, so a run can resume mid-epoch.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from s2s.config import DataConfig, unset_variables
from s2s.data.tokenize import BOS, EOS, PAD, Tokenizer, clean_source
from s2s.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------- reading


def split_lines(raw: bytes, encoding: str, name: str) -> list[str]:
    """Decode ``raw`` and split it on ``\\n`` (a trailing newline ends the last line;
    a ``\\r`` before it is dropped; a leading byte-order mark is dropped). ``name`` says
    where the bytes came from."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{name} line {line}: bytes that are not valid {encoding} "
            "(set data.encoding or --encoding, e.g. latin-1)"
        ) from None
    except LookupError:
        raise DataError(f"unknown encoding '{encoding}'") from None
    lines = text.removeprefix("\ufeff").split("\n")  # a byte-order mark is no text
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def lines_sha1(*columns) -> str:
    """A fingerprint of columns of text lines (a split's sources and references, say)."""
    digest = hashlib.sha1()
    for column in columns:
        for line in column:
            digest.update(line.encode("utf-8") + b"\n")
        digest.update(b"\x00\n")
    return digest.hexdigest()


def read_lines(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """All lines of a plain or gzipped text file, without line ends."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    return split_lines(raw, encoding, str(path))


def find_file(prefix: str, lang: str) -> Path:
    for candidate in (Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")):
        if candidate.is_file():
            return candidate
    raise DataError(f"file not found: {prefix}.{lang} (or {prefix}.{lang}.gz)")


def read_parallel(src_path: Path, tgt_path: Path, encoding: str) -> tuple[list[str], list[str]]:
    src, tgt = read_lines(src_path, encoding), read_lines(tgt_path, encoding)
    for path, lines in ((src_path, src), (tgt_path, tgt)):
        if not lines:
            raise DataError(f"{path} is empty")
    if len(src) != len(tgt):
        raise DataError(
            f"line counts differ: {src_path} has {len(src)} lines, {tgt_path} has {len(tgt)}"
        )
    return src, tgt


@dataclass
class Pairs:
    """A parallel corpus as two lists of lines: ``pairs["src"]``, ``pairs["tgt"]``,
    ``len`` and ``select``, the parts of a ``datasets.Dataset`` the pipeline uses.
    Local files never import ``datasets`` (with pyarrow and pandas, about 100 MB of
    a run's memory)."""

    src: list[str]
    tgt: list[str]

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, column: str) -> list[str]:
        if column not in ("src", "tgt"):
            raise KeyError(column)
        return self.src if column == "src" else self.tgt

    def select(self, indices) -> Pairs:
        indices = list(indices)
        return Pairs([self.src[i] for i in indices], [self.tgt[i] for i in indices])


def load_split(cfg: DataConfig, split: str) -> Pairs:
    """The split's sentence pairs: local files, or the hub dataset ``data.hub`` when
    the path names an unset environment variable."""
    prefix = getattr(cfg, split)
    if not prefix:
        raise DataError(f"data.{split} is not set")
    missing = unset_variables(prefix)
    if missing:
        if not cfg.hub:
            raise DataError(
                f"data.{split} ({prefix}) names unset environment variable {missing[0]} "
                "and data.hub is empty"
            )
        pairs = _hub_split(cfg, getattr(cfg, f"hub_{split}"), missing[0])
    else:
        pairs = Pairs(
            *read_parallel(
                find_file(prefix, cfg.src_lang), find_file(prefix, cfg.tgt_lang), cfg.encoding
            )
        )
    limit = {"train": cfg.train_limit, "valid": cfg.valid_limit}.get(split, 0)
    if limit:
        pairs = pairs.select(range(min(limit, len(pairs))))
    return pairs


def _hub_split(cfg: DataConfig, hub_split: str, unset: str) -> Pairs:
    import datasets

    log.info("loading %s split %s from the hub (%s unset)", cfg.hub, hub_split, unset)
    try:
        ds = datasets.load_dataset(cfg.hub, split=hub_split)
    except Exception as err:  # the hub raises many kinds; report one line
        raise DataError(
            f"cannot load hub dataset {cfg.hub} split {hub_split}: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__} "
            f"(set {unset} to use local files)"
        ) from None
    for lang in (cfg.src_lang, cfg.tgt_lang):
        if lang not in ds.column_names:
            raise DataError(f"hub dataset {cfg.hub} has no column '{lang}'")
    return Pairs(list(ds[cfg.src_lang]), list(ds[cfg.tgt_lang]))


# --------------------------------------------------------------------------- ids


def source_ids(
    tok: Tokenizer, lines: list[str], reverse: bool, max_len: int = 0
) -> list[list[int]]:
    """Source token ids + EOS; reversal (Sutskever et al. 2014) is applied here, as a
    data transform, so the model never knows about it. ``max_len`` (0: none) keeps each
    line's first tokens, cut before the reversal: a reversed source keeps the start of
    its sentence, as its target does, and its EOS."""
    return [
        as_source(seq, reverse, max_len)
        for seq in tok.encode([clean_source(line) for line in lines])
    ]


def as_source(seq: list[int], reverse: bool, max_len: int = 0) -> list[int]:
    """One line's token ids as the encoder reads them (``source_ids``)."""
    if max_len:
        seq = seq[:max_len]
    return (seq[::-1] if reverse else seq) + [EOS]


class Packed(Sequence):
    """Token-id sequences in one flat int64 tensor with their start offsets; item ``i``
    is a view of it. A tensor object per sentence cost about 800 bytes on its own:
    51 MB for Multi30k's 29,000 training pairs, against 6 MB packed (docs/speed.md,
    memory)."""

    def __init__(self, seqs):
        seqs = [s.tolist() if isinstance(s, torch.Tensor) else list(s) for s in seqs]
        self.starts = [0]
        for seq in seqs:
            self.starts.append(self.starts[-1] + len(seq))
        self.ids = torch.tensor([x for seq in seqs for x in seq], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} of {len(self)}")
        i %= len(self)
        return self.ids[self.starts[i] : self.starts[i + 1]]

    def lengths(self) -> list[int]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


@dataclass
class Corpus:
    """Tokenized parallel data; ``tgt`` ids carry no BOS/EOS (added when batching).
    Either side may be given as any sequences of ids; it is kept ``Packed``."""

    src: Packed
    tgt: Packed

    def __post_init__(self):
        self.src = self.src if isinstance(self.src, Packed) else Packed(self.src)
        self.tgt = self.tgt if isinstance(self.tgt, Packed) else Packed(self.tgt)

    def __len__(self) -> int:
        return len(self.src)

    def costs(self) -> list[int]:
        """Padded cost per pair: the longer of the source and the target + 1."""
        return [max(s, t + 1) for s, t in zip(self.src.lengths(), self.tgt.lengths())]


def encode_corpus(
    ds,
    src_tok: Tokenizer,
    tgt_tok: Tokenizer,
    *,
    reverse_source: bool,
    max_len: int = 0,
    drop_empty: bool = False,
    long_pairs: str = "drop",
    name: str = "data",
) -> Corpus:
    """Token ids of a parallel dataset. Empty pairs are dropped (with ``drop_empty``)
    and pairs over ``max_len`` tokens on either side are dropped or truncated
    (``long_pairs``); both are counted in the log."""
    src_lines, tgt_lines = [clean_source(line) for line in ds["src"]], list(ds["tgt"])
    src_ids = src_tok.encode(src_lines)  # EOS and reversal below, after any cut
    tgt_ids = tgt_tok.encode(tgt_lines)
    keep_src, keep_tgt = [], []
    empty = too_long = 0
    for s, t, s_line, t_line in zip(src_ids, tgt_ids, src_lines, tgt_lines):
        if drop_empty and (not s_line.strip() or not t_line.strip()):
            empty += 1
            continue
        if max_len and (len(s) > max_len or len(t) > max_len):
            too_long += 1
            if long_pairs == "drop":
                continue
            s, t = s[:max_len], t[:max_len]  # both keep their sentence's start
        keep_src.append(as_source(s, reverse_source))
        keep_tgt.append(t)
    if empty or too_long:
        log.info(
            "%s: dropped %d empty pairs and %s %d over-long (> %d tokens) pairs of %d",
            name,
            empty,
            "truncated" if long_pairs == "truncate" else "dropped",
            too_long,
            max_len,
            len(src_ids),
        )
    return Corpus(src=keep_src, tgt=keep_tgt)


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    src: torch.Tensor  # (batch, src_len)
    src_lengths: torch.Tensor  # (batch,)
    tgt_in: torch.Tensor  # (batch, tgt_len): BOS y_1 .. y_n
    tgt_out: torch.Tensor  # (batch, tgt_len): y_1 .. y_n EOS
    n_tokens: int  # target tokens (non-padding positions of tgt_out)

    @property
    def n_sequences(self) -> int:
        return self.src.shape[0]

    def to(self, device: torch.device) -> "Batch":
        """On a GPU: from pinned memory without waiting (the copy overlaps the work
        queued before it); on the CPU: the batch itself."""
        device = torch.device(device)
        if device.type != "cuda":
            return self if device.type == "cpu" else self._map(lambda t: t.to(device))
        return self._map(lambda t: t.pin_memory().to(device, non_blocking=True))

    def _map(self, move) -> "Batch":
        return Batch(
            src=move(self.src),
            src_lengths=self.src_lengths,
            tgt_in=move(self.tgt_in),
            tgt_out=move(self.tgt_out),
            n_tokens=self.n_tokens,
        )


def pad_to(rows: list[torch.Tensor], multiple: int) -> torch.Tensor:
    """(len(rows), longest rounded up to ``multiple``), PAD after each row."""
    padded = pad_sequence(rows, batch_first=True, padding_value=PAD)
    extra = round_up(padded.shape[1], multiple) - padded.shape[1]
    return F.pad(padded, (0, extra), value=PAD) if extra else padded


def collate(corpus: Corpus, indices: list[int], multiple: int = 1) -> Batch:
    """A padded batch; ``multiple``: both lengths padded to a multiple of it."""
    src = [corpus.src[i] for i in indices]
    tgt = [corpus.tgt[i] for i in indices]
    bos = torch.tensor([BOS])
    eos = torch.tensor([EOS])
    return Batch(
        src=pad_to(src, multiple),
        src_lengths=torch.tensor([len(s) for s in src]),
        tgt_in=pad_to([torch.cat([bos, t]) for t in tgt], multiple),
        tgt_out=pad_to([torch.cat([t, eos]) for t in tgt], multiple),
        n_tokens=sum(len(t) + 1 for t in tgt),
    )


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def length_batches(
    lengths: list[int],
    *,
    batch_size: int,
    unit: str,
    pool: int,
    rng: random.Random | None,
    multiple: int = 1,
) -> list[list[int]]:
    """Group indices into batches of similar length.

    With ``rng``: shuffle, sort within pools of about ``pool`` batches, split, and
    shuffle the batch order (one epoch). Without: sort everything, keep order.
    ``lengths`` is the padded cost per example (max of source and target length).
    ``multiple``: lengths count rounded up to it, and a batch that fills up keeps a
    multiple of it sentences (the rest start the next one), as ``collate`` pads.
    """
    order = list(range(len(lengths)))
    if rng is None:
        chunks = [sorted(order, key=lambda i: lengths[i])]
    else:
        rng.shuffle(order)
        mean = max(1.0, sum(lengths) / max(1, len(lengths)))
        per_batch = batch_size / mean if unit == "tokens" else batch_size
        size = max(1, int(per_batch * pool))
        chunks = [
            sorted(order[i : i + size], key=lambda i: lengths[i])
            for i in range(0, len(order), size)
        ]
    batches: list[list[int]] = []
    for chunk in chunks:
        current: list[int] = []
        longest = 0
        for i in chunk:
            new_longest = max(longest, round_up(lengths[i], multiple))
            cost = new_longest * (len(current) + 1) if unit == "tokens" else len(current) + 1
            if current and cost > batch_size:
                # a multiple of ``multiple`` sentences (all of them when fewer)
                keep = len(current) - len(current) % multiple or len(current)
                batches.append(current[:keep])
                current = current[keep:]
                new_longest = max(round_up(lengths[j], multiple) for j in current + [i])
            current.append(i)
            longest = new_longest
        if current:
            batches.append(current)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def epoch_batches(corpus: Corpus, cfg: DataConfig, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one training epoch: a pure function of (data, seed, epoch)."""
    lengths = corpus.costs()
    rng = random.Random(seed * 1_000_003 + epoch)
    return length_batches(
        lengths,
        batch_size=cfg.batch_size,
        unit=cfg.batch_unit,
        pool=cfg.bucket_pool,
        rng=rng,
        multiple=cfg.shape_multiple,
    )
