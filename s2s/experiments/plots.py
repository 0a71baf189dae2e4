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


def _bars(ax, report: dict) -> None:
    rows = report["variants"]
    xs = list(range(len(rows)))
    colours = ["0.6" if r["variant"] == report["baseline"] else "tab:blue" for r in rows]
    ax.bar(
        xs,
        [r["bleu_mean"] for r in rows],
        yerr=[r["bleu_std"] or 0.0 for r in rows],
        capsize=4,
        color=colours,
    )
    for x, row in zip(xs, rows):
        ax.plot([x] * len(row["bleu"]), row["bleu"], "k.", alpha=0.7)
        top = max(row["bleu"] + [row["bleu_mean"] + (row["bleu_std"] or 0.0)])
        ax.annotate(marker(row, report), (x, top), ha="center", va="bottom", fontsize=9,
                    xytext=(0, 3), textcoords="offset points")  # fmt: skip
    ax.set_xticks(xs, [r["variant"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"{report['split']} BLEU")
    ax.set_ylim(
        0, max(max(r["bleu"] + [r["bleu_mean"] + (r["bleu_std"] or 0.0)]) for r in rows) * 1.15 + 1
    )
    m = report.get("comparisons", len(rows) - 1)
    ax.set_title(
        f"mean ± std over {len(report['seeds'])} seeds (dots: runs)\n"
        f"*: pooled {report['significance'].upper()} p < {report.get('alpha', 0.05):g} / {m} "
        "(Bonferroni), n.s.: not",
        fontsize=8,
    )


def paired_deltas(report: dict) -> dict[str, list[float]]:
    """Per row but the baseline: its BLEU minus the baseline's, seed by seed."""
    base = next(r["bleu"] for r in report["variants"] if r["variant"] == report["baseline"])
    return {
        r["variant"]: [b - a for a, b in zip(base, r["bleu"])]
        for r in report["variants"]
        if r["variant"] != report["baseline"]
    }


def _deltas(ax, report: dict) -> None:
    deltas = paired_deltas(report)
    xs = list(range(len(deltas)))
    ax.axhline(0.0, color="0.6", linewidth=1)
    for x, values in zip(xs, deltas.values()):
        ax.plot([x] * len(values), values, "k.", alpha=0.7)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        ax.errorbar([x + 0.15], [statistics.fmean(values)], yerr=[std], fmt="o", color="tab:blue",
                    capsize=4, markersize=4)  # fmt: skip
    ax.set_xticks(xs, list(deltas), rotation=30, ha="right")
    ax.set_xlim(-0.6, len(deltas) - 0.4)
    ax.set_ylabel(f"BLEU − {report['baseline']}, same seed")
    ax.set_title("paired differences (dots: seeds;\nblue: mean ± std)", fontsize=8)


def plot_bars(report: dict, path: Path) -> None:
    """Left: the bars; right (with a row to compare): each row's difference from the
    baseline run of the same seed, on an axis that shows differences the bars hide."""
    plt = _pyplot()
    n = len(report["variants"])
    if n < 2:
        fig, ax = plt.subplots(figsize=(4.0, 3.8))
        _bars(ax, report)
    else:
        fig, (ax, right) = plt.subplots(
            1, 2, figsize=(2 * max(3.5, 0.9 * n + 1.5), 3.8), width_ratios=[n, max(2, n - 1)]
        )
        _bars(ax, report)
        _deltas(right, report)
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
