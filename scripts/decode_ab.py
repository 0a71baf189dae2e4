#!/usr/bin/env python
"""Decoding time inside one process, start-up excluded: load a checkpoint, translate the
1,000 sentences of Multi30k test_2016_flickr twice (the first run builds the kernels, as
a single `s2s translate` command does), print the seconds of each run and the BLEU.
Works with this code and with the code before the speed work (3750b5f's `s2s.translate`),
so that the two can be timed alternately, each from its own venv:

  .venv/bin/python scripts/decode_ab.py CKPT [--beam 5] [--batch-size 256]
  env -u PYTHONPATH .venv-3750b5f/bin/python scripts/decode_ab.py OLD_CKPT [--beam 5]

``--shortlist FILE`` (this code only): each batch scores its lexical shortlist's pieces.

This code decodes with `s2s translate`'s default precision (auto); 3750b5f in fp32.
Data: $S2S_DATA/multi30k (default ../shared/data).
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from pathlib import Path

import sacrebleu
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--beam", type=int)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shortlist", help="an s2s shortlist file (this code only)")
    args = parser.parse_args()
    data = Path(os.environ.get("S2S_DATA", Path(__file__).parents[2] / "shared" / "data"))
    src, ref = (
        gzip.open(data / "multi30k" / f"test_2016_flickr.{x}.gz", "rt").read().split("\n")[:-1]
        for x in ("en", "de")
    )
    try:  # this code
        from s2s.decoding.translate import translate
        from s2s.translation.checkpoint import load_for_translation

        options = dict(precision="auto", scores=False)
        code = "this code"
        if args.shortlist:
            from s2s.decoding.shortlist import Shortlist

            options["shortlist"] = Shortlist.load(args.shortlist)
            code = "this code with a shortlist"
    except ImportError:  # 3750b5f
        from s2s.checkpoint import load_for_translation
        from s2s.translate import translate

        options, code = {}, "3750b5f"
    loaded = load_for_translation(args.checkpoint)
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        results = translate(
            loaded.model,
            loaded.src_tok,
            loaded.tgt_tok,
            src,
            reverse_source=loaded.config.data.reverse_source,
            batch_size=args.batch_size,
            beam=args.beam,
            **options,
        )
        runs.append(time.perf_counter() - start)
    bleu = sacrebleu.corpus_bleu([r.texts[0] for r in results], [ref]).score
    search = f"beam {args.beam}" if args.beam else "greedy"
    print(
        f"{code}, {search}, {args.batch_size} sentences a batch, {torch.get_num_threads()} "
        f"threads: first run {runs[0]:.2f} s ({len(src) / runs[0]:.0f} sent/s), second "
        f"{runs[1]:.2f} s; BLEU {bleu:.2f}"
    )


if __name__ == "__main__":
    main()
