"""Forward and backward time of one step-loop recurrent layer (``LoopRNN``: peephole,
layer-normalised, multiplicative cells), float32 or under bf16 autocast.

    python scripts/bench_loop_cells.py CELL HIDDEN BATCH STEPS INPUT [bf16]

Two warm-up passes, then the median of 5 (docs/speed.md, twenty-fifth session).
"""

from __future__ import annotations

import sys
import time

import torch

from s2s.nn.cells import RecurrentStack


def main() -> None:
    torch.manual_seed(0)
    cell = sys.argv[1]
    hidden, batch, steps, inputs = map(int, sys.argv[2:6])
    bf16 = len(sys.argv) > 6 and sys.argv[6] == "bf16"
    stack = RecurrentStack(cell=cell, input_size=inputs, hidden_size=hidden, layers=1)
    x = torch.randn(batch, steps, inputs, requires_grad=True)

    def once() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out, _ = stack(x)
        out.float().pow(2).mean().backward()
        return time.perf_counter() - start

    for _ in range(2):
        once()
    times = sorted(once() for _ in range(5))
    kind = "bf16" if bf16 else "fp32"
    print(f"{cell} {hidden} units, {batch} x {steps}, {kind}: median {times[2] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
