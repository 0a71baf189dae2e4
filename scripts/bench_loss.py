#!/usr/bin/env python3
"""The output layer's products, the token loss and the guess pass over its logits,
float32 against bf16, eager against compiled: the three matrix products of a 256 ->
VOCAB layer over ROWS rows (forward, gradient of the input, of the weight), forward +
backward of the summed cross-entropy with label smoothing 0.1, and the row-wise argmax,
over ROWS x VOCAB logits (default 1,900 x 8,000: one default batch). Median of 10 after
warm-up, 2 threads.

Usage: scripts/bench_loss.py [--rows 1900] [--vocab 8000]
"""

from __future__ import annotations

import argparse
import time

import torch

from s2s.nn.fused import TokenLoss


def median_ms(fn, n: int = 10) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[n // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1900)
    parser.add_argument("--vocab", type=int, default=8000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    target = torch.randint(args.vocab, (args.rows,))
    eager, compiled = TokenLoss("never"), TokenLoss("always")
    print(f"{args.rows} x {args.vocab} logits, {torch.get_num_threads()} threads")
    for dtype in (torch.float32, torch.bfloat16):
        kind = str(dtype).removeprefix("torch.")
        h, w = torch.randn(args.rows, 256, dtype=dtype), torch.randn(args.vocab, 256, dtype=dtype)
        g = torch.randn(args.rows, args.vocab, dtype=dtype)
        products = {
            "h @ W^T": lambda h=h, w=w: h @ w.t(),
            "g @ W": lambda g=g, w=w: g @ w,
            "g^T @ h": lambda g=g, h=h: g.t() @ h,
        }
        for name, product in products.items():
            print(f"{name:13s} {kind:9s} {'':9s} {median_ms(product):7.1f} ms")
        x = torch.randn(args.rows, args.vocab).to(dtype).requires_grad_()
        for name, loss in (("eager", eager), ("compiled", compiled)):
            ms = median_ms(lambda loss=loss, x=x: loss(x, target, 0.1).backward())
            print(f"loss fwd+bwd  {kind:9s} {name:9s} {ms:7.1f} ms")
        y = x.detach()
        for name, pick in (("argmax", lambda y=y: y.argmax(-1)), ("max().indices", None)):
            pick = pick or (lambda y=y: y.max(-1).indices)
            print(f"{name:13s} {kind:9s} {'':9s} {median_ms(pick):7.1f} ms")


if __name__ == "__main__":
    main()
