"""The report of a sweep: per-row BLEU statistics over seeds, sacrebleu's paired
significance tests, and their page (``report.md``; the plots are in ``plots.py``).

It works on plain results (dicts of scores, lists of lines); ``compare.py`` runs the
sweep and gathers them.
"""

from __future__ import annotations

import logging
import statistics
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


def pooled_p_values(
    baseline: list[list[str]], system: list[list[str]], refs: list[str], samples: int
) -> dict[str, float]:
    """Both of sacrebleu's paired tests on the seeds' outputs concatenated (seed s of the
    system paired with seed s of the baseline, the references repeated per seed): one
    p-value per row that uses every run, where the per-seed tests give one per seed."""
    base = [line for hyps in baseline for line in hyps]
    mine = [line for hyps in system for line in hyps]
    all_refs = refs * len(baseline)
    return {test: paired_p_value(base, mine, all_refs, test, samples) for test in ("ar", "bs")}


def significant(row: dict, report: dict) -> bool | None:
    """Whether a row differs from the baseline after Bonferroni's correction: its pooled
    p-value (the sweep's test) below alpha / the number of rows compared. None for the
    baseline (and for reports without pooled tests)."""
    pooled = row.get("pooled_p") or {}
    if report["significance"] not in pooled:
        return None
    return pooled[report["significance"]] < report["alpha"] / max(1, report["comparisons"])


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
        "bleu_std": statistics.stdev(bleu) if len(bleu) > 1 else None,  # one seed: none
        "bleu_max": max(bleu),
        "chrf_mean": statistics.fmean(r["chrf"] for r in results),
        "valid_bleu_mean": statistics.fmean(r["valid_bleu"] for r in results),
        "p_values": p_values,
    }


TESTS = {"ar": "approximate randomization", "bs": "paired bootstrap resampling"}


def _row_line(row: dict, report: dict) -> str:
    if row["variant"] == report["baseline"]:
        p_text, pooled, delta, mark = "baseline", "—", "—", "—"
    else:
        below = sum(p < report["alpha"] for p in row["p_values"])
        p_text = ", ".join(f"{p:.3f}" for p in row["p_values"])
        p_text += f" ({below}/{len(row['p_values'])} < {report['alpha']:g})"
        pp = row.get("pooled_p") or {}
        pooled = " / ".join(f"{pp[t]:.4f}" for t in ("ar", "bs") if t in pp) or "—"
        delta = f"{row['delta']:+.2f}"
        mark = {True: "yes", False: "no", None: "—"}[significant(row, report)]
    std = "n/a" if row["bleu_std"] is None else f"{row['bleu_std']:.2f}"
    return (
        f"| {row['variant']} | {row['bleu_mean']:.2f} ± {std} "
        f"({row['bleu_max']:.2f}) | {delta} | {row['chrf_mean']:.2f} | "
        f"{row['valid_bleu_mean']:.2f} | {p_text} | {pooled} | {mark} |"
    )


def markdown(report: dict) -> str:
    test = TESTS[report["significance"]]
    decoding = f"beam {report['beam']}" if report.get("beam") else "decodings as named"
    if report.get("beam") and report.get("length_penalty"):
        decoding += f", length penalty {report['length_penalty']:g}"
    m = report.get("comparisons", len(report["variants"]) - 1)
    alpha = report.get("alpha", 0.05)
    one = len(report["seeds"]) == 1
    lines = [
        f"# Comparison on {report['split']} ({decoding}, seeds "
        f"{', '.join(map(str, report['seeds']))}; baseline: {report['baseline']})",
        "",
        "| variant | BLEU mean ± std (max) | Δ vs baseline | chrF | valid BLEU "
        "| p per seed | pooled p (AR / BS) | significant |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        _row_line(row, {"alpha": alpha, "comparisons": m} | report) for row in report["variants"]
    ]
    lines += [
        "",
        "std: sample standard deviation over seeds"
        + (" (n/a: one seed says nothing of the spread over training seeds)" if one else "")
        + f". p per seed: sacrebleu's paired {test} "
        f"test of BLEU against the baseline run with the same seed. Pooled p: sacrebleu's "
        "approximate randomization (AR) and paired bootstrap resampling (BS) tests on the "
        "seeds' outputs concatenated (each seed paired with the baseline's same seed).",
        f"Significant: pooled {report['significance'].upper()} p below {alpha:g} / {m} = "
        f"{alpha / max(1, m):.4f} (Bonferroni: {m} rows compared with the baseline; at "
        f"{alpha:g} each, about {alpha * m:.2f} of them would pass by chance). The pooled "
        "tests take the sentences of all seeds as one sample: they test these outputs, not "
        "the spread over training seeds, which the std column shows."
        if m
        else "No row to compare with the baseline.",
        f"BLEU signature: {report['signature']}",
        "",
    ]
    return "\n".join(lines)
