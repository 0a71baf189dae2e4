#!/usr/bin/env python3
"""Where a training update spends its time: torch.profiler over a few updates of a
translation config, after warm-up updates, on the device the config names.

Prints the top operators by self time and the shares of a few families (matrix
multiplies, fused recurrent kernels, element-wise work and copies, softmax and loss,
the optimizer), with the machine's bf16 capability, so that profiles of different
shapes and code versions can be read side by side. Nothing is written to the run
folder but a scratch run (deleted afterwards).

Shapes: ``default`` (configs/multi30k_en_de.yaml as it is) and ``onmt`` (OpenNMT-py's
default RNN shape: one bidirectional layer of 2 x 128, 1-layer 256 decoder, additive
attention, input feeding, 64-sentence batches, Adam 1e-3, no label smoothing, untied
output). Usage:

    S2S_DATA=../shared/data scripts/profile_step.py [--shape onmt] [--steps 5]
        [--warmup 3] [--time-only] [KEY=VALUE ...]

``--time-only`` times the updates without the profiler, for A/Bs of two checkouts run
alternately (PYTHONPATH=CHECKOUT).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from s2s import config
from s2s.translation import Trainer

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "default": [],
    "onmt": [  # = RNN_SHAPE in scripts/bench_speed.sh
        "model.encoder.layers=1",
        "model.encoder.hidden_size=128",
        "model.decoder.layers=1",
        "model.decoder.hidden_size=256",
        "model.attention=additive",
        "model.decoder.input_feeding=true",
        "model.tie_target_embeddings=false",
        "model.dropout=0.3",
        "model.embedding_dropout=0.3",
        "data.batch_size=64",
        "data.batch_unit=sentences",
        "train.lr=0.001",
        "train.label_smoothing=0.0",
        "train.loss_norm=sentences",
        "train.scheduled_sampling.decay=constant",
        "train.scheduled_sampling.k=1.0",
        "model.attentional_vector=linear",
    ],
}
# operator families, by name (first match wins)
FAMILIES = [
    ("recurrent kernels", r"lstm|gru|rnn_"),
    ("matrix multiplies", r"addmm|\bmm\b|bmm|matmul|linear|_mkl|onednn"),
    ("softmax and loss", r"softmax|nll|cross_entropy"),
    ("optimizer", r"adam|_foreach|lerp|sqrt|addcdiv|addcmul"),
    ("copies and layout", r"copy|cat|index|select|masked|clone|contiguous|fill|to_copy|pad"),
    ("element-wise", r"add|mul|tanh|sigmoid|div|sub|neg|where|dropout|bernoulli|exp|log"),
]


def family(name: str) -> str:
    low = name.lower()
    for label, pattern in FAMILIES:
        if re.search(pattern, low):
            return label
    return "other"


def bf16_capability() -> str:
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    found = [f for f in ("avx512_bf16", "amx_bf16") if re.search(rf"\b{f}\b", flags)]
    return ", ".join(found) or "no bf16 instructions listed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "multi30k_en_de.yaml"))
    parser.add_argument("--shape", choices=sorted(SHAPES), default="default")
    parser.add_argument("--steps", type=int, default=5, help="profiled (or timed) updates")
    parser.add_argument("--warmup", type=int, default=3, help="updates before profiling")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--time-only",
        action="store_true",
        help="no profiler: print the timed updates' seconds and target tokens/s (for A/Bs)",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = config.load(args.config, SHAPES[args.shape] + args.overrides)
    out = Path(tempfile.mkdtemp(prefix="s2s-profile-"))
    try:
        trainer = Trainer(cfg, out / "run")
        task, p = trainer.task, trainer.progress
        items = task.epoch(0)
        take = iter(items)
        for _ in range(args.warmup):
            trainer._update([task.batch(next(take))])
        tokens = 0

        def run() -> None:
            nonlocal tokens
            for _ in range(args.steps):
                batch = task.batch(next(take))
                tokens += batch.n_tokens
                trainer._update([batch])
                p.step += 1

        if args.time_only:
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            print(
                f"shape {args.shape}, {args.steps} updates: {seconds:.2f} s, "
                f"{tokens / seconds:.0f} target tokens/s"
            )
            return
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        report(prof, args, tokens)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def report(prof, args, tokens: int) -> None:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)  # microseconds
    print(
        f"shape {args.shape}, {args.steps} updates, {tokens} target tokens, "
        f"{torch.get_num_threads()} threads, CPU: {bf16_capability()}"
    )
    print(f"self CPU time {total / 1e6:.2f} s, {tokens / (total / 1e6):.0f} target tokens/s")
    shares = collections.Counter()
    for e in events:
        shares[family(e.key)] += e.self_cpu_time_total
    print("\n| family | share |\n| --- | ---: |")
    for label, value in shares.most_common():
        print(f"| {label} | {100 * value / total:.1f}% |")
    print("\n| operator | calls | self ms | share |\n| --- | ---: | ---: | ---: |")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        share = 100 * e.self_cpu_time_total / total
        ms = e.self_cpu_time_total / 1e3
        print(f"| `{e.key}` | {e.count} | {ms:.1f} | {share:.1f}% |")


if __name__ == "__main__":
    main()
