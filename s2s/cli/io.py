"""Reading command input and writing command output."""

from __future__ import annotations

import sys
from pathlib import Path

from s2s.errors import DataError


def read_input(path: str | None, encoding: str) -> list[str]:
    from s2s.data.corpus import read_lines, split_lines

    if path is None or path == "-":
        return split_lines(sys.stdin.buffer.read(), encoding, "standard input")
    return read_lines(path, encoding)


def write_output(path: str | None, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if path is None or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from s2s.training.checkpoint import atomic_write

    try:
        atomic_write(Path(path), lambda h: h.write(text.encode("utf-8")))
    except OSError as err:
        raise DataError(f"cannot write {path}: {err.strerror or err}") from None
