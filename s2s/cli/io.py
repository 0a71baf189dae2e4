"""Reading command input and writing command output."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from s2s.errors import DataError


def read_input(path: str | None, encoding: str) -> list[str]:
    from s2s.data.files import read_lines, split_lines

    if path is None or path == "-":
        return split_lines(sys.stdin.buffer.read(), encoding, "standard input")
    return read_lines(path, encoding)


def is_stream(path: str | Path) -> bool:
    """Something that exists but is not a regular file (a FIFO, /dev/stdout, a device):
    written straight into, never replaced by a renamed temporary file."""
    target = Path(path).resolve()
    return target.exists() and not target.is_file()


def write_output(path: str | None, lines: list[str]) -> None:
    """The lines to ``path`` (None or "-": standard output): a regular file (through a
    symbolic link, the file it names) replaced atomically; a stream written into."""
    text = "".join(line + "\n" for line in lines)
    try:
        if path is None or path == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
        elif is_stream(path):
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            from s2s.training.checkpoint import atomic_write

            atomic_write(Path(path).resolve(), lambda h: h.write(text.encode("utf-8")))
    except BrokenPipeError:
        raise
    except OSError as err:
        where = "standard output" if path in (None, "-") else path
        raise DataError(f"cannot write {where}: {err.strerror or err}") from None


def at_least(lowest: float, kind: type = int, highest: float | None = None):
    """An argparse ``type``: a number of ``kind`` no smaller than ``lowest`` (and no
    larger than ``highest``), else an error naming the option (argparse adds its name)."""
    import argparse

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, got {text}")
        if highest is not None and value > highest:
            raise argparse.ArgumentTypeError(f"must be at most {highest}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def encoding_name(text: str) -> str:
    """An argparse ``type``: a text encoding Python knows (``latin-1``, ``utf-8``...)."""
    import argparse
    import codecs

    try:
        codecs.lookup(text)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown text encoding {text!r}") from None
    return text


def output_file(
    path: str | Path, *, inputs: tuple = (), suffixes: tuple[str, ...] = (), what: str = "--out"
) -> Path:
    """``path`` checked as a file a command will write, before it does any work: not a
    folder, in a folder that exists, none of the command's ``inputs`` (which it would
    overwrite), and with one of ``suffixes`` where given."""
    out = Path(path)
    if out.is_dir():
        raise DataError(f"{what} {out} is a folder; name a file")
    if not out.parent.is_dir():
        raise DataError(f"{what} {out}: folder {out.parent} does not exist")
    if out.resolve() in {Path(p).resolve() for p in inputs}:
        raise DataError(f"{what} {out} is one of the inputs; choose another file")
    from s2s.training.runfolder import run_file

    kind = run_file(out)
    if kind:
        raise DataError(
            f"{what} {out} is one of its run's own {kind}s (resuming, s2s average and "
            "s2s compare read them): name another file"
        )
    if suffixes and out.suffix.lower() not in suffixes:
        raise DataError(f"{what} {out} must end in {' or '.join(suffixes)}")
    return out
