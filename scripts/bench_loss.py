#!/usr/bin/env python3
"""The output layer's products, the token loss and the guess pass over its logits,
float32 against bf16, eager against compiled: the three matrix products of a 256 ->
VOCAB layer over ROWS rows (forward, gradient of the input, of the weight), forward +
backward of the summed cross-entropy with label smoothing 0.1, and the row-wise argmax,
over ROWS x VOCAB logits (default 1,900 x 8,000: one default batch). Then the step as
training runs it (float32 weights, bf16 autocast where the CPU has it, compiled loss,
the allocator and kernel cache as a run sets them): output layer and loss over all rows
at once against ``linear_cross_entropy``'s chunks, alternating ROUNDS times, with the
resident memory each adds at its peak (VmHWM after malloc_trim and a reset); the
chunks with the C loss kernel (``s2s/nn/xent.c``) and without it. Median of 10 after
warm-up, 2 threads.

Usage: scripts/bench_loss.py [--rows 1900] [--vocab 8000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import ctypes
import time

import torch

from s2s.nn import xent
from s2s.nn.fused import TokenLoss, linear_cross_entropy
from s2s.runtime import cap_kernel_cache, cpu_has_bf16, return_large_blocks


def _status(key: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(x.split()[1]) // 1024 for x in handle if x.startswith(key))


def transient_mb(fn) -> int:
    """Resident memory (MB) ``fn`` adds at its peak: VmHWM after handing freed heap
    back (glibc's malloc_trim) and resetting it (Linux)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # VmHWM := VmRSS
    before = _status("VmRSS")
    fn()
    return _status("VmHWM") - before


def whole_against_chunked(rows: int, vocab: int, loss: TokenLoss, rounds: int) -> None:
    layer = torch.nn.Linear(256, vocab)
    h = torch.randn(rows, 256, requires_grad=True)
    target = torch.randint(vocab, (rows,))
    kind = "bf16" if cpu_has_bf16() else "float32"
    real = xent._kernel

    def chunked(native: bool):
        def step():
            xent._kernel = real if native else (lambda: None)
            try:
                linear_cross_entropy(h, layer, target, 0.1, loss).backward()
            finally:
                xent._kernel = real

        return step

    steps = {
        "whole": lambda: loss(layer(h), target, 0.1).backward(),
        "chunked": chunked(False),
        "chunked+C": chunked(True),  # the C loss kernel (s2s/nn/xent.c), where built
    }
    for _ in range(rounds):
        for name, step in steps.items():
            if name == "chunked+C" and real() is None:
                continue
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "bf16"):
                ms = median_ms(step)
                mb = transient_mb(step)
            print(f"layer + loss  {kind:9s} {name:9s} {ms:7.1f} ms  +{mb} MB at peak")


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
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    return_large_blocks()
    cap_kernel_cache()
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
        if xent.usable(x.device, dtype):  # the loss and its gradient in one kernel call
            out = torch.empty_like(x)
            ms = median_ms(lambda x=x, out=out: xent.loss_and_grad_into(x, target, 0.1, out))
            print(f"loss fwd+bwd  {kind:9s} {'C kernel':9s} {ms:7.1f} ms")
        y = x.detach()
        for name, pick in (("argmax", lambda y=y: y.argmax(-1)), ("max().indices", None)):
            pick = pick or (lambda y=y: y.max(-1).indices)
            print(f"{name:13s} {kind:9s} {'':9s} {median_ms(pick):7.1f} ms")
    whole_against_chunked(args.rows, args.vocab, compiled, args.rounds)


if __name__ == "__main__":
    main()
