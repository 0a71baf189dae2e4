#!/usr/bin/env python
"""How closely lexical shortlists reproduce the search over the whole vocabulary: decode
Multi30k's validation set (1,014 sentences) with a checkpoint, greedy and beam 5, without
and with each shortlist, and count the outputs that differ. Chooses a shortlist's size on
validation data, not on the test set.

  .venv/bin/python scripts/shortlist_agreement.py CKPT SHORTLIST...

Data: $S2S_DATA/multi30k (default ../shared/data).
"""

from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path

from s2s.decoding.shortlist import Shortlist
from s2s.decoding.translate import translate
from s2s.translation.checkpoint import load_for_translation


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("shortlists", nargs="+")
    args = parser.parse_args()
    data = Path(os.environ.get("S2S_DATA", Path(__file__).parents[2] / "shared" / "data"))
    src = gzip.open(data / "multi30k" / "val.en.gz", "rt").read().split("\n")[:-1]
    loaded = load_for_translation(args.checkpoint)

    def outputs(shortlist, beam):
        found = translate(
            loaded.model,
            loaded.src_tok,
            loaded.tgt_tok,
            src,
            reverse_source=loaded.config.data.reverse_source,
            batch_size=256,
            beam=beam,
            precision="auto",
            scores=False,
            shortlist=Shortlist.load(shortlist) if shortlist else None,
        )
        return [t.texts[0] for t in found]

    for beam in (None, 5):
        full = outputs(None, beam)
        for path in args.shortlists:
            differ = sum(a != b for a, b in zip(full, outputs(path, beam)))
            print(f"beam {beam or 1}, {path}: {differ} of {len(src)} outputs differ")


if __name__ == "__main__":
    main()
