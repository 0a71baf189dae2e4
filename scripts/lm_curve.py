#!/usr/bin/env python3
"""A char-LM run's validation curve: bits and nats per unit against minutes of training
(the engine's ``elapsed``: seconds in training steps; validation and checkpoint saving
are not counted, the wall time is what /usr/bin/time prints in bench_charlm.sh's log), as a
markdown table and, with --png, a plot.

Usage: scripts/lm_curve.py RUN [--png FILE] [--every N]"""

import argparse
import json
import math
from pathlib import Path


def curve(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "valid"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--png", type=Path)
    ap.add_argument("--every", type=int, default=1, help="print every N-th validation")
    args = ap.parse_args()
    points = curve(args.run)
    print("| step | minutes | valid bits | valid nats |\n|---|---|---|---|")
    for i, r in enumerate(points):
        if i % args.every == 0 or i == len(points) - 1:
            nats = r["bits"] * math.log(2)
            print(f"| {r['step']} | {r['elapsed'] / 60:.1f} | {r['bits']:.4f} | {nats:.4f} |")
    best = min(points, key=lambda r: r["bits"])
    print(
        f"best: step {best['step']}, {best['elapsed'] / 60:.1f} min, {best['bits']:.4f} bits "
        f"= {best['bits'] * math.log(2):.4f} nats per unit"
    )
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot([r["elapsed"] / 60 for r in points], [r["bits"] * math.log(2) for r in points])
        ax.set_xlabel("minutes of training")
        ax.set_ylabel("validation nats per unit")
        ax.set_title(str(args.run))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
