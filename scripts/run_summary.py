#!/usr/bin/env python3
"""One line summarising a run folder's metrics.jsonl, for the benchmark scripts:
steps, seconds in training steps, the median training rate, the best validation score.

Usage: scripts/run_summary.py RUN   (a translation run: tokens/s and BLEU;
a character-LM run: units/s and bits, found from the records themselves)"""

import json
import sys
from pathlib import Path


def summary(run: Path) -> str:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    valid = [r for r in records if r["kind"] == "valid"]
    lm = "bits" in valid[0]
    rate = "units_per_s" if lm else "tokens_per_s"
    rates = sorted(r[rate] for r in train)
    best = min(r["bits"] for r in valid) if lm else max(r["bleu"] for r in valid)
    name, digits = ("best_valid_bits", 4) if lm else ("best_valid_bleu", 2)
    return (
        f"steps {train[-1]['step']}  train_seconds {train[-1]['elapsed']:.0f}  "
        f"{rate} median {rates[len(rates) // 2]:.0f}  {name} {best:.{digits}f}"
    )


if __name__ == "__main__":
    print(summary(Path(sys.argv[1])))
