"""The table of scripts/bench_sampled.sh: per arm, validation BLEU and loss, test BLEU
greedy and beam 5, training seconds (no validation) and wall time, mean and standard
deviation over the seeds. Usage: python scripts/sampled_table.py OUT"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

ARMS = ("same-k0", "same-k2048", "rnn-k0", "rnn-k1024")


def last(path: Path, kind: str) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind][-1]


def wall_seconds(log: Path) -> float:
    text = re.search(r"Elapsed \(wall clock\).*: (\S+)", log.read_text()).group(1)
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def main(out: Path) -> None:
    bleu = {}
    for line in (out / "bleu.txt").read_text().splitlines():
        name, beam, value = line.split()
        bleu[name, beam] = float(value)
    cols = ("valid BLEU", "valid loss", "test greedy", "test beam 5", "train s", "wall s")
    print("| arm | seeds | " + " | ".join(cols) + " |")
    print("| --- " * (len(cols) + 2) + "|")
    for arm in ARMS:
        names = [n for n in (arm, f"{arm}-s2", f"{arm}-s3") if (out / f"{n}.done").exists()]
        if not names:
            continue
        values = []
        for n in names:
            valid, train = (
                last(out / n / "metrics.jsonl", "valid"),
                last(out / n / "metrics.jsonl", "train"),
            )
            values.append(
                (
                    valid["bleu"],
                    valid["loss"],
                    bleu[n, "beam1"],
                    bleu[n, "beam5"],
                    train["elapsed"],
                    wall_seconds(out / f"{n}.log"),
                )
            )
        cells = []
        for i in range(len(cols)):
            xs = [v[i] for v in values]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            digits = 3 if i == 1 else (0 if i >= 4 else 2)
            cells.append(f"{statistics.mean(xs):.{digits}f} ± {sd:.{digits}f}")
        print(f"| {arm} | {len(names)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
