"""Reading parallel text: line-aligned files ``PREFIX.LANG`` (plain or gzipped, known
by their first bytes), or a Hugging Face ``datasets`` hub dataset where a prefix names
an unset ``${VAR}`` and ``data.hub`` is set. Lines are split on ``\\n`` only, so
alignment never depends on exotic Unicode line separators; text that looks like UTF-16
or UTF-32 read as another encoding is refused, not read as garbage.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

from s2s.config import DataConfig, unset_variables
from s2s.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def split_lines(raw: bytes, encoding: str, name: str) -> list[str]:
    """Decode ``raw`` and split it on ``\\n`` (a trailing newline ends the last line;
    a ``\\r`` before it is dropped; a leading byte-order mark is dropped). ``name`` says
    where the bytes came from. Text that looks like UTF-16 or UTF-32 read in another
    encoding is refused (latin-1 would read it, as garbage, without an error)."""
    wide = _wide_encoding(raw, encoding)
    if wide:
        raise DataError(
            f"{name} looks like {wide} text ({_wide_evidence(raw)}), not {encoding}: "
            f"set data.encoding or --encoding to {wide.split()[0]}"
        )
    if b"\n" not in raw and raw.count(b"\r") > 1:
        raise DataError(
            f"{name} ends its lines with \\r alone (old Mac style), not \\n: "
            "convert its line ends (e.g. tr '\\r' '\\n')"
        )
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{name} line {line}: bytes that are not valid {encoding} "
            "(set data.encoding or --encoding, e.g. latin-1)"
        ) from None
    if _utf8_read_otherwise(raw, encoding):
        log.warning(
            "%s is read as %s but is valid UTF-8 holding non-ASCII text: if it is UTF-8, "
            "its accented letters come out garbled (set data.encoding or --encoding)",
            name,
            encoding,
        )
    lines = text.removeprefix("\ufeff").split("\n")  # a byte-order mark is no text
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# byte-order marks of the wide encodings, UTF-32's first: its little-endian mark begins
# with UTF-16's
WIDE_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
NUL_SHARE = 0.25  # text with more NUL bytes than this among its first 4 KB is wide


def _wide_encoding(raw: bytes, encoding: str) -> str | None:
    """ "utf-16" or "utf-32" where ``raw`` starts with that encoding's byte-order mark,
    "utf-16 or utf-32" where more than NUL_SHARE of its first 4 KB are NUL bytes, and
    ``encoding`` is not a wide one itself; else None."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"unknown encoding '{encoding}'") from None
    if codec.startswith(("utf-16", "utf-32")):
        return None
    for mark, wide in WIDE_MARKS:
        if raw.startswith(mark):
            return wide
    head = raw[:4096]
    if len(head) >= 8 and head.count(0) > NUL_SHARE * len(head):
        return "utf-16 or utf-32"
    return None


def _utf8_read_otherwise(raw: bytes, encoding: str) -> bool:
    """Whether non-ASCII UTF-8 text is read in another encoding (latin-1 reads any
    bytes; real latin-1 text with accents is almost never valid UTF-8)."""
    if codecs.lookup(encoding).name.startswith("utf-") or raw.isascii():
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _wide_evidence(raw: bytes) -> str:
    if any(raw.startswith(mark) for mark, _ in WIDE_MARKS):
        return "it starts with that encoding's byte-order mark"
    head = raw[:4096]
    return f"{100 * head.count(0) / len(head):.0f}% of its first bytes are NUL"


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
        raw = path.read_bytes()
        if raw.startswith(GZIP_MAGIC):  # by its first bytes, whatever the file's suffix
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    return split_lines(raw, encoding, str(path))


GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of every gzip file


def find_file(prefix: str, lang: str) -> Path:
    """``PREFIX.LANG`` or ``PREFIX.LANG.gz`` (``~`` is the home folder, as in a shell)."""
    prefix = str(Path(prefix).expanduser())
    for candidate in (Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")):
        if candidate.is_file():
            return candidate
    hint = ""
    suffix = Path(prefix).suffix  # data/train.en given where data/train is meant
    if suffix and Path(prefix).is_file():
        hint = f": data paths are prefixes, without the language ({prefix.removesuffix(suffix)})"
    raise DataError(f"file not found: {prefix}.{lang} (or {prefix}.{lang}.gz){hint}")


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
    if cfg.src_lang == cfg.tgt_lang:  # a model that copies: rarely what was meant
        log.warning(
            "data.src_lang and data.tgt_lang are both '%s': data.%s's source and target "
            "are the same text",
            cfg.src_lang,
            split,
        )
    missing = unset_variables(prefix)
    if missing:
        if not cfg.hub:
            raise DataError(
                f"data.{split} ({prefix}) names unset environment variable {missing[0]} "
                "and data.hub is empty"
            )
        local = [f"data.{name}" for name in SPLITS if _local(cfg, name)]
        if local:  # a misspelt variable would otherwise swap the data without a word
            log.warning(
                "data.%s names unset %s: it comes from the hub dataset %s, while %s %s "
                "read from local files",
                split,
                missing[0],
                cfg.hub,
                " and ".join(local),
                "is" if len(local) == 1 else "are",
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


def _local(cfg: DataConfig, split: str) -> bool:
    """Whether the split is set and read from local files (its path names no unset
    variable)."""
    prefix = getattr(cfg, split)
    return bool(prefix) and not unset_variables(prefix)


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
    return Pairs(*_hub_columns(ds, cfg))


def _hub_columns(ds, cfg: DataConfig) -> tuple[list[str], list[str]]:
    """The two sides of a hub dataset's split: a column per language, or (as in WMT
    and OPUS datasets) one ``translation`` column of {language: text}. A missing text
    (None) is read as an empty line: dropped and counted with those."""
    columns = ds.column_names
    langs = (cfg.src_lang, cfg.tgt_lang)
    if all(lang in columns for lang in langs):
        sides = [ds[lang] for lang in langs]
    elif "translation" in columns:
        rows = ds["translation"]
        if not all(isinstance(row, dict) and all(lang in row for lang in langs) for row in rows):
            raise DataError(
                f"hub dataset {cfg.hub}: its translation column does not hold "
                f"{cfg.src_lang} and {cfg.tgt_lang} in every row (data.src_lang, data.tgt_lang)"
            )
        sides = [[row[lang] for row in rows] for lang in langs]
    else:
        raise DataError(
            f"hub dataset {cfg.hub} has no column '{cfg.src_lang}' and '{cfg.tgt_lang}' "
            f"(nor a translation column); its columns: {', '.join(columns)}"
        )
    missing = sum(text is None for side in sides for text in side)
    if missing:
        log.warning("hub dataset %s: %d missing texts read as empty lines", cfg.hub, missing)
    return tuple([text if text is not None else "" for text in side] for side in sides)
