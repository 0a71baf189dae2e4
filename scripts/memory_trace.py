#!/usr/bin/env python
"""Resident memory through a short training run of the default config, in one process:
RSS after importing torch and s2s and after building the trainer, then RSS and peak RSS
every EVERY updates, and target tokens/s over the updates (no validation). Shows whether
memory grows with the run (new batch shapes) or stays flat.

Usage: S2S_DATA=../shared/data scripts/memory_trace.py [--steps 241] [--every 40]
       [--same-batch] [--trim] [KEY=VALUE ...]
(--same-batch repeats the first batch: one shape throughout; --trim hands freed heap
memory back to the system (glibc's malloc_trim) at each report; steps beyond one epoch
run the next epochs.)
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import tempfile
import time
from pathlib import Path


def rss_mb() -> int:
    with open("/proc/self/status") as handle:
        return next(int(x.split()[1]) // 1024 for x in handle if x.startswith("VmRSS"))


def peak_mb() -> int:
    from s2s.runtime import peak_rss_mb

    return int(peak_rss_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=241)
    parser.add_argument("--every", type=int, default=40)
    parser.add_argument("--same-batch", action="store_true")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) at each report")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    import torch  # noqa: F401  (its share of memory is the first figure)

    print(f"import torch: {rss_mb()} MB")
    from s2s import config
    from s2s.translation import Trainer

    root = Path(__file__).resolve().parents[1]
    cfg = config.load(root / "configs" / "multi30k_en_de.yaml", args.overrides)
    out = Path(tempfile.mkdtemp(prefix="s2s-memory-"))
    try:
        trainer = Trainer(cfg, out / "run")
        task = trainer.task
        print(f"trainer built (data, tokenizers, model): {rss_mb()} MB")
        items = task.epoch(0)
        if args.same_batch:
            items = [items[0]] * args.steps
        epoch = 0
        while len(items) < args.steps and not args.same_batch:  # later epochs, reshuffled
            epoch += 1
            items += task.epoch(epoch)
        trim = ctypes.CDLL("libc.so.6").malloc_trim if args.trim else None
        tokens, start = 0, time.perf_counter()
        for i, item in enumerate(items[: args.steps]):
            batch = task.batch(item)
            tokens += batch.n_tokens
            trainer._update([batch])
            trainer.progress.step += 1
            if i % args.every == 0:
                if trim is not None:
                    trim(0)
                print(f"update {i}: RSS {rss_mb()} MB, peak {peak_mb()} MB", flush=True)
        seconds = time.perf_counter() - start
        print(
            f"{min(args.steps, len(items))} updates: RSS {rss_mb()} MB, peak {peak_mb()} MB, "
            f"{seconds:.1f} s, {tokens / seconds:.0f} target tokens/s"
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
