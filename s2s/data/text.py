"""Plain text for character language models: files read as bytes (plain or gzipped),
cut to a byte limit, labelled line files for probes, and the contiguous streams that
truncated backpropagation through time reads."""

from __future__ import annotations

import codecs
import gzip
import zlib
from pathlib import Path

import torch

from s2s.data.files import GZIP_MAGIC
from s2s.errors import DataError


def read_raw(path: str | Path) -> bytes:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a text file")
    if not path.is_file():
        raise DataError(f"text file not found: {path}")
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path} is not a valid gzip file: {err}") from None
    return raw.removeprefix(codecs.BOM_UTF8)  # a byte-order mark is no text


def nonempty_lines(raw: bytes) -> list[bytes]:
    """The lines of ``raw`` that hold more than white space (line ends dropped)."""
    lines = (line.rstrip(b"\r") for line in raw.split(b"\n"))
    return [line for line in lines if line.strip()]


def read_texts(
    paths: tuple[str, ...] | list[str], documents: str, seed: int, encoding: str = "utf-8"
) -> bytes:
    """The files as one text. ``stream``: one after the other (a newline between them
    where a file lacks its last one); ``lines``: their non-empty lines as documents,
    shuffled with ``seed`` (so that held-out text is a sample of all files), one a line,
    split at the byte \\n (which UTF-16 and UTF-32 text, ``encoding``, does not use)."""
    if documents == "lines" and codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        raise DataError(
            f"data.documents: lines splits text at the byte \\n, which {encoding} text "
            "does not use alone: convert it to UTF-8 (iconv -f utf-16 -t utf-8), or use "
            "data.documents: stream"
        )
    raws = [read_raw(p) for p in paths]
    if documents == "stream":
        return b"".join(
            r if r.endswith(b"\n") or i == len(raws) - 1 else r + b"\n" for i, r in enumerate(raws)
        )
    lines = [line for raw in raws for line in nonempty_lines(raw)]
    if not lines:
        raise DataError(f"no non-empty lines in {', '.join(map(str, paths))}")
    order = torch.randperm(len(lines), generator=torch.Generator().manual_seed(seed))
    return b"".join(lines[i] + b"\n" for i in order.tolist())


def cut(raw: bytes, limit: int, encoding: str | None) -> bytes:
    """The first ``limit`` bytes, less a character the cut split in two (char units)."""
    head = raw[:limit]
    if encoding is None or len(head) == len(raw):
        return head
    for drop in range(4):
        try:
            head[: len(head) - drop].decode(encoding)
            return head[: len(head) - drop]
        except UnicodeDecodeError:
            continue
    return head  # invalid earlier on: reported where the text is decoded


def streams(ids: list[int], count: int, name: str) -> torch.Tensor:
    """``ids`` cut into ``count`` contiguous rows of equal length (the rest dropped)."""
    width = len(ids) // count
    if width < 2:
        raise DataError(
            f"the {name} text has {len(ids)} units: too few for {count} streams "
            "(lower train.batch_size or use more text)"
        )
    return torch.tensor(ids[: width * count], dtype=torch.long).view(count, width)


def read_labelled(pos: str | Path, neg: str | Path) -> tuple[list[bytes], list[int]]:
    """Non-empty lines of two files (raw bytes, any encoding), labelled 1 and 0."""
    texts, labels = [], []
    for path, label in ((pos, 1), (neg, 0)):
        lines = nonempty_lines(read_raw(path))
        if not lines:
            raise DataError(f"{path} has no non-empty lines")
        texts += lines
        labels += [label] * len(lines)
    return texts, labels
