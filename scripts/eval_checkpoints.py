#!/usr/bin/env python
"""Greedy (or beam) BLEU / chrF of checkpoints on Multi30k val and test_2016_flickr.

Usage: scripts/eval_checkpoints.py CKPT [CKPT ...] [--beam K] [--ensemble]
With --ensemble the checkpoints are decoded together as one ensemble.
Data: $S2S_DATA/multi30k (default ../shared/data).
"""

from __future__ import annotations

import argparse

from bench_decode import load_stepper, multi30k, read

from s2s.decoding.translate import translate_lines
from s2s.translation.scores import score


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--beam", type=int)
    parser.add_argument("--ensemble", action="store_true")
    args = parser.parse_args()
    data = multi30k()
    splits = {
        name: (read(data / f"{name}.en.gz"), read(data / f"{name}.de.gz"))
        for name in ("val", "test_2016_flickr")
    }
    groups = [args.checkpoints] if args.ensemble else [[p] for p in args.checkpoints]
    for group in groups:
        first, model = load_stepper(group)
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
        label = " + ".join(group)
        print(f"{label}: {'  '.join(row)}  ({'beam ' + str(args.beam) if args.beam else 'greedy'})")


if __name__ == "__main__":
    main()
