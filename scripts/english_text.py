#!/usr/bin/env python
"""Unlabelled English text for char-LM pretraining, built from the packaged data only
(never the network), in MR's own style (lowercased, punctuation split off by spaces, one
document a line), so that an LM pretrained on it for the MR probe reads one kind of text:

  python scripts/english_text.py OUT_DIR

writes OUT_DIR/multi30k.en (the 29,000 English training captions of Multi30k) and
OUT_DIR/shakespeare.en (tinyshakespeare's non-empty lines), both Latin-1 like MR's files.
`configs/charlm_mr_english.yaml` reads them beside MR's two files (labels unread).
Data: $S2S_DATA (default ../shared/data).
"""

from __future__ import annotations

import gzip
import os
import re
import sys
from pathlib import Path

PUNCT = re.compile(r'([.,!?;:"()\[\]])')


def mr_style(line: str) -> str:
    """Lowercased, punctuation split off, single spaces (MR: "it's a charming and often
    affecting journey . ")."""
    return " ".join(PUNCT.sub(r" \1 ", line.lower()).split())


def write(path: Path, lines) -> int:
    kept = [mr_style(x) for x in lines]
    kept = [x for x in kept if x]
    path.write_text("".join(x + "\n" for x in kept), encoding="latin-1", errors="replace")
    return len(kept)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    data = Path(os.environ.get("S2S_DATA", Path(__file__).parents[2] / "shared" / "data"))
    with gzip.open(data / "multi30k" / "train.en.gz", "rt", encoding="utf-8") as f:
        n = write(out / "multi30k.en", f.read().splitlines())
    print(f"{out / 'multi30k.en'}: {n} lines")
    text = (data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    n = write(out / "shakespeare.en", text.splitlines())
    print(f"{out / 'shakespeare.en'}: {n} lines")


if __name__ == "__main__":
    main()
