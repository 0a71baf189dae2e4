"""Data: token ids and batches of the sentence pairs that ``s2s.data.files`` reads.

Batches are length-bucketed (by a token budget or a sentence count) and reshuffled
every epoch from ``seed`` and the epoch number alone, so a run can resume mid-epoch.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from s2s.config import DataConfig
from s2s.data.tokenize import BOS, EOS, PAD, Tokenizer, clean_source, train_tokenizers
from s2s.errors import DataError

log = logging.getLogger(__name__)

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


def fit_tokenizers(cfg: DataConfig, pairs) -> tuple[Tokenizer, Tokenizer]:
    """Tokenizers trained on the training pairs whose two sides both hold text."""
    keep = [
        i for i, (s, t) in enumerate(zip(pairs["src"], pairs["tgt"])) if s.strip() and t.strip()
    ]
    if not keep:
        raise DataError(f"training set has only empty lines: {cfg.train}")
    sub = pairs.select(keep)
    return train_tokenizers(cfg.tokenizer, list(sub["src"]), list(sub["tgt"]))


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
