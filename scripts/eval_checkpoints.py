#!/usr/bin/env python
"""Greedy (or beam) BLEU / chrF of checkpoints on Multi30k val and test_2016_flickr.

Usage: scripts/eval_checkpoints.py CKPT [CKPT ...] [--beam K] [--ensemble]
With --ensemble the checkpoints are decoded together as one ensemble.
Data: $S2S_DATA/multi30k (default ../shared/data).
"""

from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path

from s2s import checkpoint
from s2s.ensemble import Ensemble
from s2s.evaluate import score
from s2s.translate import translate_lines

ROOT = Path(__file__).resolve().parents[1]


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().split("\n")[:-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--beam", type=int)
    parser.add_argument("--ensemble", action="store_true")
    args = parser.parse_args()
    data = Path(os.environ.get("S2S_DATA", ROOT / ".." / "shared" / "data")) / "multi30k"
    splits = {
        name: (read(data / f"{name}.en.gz"), read(data / f"{name}.de.gz"))
        for name in ("val", "test_2016_flickr")
    }
    members = [checkpoint.load_for_translation(p) for p in args.checkpoints]
    groups = [members] if args.ensemble else [[m] for m in members]
    for group in groups:
        checkpoint.check_compatible(group)
        first = group[0]
        model = first.model if len(group) == 1 else Ensemble([m.model for m in group])
        row = []
        for name, (src, ref) in splits.items():
            hyps = translate_lines(
                model,
                first.src_tok,
                first.tgt_tok,
                src,
                reverse_source=first.config.data.reverse_source,
                max_output_ratio=first.config.train.max_output_ratio,
                beam=args.beam,
            )
            s = score(hyps, ref)
            row.append(f"{name} BLEU {s.bleu:.2f} chrF {s.chrf:.2f}")
        label = " + ".join(str(m.path) for m in group)
        print(f"{label}: {'  '.join(row)}  ({'beam ' + str(args.beam) if args.beam else 'greedy'})")


if __name__ == "__main__":
    main()
