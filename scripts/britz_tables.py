#!/usr/bin/env python3
"""The tables of docs/britz_multi30k.md: per question, s2s's rows (docs/britz/<question>/
report.json, written by scripts/bench_britz.sh) beside Britz et al. 2017's newstest2013
means (as issue 15 cites them; beam 10 with length penalty 1.0 from the paper's table 7),
and whether each of the paper's orderings of neighbouring rows holds in s2s's means (the
significance column tests each row against the sweep's baseline only).

Usage: scripts/britz_tables.py [DOCS_DIR]   (default docs/britz)"""

import json
import sys
from pathlib import Path

from s2s.experiments.report import significant

# s2s row -> (the paper's variant, its newstest2013 BLEU mean), in the paper's order
PAPER = {
    "cell": [("lstm", "LSTM", 22.22), ("gru", "GRU", 21.78), ("rnn-decoder", "Vanilla-Dec", 15.38)],
    "attention": [
        ("additive", "additive (512)", 22.47),
        ("multiplicative", "multiplicative (512)", 21.78),
        ("none", "none", "9.98-11.57"),
    ],
    "encoder": [
        ("bi-2", "bidirectional 2-layer", 21.78),
        ("uni-2-reversed", "unidirectional 2-layer, reversed", 21.76),
        ("uni-2", "unidirectional 2-layer", 20.98),
    ],
    "decoder": [
        ("dense-4", "8-layer dense residual", 20.97),
        ("residual-4", "8-layer residual", 16.99),
        ("plain-4", "8-layer plain", 1.42),
        ("1-layer", "—", None),
    ],
    "beam": [
        ("beam10-lp1", "beam 10, length penalty 1.0", 21.80),
        ("beam10", "beam 10", 21.57),
        ("beam1", "beam 1", 20.66),
    ],
}


def _sig(row: dict, report: dict) -> str:
    if row["variant"] == report["baseline"]:
        return "baseline"
    p = (row.get("pooled_p") or {}).get(report["significance"])
    if p is None:
        return "—"
    return f"p = {p:.4f}{' *' if significant(row, report) else ''}"


def table(question: str, report: dict) -> list[str]:
    rows = {r["variant"]: r for r in report["variants"]}
    lines = [
        f"| s2s variant | s2s test BLEU mean ± std (max) | Δ vs {report['baseline']} "
        "| pooled test vs baseline | paper's variant | paper BLEU |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    listed = [name for name, _, _ in PAPER[question]]
    order = listed + [v for v in rows if v not in listed]
    paper = {name: (what, bleu) for name, what, bleu in PAPER[question]}
    for name in order:
        if name not in rows:
            continue
        r = rows[name]
        what, bleu = paper.get(name, ("—", None))
        bleu = f"{bleu:.2f}" if isinstance(bleu, float) else bleu or "—"
        delta = "—" if name == report["baseline"] else f"{r['delta']:+.2f}"
        std = "n/a" if r["bleu_std"] is None else f"{r['bleu_std']:.2f}"
        lines.append(
            f"| {name} | {r['bleu_mean']:.2f} ± {std} ({r['bleu_max']:.2f}) "
            f"| {delta} | {_sig(r, report)} | {what} | {bleu} |"
        )
    ranked = [(n, rows[n]["bleu_mean"]) for n, _, b in PAPER[question] if b and n in rows]
    pairs = [
        f"{a} > {b}: {'yes' if ma > mb else 'no'} ({ma:.2f} vs {mb:.2f})"
        for (a, ma), (b, mb) in zip(ranked, ranked[1:])
    ]
    lines += ["", "Paper's ordering in s2s's means: " + "; ".join(pairs) + "."]
    return lines


def main() -> None:
    docs = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/britz")
    for question in PAPER:
        path = docs / question / "report.json"
        if not path.is_file():
            print(f"## {question}\n\n(not run yet: {path} missing)\n")
            continue
        report = json.loads(path.read_text())
        print(f"## {question}\n")
        print("\n".join(table(question, report)) + "\n")


if __name__ == "__main__":
    main()
