"""``s2s debug`` and ``s2s compare``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from s2s.cli.io import at_least, output_file
from s2s.errors import DataError

log = logging.getLogger("s2s")
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def cmd_debug(args: argparse.Namespace) -> int:
    from s2s import config
    from s2s.experiments import debug

    if args.check == "source":
        return _source(args, debug)
    cfg = config.load(args.config, args.overrides)
    if args.check == "lr-find":  # checked before the sweep, not after it
        out = output_file(args.out, suffixes=PLOT_SUFFIXES)
    if args.check == "overfit":
        result = debug.overfit(cfg, sentences=args.sentences, steps=args.steps)
        verdict = "reached" if result.reached else "did NOT reach"
        print(
            f"overfit: loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f} after "
            f"{len(result.losses)} steps on {args.sentences} sentences; {verdict} 0.05"
        )
        return 0 if result.reached else 1
    if args.check == "gradcheck":
        worst_all = 0.0
        for cell, attention, diffs in debug.gradcheck_variants(cfg, args.all):
            worst = max(diffs.values())
            worst_all = max(worst_all, worst)
            print(f"# cell {cell}, attention {attention}: max relative difference {worst:.2e}")
            if not args.all:
                for name, value in diffs.items():
                    print(f"{value:.2e}  {name}")
        ok = worst_all < 1e-5
        print(f"gradcheck {'passed' if ok else 'FAILED'}: max relative difference {worst_all:.2e}")
        return 0 if ok else 1
    result = debug.lr_find(cfg, steps=args.steps)
    debug.plot_range_test(result, out)
    print(f"lr-find: suggested learning rate {result.suggestion:.3g} (plot: {args.out})")
    return 0


def _source(args: argparse.Namespace, debug) -> int:
    result = debug.source_check(args.checkpoint, split=args.split, limit=args.limit)
    share = result.share
    ok = share >= args.margin
    print(
        f"source check on {result.pairs} {args.split} pairs: loss per target token "
        f"{result.own:.4f} with their own sources, {result.shuffled:.4f} with shuffled "
        f"ones; the source removes {share:.1%} of the loss"
    )
    if not ok:
        print(
            f"source check FAILED: under {args.margin:.0%}; the model hardly uses its "
            "source (a decoder that acts as a language model: too few updates yet, "
            "misaligned training pairs, or a decoder started from a char LM; try "
            "model.word_dropout)"
        )
    return 0 if ok else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from s2s.experiments.compare import compare, plan, read_sweep
    from s2s.experiments.report import markdown

    sweep = read_sweep(args.sweep)
    missing = [d for d in args.reuse if not Path(d).is_dir()]
    if missing:
        raise DataError(f"--reuse {missing[0]}: no such sweep folder")
    out = Path(args.out) if args.out else Path("runs") / Path(args.sweep).stem
    if args.dry_run:
        for run in plan(sweep, out):
            changes = {**sweep.settings, **sweep.variants[run.variant]}
            shown = " ".join(f"{k}={v}" for k, v in changes.items()) or "(base config)"
            print(f"{run.folder}\tseed {run.seed}\t{shown}")
        return 0
    print(markdown(compare(sweep, out, reuse=args.reuse, force=args.force)), end="")
    log.info("report: %s", out / "report.md")
    return 0


def add_debug(sub) -> None:
    p = sub.add_parser("debug", help="checks for a model that does not learn")
    checks = p.add_subparsers(dest="check", required=True)
    for name, text in (
        ("overfit", "train on one small batch: can the loss reach ~0?"),
        ("gradcheck", "autograd against finite differences on a tiny float64 model"),
        ("lr-find", "learning-rate range test: loss vs lr plot and a suggestion"),
    ):
        c = checks.add_parser(name, help=text)
        c.add_argument("config")
        c.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
        c.set_defaults(func=cmd_debug)
    checks.choices["overfit"].add_argument("--sentences", type=at_least(1), default=32)
    checks.choices["overfit"].add_argument("--steps", type=at_least(1), default=500)
    checks.choices["gradcheck"].add_argument(
        "--all", action="store_true", help="every cell kind x attention kind"
    )
    checks.choices["lr-find"].add_argument("--steps", type=at_least(3), default=100)
    checks.choices["lr-find"].add_argument(
        "--out", default="lr_find.png", help=f"plot file ({', '.join(PLOT_SUFFIXES)})"
    )
    c = checks.add_parser(
        "source", help="a trained model's loss with its own sources against shuffled ones"
    )
    c.add_argument("checkpoint")
    c.add_argument("--split", choices=("valid", "test", "train"), default="valid")
    c.add_argument("--limit", type=at_least(0), default=0, help="the first N pairs (0: all)")
    c.add_argument(
        "--margin",
        type=at_least(0.0, float, highest=1.0),
        default=0.2,
        help="fail when the source removes less than this share of the shuffled loss",
    )
    c.set_defaults(func=cmd_debug)


def add_compare(sub) -> None:
    p = sub.add_parser(
        "compare", help="train variants x seeds and compare their BLEU (mean, std, tests)"
    )
    p.add_argument("sweep", help="sweep file: base config, variants / grid / random, seeds")
    p.add_argument("--out", help="sweep folder (default runs/<sweep name>)")
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs and their settings; train nothing"
    )
    p.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="DIR",
        help="other sweeps' folders: a run whose config one of them finished already is "
        "linked to it, not trained again (a study's shared baseline)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start over the runs whose folders hold another config's run (after a change "
        "to the sweep or its base config); their files move to replaced-TIME/",
    )
    p.set_defaults(func=cmd_compare)
