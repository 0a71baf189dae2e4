#!/usr/bin/env python3
"""One recurrent layer, forward and backward, in float32 and under CPU bf16 autocast,
on padded and on packed input: does this CPU's bf16 pay for the fused LSTM kernel, and
on which input? Prints ms per pass (median of ``--repeat``) and the output dtype.

Usage: scripts/bench_rnn_precision.py [--batch 64] [--length 30] [--size 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=30)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    lstm = torch.nn.LSTM(args.size, args.size, batch_first=True, bidirectional=True)
    x = torch.randn(args.batch, args.length, args.size, requires_grad=True)
    lengths = torch.randint(args.length // 3, args.length + 1, (args.batch,))
    lengths[0] = args.length

    def one(packed: bool, bf16: bool) -> torch.dtype:
        inp = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        inp = inp if packed else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out, _ = lstm(inp)
        data = out.data if packed else out
        data.float().sum().backward()
        return data.dtype

    print(f"bidirectional LSTM {args.size}, batch {args.batch} x {args.length}, fwd+bwd")
    print("| input | precision | output dtype | ms |\n| --- | --- | --- | ---: |")
    for packed in (False, True):
        for bf16 in (False, True):
            try:
                dtype = one(packed, bf16)
            except RuntimeError as err:
                print(
                    f"| {'packed' if packed else 'padded'} | {'bf16' if bf16 else 'fp32'} "
                    f"| error: {str(err)[:60]} | |"
                )
                continue
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                one(packed, bf16)
                times.append(1000 * (time.perf_counter() - start))
            print(
                f"| {'packed' if packed else 'padded'} | {'bf16' if bf16 else 'fp32'} | "
                f"{str(dtype).replace('torch.', '')} | {statistics.median(times):.1f} |"
            )


if __name__ == "__main__":
    main()
