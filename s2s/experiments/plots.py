"""The plots of a sweep's report: ``compare.png`` (per row, the BLEU mean with std error
bars, each seed's run as a dot, and a significance marker against the baseline) and
``curves.png`` (validation BLEU against updates, per trained variant)."""

from __future__ import annotations

import statistics
from pathlib import Path

from s2s.experiments.report import significant


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def marker(row: dict, report: dict) -> str:
    """The label over a bar: 'baseline', '*' (significant after Bonferroni) or 'n.s.'."""
    if row["variant"] == report["baseline"]:
        return "baseline"
    return {True: "*", False: "n.s.", None: ""}[significant(row, report)]


def plot_bars(report: dict, path: Path) -> None:
    plt = _pyplot()
    rows = report["variants"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.8))
    xs = list(range(len(rows)))
    means = [r["bleu_mean"] for r in rows]
    colours = ["0.6" if r["variant"] == report["baseline"] else "tab:blue" for r in rows]
    ax.bar(xs, means, yerr=[r["bleu_std"] for r in rows], capsize=4, color=colours)
    for x, row in zip(xs, rows):
        ax.plot([x] * len(row["bleu"]), row["bleu"], "k.", alpha=0.7)
        top = max(row["bleu"] + [row["bleu_mean"] + row["bleu_std"]])
        ax.annotate(
            marker(row, report),
            (x, top),
            ha="center",
            va="bottom",
            fontsize=9,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_xticks(xs, [r["variant"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"{report['split']} BLEU")
    ax.set_ylim(0, max(max(r["bleu"] + [r["bleu_mean"] + r["bleu_std"]]) for r in rows) * 1.15 + 1)
    m = report.get("comparisons", len(rows) - 1)
    ax.set_title(
        f"mean ± std over {len(report['seeds'])} seeds (dots: runs)\n"
        f"*: pooled {report['significance'].upper()} p < {report.get('alpha', 0.05):g} / {m} "
        "(Bonferroni), n.s.: not",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(report: dict, path: Path) -> None:
    """Per trained variant: each seed's validation BLEU (thin) and their mean (thick)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for i, (variant, seeds) in enumerate(report.get("curves", {}).items()):
        colour = f"C{i % 10}"
        by_step: dict[int, list[float]] = {}
        for points in seeds.values():
            if points:
                ax.plot(*zip(*points), color=colour, alpha=0.3, linewidth=0.8)
            for step, bleu in points:
                by_step.setdefault(step, []).append(bleu)
        steps = sorted(s for s, v in by_step.items() if len(v) == len(seeds))
        if steps:
            mean = [statistics.fmean(by_step[s]) for s in steps]
            ax.plot(steps, mean, color=colour, marker="o", markersize=3, label=variant)
    ax.set_xlabel("updates")
    ax.set_ylabel("validation BLEU")
    ax.set_title("validation BLEU (thin: seeds, thick: mean over seeds)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
