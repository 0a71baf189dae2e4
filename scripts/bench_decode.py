#!/usr/bin/env python
"""Decoding benchmark on Multi30k test_2016_flickr, all in one process and one run:
greedy, beam 1 and beam K with the same checkpoint(s) (several: an ensemble). Prints
seconds, sentences/s, cased BLEU and chrF of each, whether beam 1 is byte-identical to
greedy, and the beam-K / greedy time ratio.

Usage: scripts/bench_decode.py CKPT [CKPT ...] [--beam 5] [--batch-size 64] [--threads 2]
       [--precision fp32|bf16|auto] [--batch-unit sentences|tokens]
Data: $S2S_DATA/multi30k (default ../shared/data).
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import time
from pathlib import Path

import torch

from s2s.decoding.ensemble import Ensemble
from s2s.decoding.translate import translate
from s2s.runtime import resolve_precision
from s2s.translation import checkpoint
from s2s.translation.scores import score

ROOT = Path(__file__).resolve().parents[1]


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().split("\n")[:-1]


def multi30k() -> Path:
    return Path(os.environ.get("S2S_DATA", ROOT / ".." / "shared" / "data")) / "multi30k"


def load_stepper(paths: list[str]):
    """The first checkpoint (tokenizers, config) and a stepper: its model, or an
    ensemble of all of them."""
    members = [checkpoint.load_for_translation(p) for p in paths]
    checkpoint.check_compatible(members)
    model = members[0].model if len(members) == 1 else Ensemble([m.model for m in members])
    return members[0], model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--length-penalty", type=float, default=0.0)
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--batch-unit", default="sentences", choices=["sentences", "tokens"])
    parser.add_argument("--out", help="folder for the hypothesis files")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = multi30k()
    src = read(data / f"{args.split}.en.gz")
    ref = read(data / f"{args.split}.de.gz")
    first, model = load_stepper(args.checkpoints)
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {len(src)} sentences, batch {args.batch_size} "
        f"{args.batch_unit}, precision {resolve_precision(args.precision, torch.device('cpu'))}"
    )
    outputs = {}
    runs = [
        ("greedy", None, 0.0),
        ("beam1", 1, 0.0),
        (f"beam{args.beam}", args.beam, args.length_penalty),
    ]
    for name, beam, alpha in runs:
        start = time.perf_counter()
        results = translate(
            model,
            first.src_tok,
            first.tgt_tok,
            src,
            reverse_source=first.config.data.reverse_source,
            batch_size=args.batch_size,
            batch_unit=args.batch_unit,
            precision=args.precision,
            max_output_ratio=first.config.train.max_output_ratio,
            beam=beam,
            alpha=alpha,
            scores=False,  # as `s2s translate` without --nbest
        )
        seconds = time.perf_counter() - start
        hyps = [r.texts[0] for r in results]
        outputs[name] = (seconds, hyps)
        s = score(hyps, ref)
        print(
            f"{name:8s} {seconds:7.2f} s  {len(src) / seconds:7.1f} sent/s  "
            f"BLEU {s.bleu:.2f}  chrF {s.chrf:.2f}"
        )
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            Path(args.out, f"{name}.de").write_text("".join(h + "\n" for h in hyps))
    same = outputs["greedy"][1] == outputs["beam1"][1]
    ratio = outputs[f"beam{args.beam}"][0] / outputs["greedy"][0]
    print(f"beam1 byte-identical to greedy: {same}")
    print(f"beam{args.beam} / greedy time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
