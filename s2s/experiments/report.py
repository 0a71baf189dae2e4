"""The report of a sweep: per-variant BLEU statistics over seeds, sacrebleu's
paired significance test, and their page (``report.md``) and plot (``compare.png``).

It works on plain results (dicts of scores, lists of lines); ``compare.py`` runs the
sweep and gathers them.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any


def paired_p_value(
    baseline: list[str], system: list[str], refs: list[str], test: str, samples: int
) -> float:
    """sacrebleu's paired test of BLEU: the p-value that ``system`` differs from
    ``baseline`` by chance (seeded by SACREBLEU_SEED, 12345 by default).

    sacrebleu follows MultEval in counting only strictly larger shuffled differences,
    which gives a system with exactly the baseline's BLEU p = 1 / (n + 1), i.e.
    "significant". A zero difference is no evidence of one: we report p = 1 there."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    if BLEU().corpus_score(system, [refs]).score == BLEU().corpus_score(baseline, [refs]).score:
        return 1.0

    quiet = logging.getLogger("sacrebleu")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        test_ = PairedTest(
            [("baseline", baseline), ("system", system)],
            {"BLEU": BLEU()},
            references=[refs],
            test_type=test,
            n_samples=samples,
        )
        _, scores = test_()
    finally:
        quiet.setLevel(level)
    return float(scores["BLEU"][1].p_value)


def variant_row(
    variant: str, overrides: dict[str, Any], results: list[dict], p_values: list[float]
) -> dict:
    """A variant's line of the report from its runs' results (one per seed): BLEU mean,
    sample std, max, chrF and validation BLEU means, and the paired tests' p-values."""
    bleu = [r["bleu"] for r in results]
    return {
        "variant": variant,
        "overrides": overrides,
        "runs": len(results),
        "bleu": bleu,
        "bleu_mean": statistics.fmean(bleu),
        "bleu_std": statistics.stdev(bleu) if len(bleu) > 1 else 0.0,
        "bleu_max": max(bleu),
        "chrf_mean": statistics.fmean(r["chrf"] for r in results),
        "valid_bleu_mean": statistics.fmean(r["valid_bleu"] for r in results),
        "p_values": p_values,
    }


def markdown(report: dict) -> str:
    test = {"ar": "approximate randomization", "bs": "paired bootstrap"}[report["significance"]]
    lines = [
        f"# Comparison on {report['split']} (beam {report['beam']}, seeds "
        f"{', '.join(map(str, report['seeds']))})",
        "",
        "| variant | BLEU mean ± std (max) | Δ vs baseline | chrF | valid BLEU | p per seed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["variants"]:
        if row["variant"] == report["baseline"]:
            p_text, delta = "baseline", "—"
        else:
            below = sum(p < 0.05 for p in row["p_values"])
            p_text = ", ".join(f"{p:.3f}" for p in row["p_values"])
            p_text += f" ({below}/{len(row['p_values'])} < 0.05)"
            delta = f"{row['delta']:+.2f}"
        lines.append(
            f"| {row['variant']} | {row['bleu_mean']:.2f} ± {row['bleu_std']:.2f} "
            f"({row['bleu_max']:.2f}) | {delta} | {row['chrf_mean']:.2f} | "
            f"{row['valid_bleu_mean']:.2f} | {p_text} |"
        )
    lines += [
        "",
        f"std: sample standard deviation over seeds. p: sacrebleu's paired {test} test of "
        "BLEU against the baseline run with the same seed.",
        f"BLEU signature: {report['signature']}",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["variants"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows)), 3.5))
    xs = range(len(rows))
    ax.bar(xs, [r["bleu_mean"] for r in rows], yerr=[r["bleu_std"] for r in rows], capsize=4)
    for x, row in zip(xs, rows):
        ax.plot([x] * len(row["bleu"]), row["bleu"], "k.", alpha=0.6)
    ax.set_xticks(list(xs), [r["variant"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"{report['split']} BLEU")
    ax.set_title("mean ± std over seeds (dots: runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
