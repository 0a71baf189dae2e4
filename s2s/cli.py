"""The ``s2s`` command (level 6): argument parsing and presentation only.

Subcommands: ``train``, ``translate``, ``average``, ``score``, ``debug``. Errors that s2s
raises for bad input (``S2SError``) are printed as one line, ``s2s: error: ...``, with
exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from s2s.errors import DataError, S2SError

log = logging.getLogger("s2s")


def _read_input(path: str | None, encoding: str) -> list[str]:
    from s2s.data.corpus import read_lines, split_lines

    if path is None or path == "-":
        return split_lines(sys.stdin.buffer.read(), encoding, "standard input")
    return read_lines(path, encoding)


def _write_output(path: str | None, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if path is None or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from s2s.checkpoint import atomic_write

    try:
        atomic_write(Path(path), lambda h: h.write(text.encode("utf-8")))
    except OSError as err:
        raise DataError(f"cannot write {path}: {err.strerror or err}") from None


# --------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from s2s import config
    from s2s.train import train

    cfg = config.load(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    bar = None
    if sys.stderr.isatty() and os.environ.get("RANK", "0") == "0":  # one bar under torchrun
        from tqdm import tqdm

        bar = tqdm(total=cfg.train.max_steps or None, unit="step", dynamic_ncols=True)

    def on_step(record: dict) -> None:
        if bar is not None:
            bar.n = record["step"]
            bar.set_postfix(
                loss=f"{record['loss']:.3f}",
                tok_s=f"{record['tokens_per_s']:.0f}",
                lr=f"{record['lr']:.2g}",
                refresh=False,
            )
            bar.refresh()
        else:
            log.info(
                "step %d loss %.3f %.0f tok/s lr %.3g",
                record["step"],
                record["loss"],
                record["tokens_per_s"],
                record["lr"],
            )

    try:
        result = train(cfg, out, force=args.force, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    log.info(
        "done: %d steps, best validation BLEU %.2f, run folder %s",
        result["step"],
        result["best_bleu"],
        out,
    )
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    import torch

    from s2s import checkpoint
    from s2s.decoding.ensemble import Ensemble
    from s2s.decoding.translate import translate
    from s2s.training.runfolder import resolve_device

    if args.nbest < 1 or (args.beam is not None and args.beam < 1):
        raise S2SError("--beam and --nbest must be at least 1")
    if args.max_source_length < 0:
        raise S2SError("--max-source-length must be >= 0 (0 = no limit)")
    if args.nbest > (args.beam or 1):
        raise S2SError(f"--nbest {args.nbest} needs --beam of at least {args.nbest}")
    members = [checkpoint.load_for_translation(p) for p in args.checkpoint]
    checkpoint.check_compatible(members)
    if args.alignments and any(m.config.model.attention == "none" for m in members):
        raise S2SError("--alignments needs a model with attention (model.attention is 'none')")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    for m in members:
        m.model.to(device)
    first = members[0]
    model = first.model if len(members) == 1 else Ensemble([m.model for m in members])
    lines = _read_input(args.input, args.encoding)
    results = translate(
        model,
        first.src_tok,
        first.tgt_tok,
        lines,
        reverse_source=first.config.data.reverse_source,
        batch_size=args.batch_size,
        max_output_ratio=args.max_length_ratio or first.config.train.max_output_ratio,
        device=device,
        beam=args.beam,
        nbest=args.nbest,
        alpha=args.length_penalty,
        normalize=args.length_norm,
        min_len=args.min_length,
        max_src_len=args.max_source_length,
        alignments=bool(args.alignments),
    )
    if args.nbest > 1:
        out = []
        for i, r in enumerate(results):
            pairs = list(zip(r.texts, r.scores))
            pairs += [pairs[-1]] * (args.nbest - len(pairs))  # empty input: N empty lines
            out += [f"{i} ||| {text} ||| {value:.4f}" for text, value in pairs]
    else:
        out = [r.texts[0] for r in results]
    if args.alignments:
        _write_output(args.alignments, [r.alignment for r in results])
    _write_output(args.output, out)
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from s2s import checkpoint

    out = Path(args.out)
    if out.resolve() in {Path(p).resolve() for p in args.checkpoints}:
        raise S2SError(f"--out {out} is one of the inputs; choose another file")
    payload = checkpoint.average(args.checkpoints)
    checkpoint.save(out, payload)
    log.info("averaged %d checkpoints into %s", len(args.checkpoints), out)
    return 0


def cmd_debug(args: argparse.Namespace) -> int:
    from s2s import config
    from s2s.experiments import debug

    cfg = config.load(args.config, args.overrides)
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
    debug.plot_range_test(result, Path(args.out))
    print(f"lr-find: suggested learning rate {result.suggestion:.3g} (plot: {args.out})")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from s2s.data.corpus import read_lines
    from s2s.evaluate import score

    refs = read_lines(args.ref, args.encoding)
    hyps = _read_input(args.hyp, args.encoding)
    result = score(hyps, refs, published=args.published)
    print(f"BLEU = {result.bleu:.2f}  {result.bleu_signature}")
    print(f"chrF = {result.chrf:.2f}  {result.chrf_signature}")
    print(result.bleu_text)
    return 0


def cmd_charlm(args: argparse.Namespace) -> int:
    import torch

    from s2s import config, lmtrain
    from s2s.charlm import sample

    if args.action == "train":
        cfg = config.load_lm(args.config, args.overrides)
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem

        def on_step(record: dict) -> None:
            log.info(
                "step %d %.4f bits per unit %.0f units/s lr %.3g",
                record["step"],
                record["bits"],
                record["units_per_s"],
                record["lr"],
            )

        result = lmtrain.train_lm(cfg, out, force=args.force, on_step=on_step)
        log.info("done: %d steps, best validation %.4f bits", result["step"], result["best_bits"])
        return 0
    if args.action == "sample":
        if args.length < 0:
            raise S2SError("--length must be >= 0")
        model, units, _ = lmtrain.load_lm(args.checkpoint)
        generator = torch.Generator().manual_seed(args.seed)
        text = sample(
            model,
            units,
            prime=args.prime,
            length=args.length,
            temperature=args.temperature,
            generator=generator,
        )
        sys.stdout.write(args.prime + text + "\n")
        return 0
    scores, texts, size = lmtrain.probe_files(
        args.checkpoint,
        args.pos,
        args.neg,
        folds=args.folds,
        seed=args.seed,
        l2=args.l2,
        encoding=args.encoding,
    )
    mean = sum(scores) / len(scores)
    std = (sum((s - mean) ** 2 for s in scores) / max(1, len(scores) - 1)) ** 0.5
    print(
        f"probe accuracy {100 * mean:.2f} ± {100 * std:.2f} % over {len(scores)} folds "
        f"({texts} texts, {size} features, logistic regression, L2 {args.l2:g})"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from s2s.experiments.compare import compare, markdown, plan, read_sweep

    sweep = read_sweep(args.sweep)
    out = Path(args.out) if args.out else Path("runs") / Path(args.sweep).stem
    if args.dry_run:
        for run in plan(sweep, out):
            changes = {**sweep.settings, **sweep.variants[run.variant]}
            shown = " ".join(f"{k}={v}" for k, v in changes.items()) or "(base config)"
            print(f"{run.folder}\tseed {run.seed}\t{shown}")
        return 0
    print(markdown(compare(sweep, out)), end="")
    log.info("report: %s", out / "report.md")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2s", description="Train, translate and score recurrent sequence-to-sequence models."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (resumes an existing run folder)")
    p.add_argument("config", help="YAML config, e.g. configs/multi30k_en_de.yaml")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted config overrides, e.g. model.encoder.cell=gru",
    )
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument(
        "--force",
        action="store_true",
        help="use the folder even if it holds a run with another config (starts over)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "translate", help="translate raw text with a checkpoint (several: an ensemble)"
    )
    p.add_argument("checkpoint", nargs="+", help="checkpoint(s); several are ensembled")
    p.add_argument("--input", help="source file (default: standard input)")
    p.add_argument("--output", help="output file (default: standard output)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")
    p.add_argument("--encoding", default="utf-8", help="input encoding")
    p.add_argument("--beam", type=int, help="beam size (default: greedy search)")
    p.add_argument(
        "--nbest",
        type=int,
        default=1,
        help="N hypotheses per input, as lines 'INDEX ||| TEXT ||| SCORE' (needs --beam >= N)",
    )
    p.add_argument(
        "--length-penalty",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="GNMT length penalty alpha (Wu et al. 2016); 0 = off",
    )
    p.add_argument(
        "--length-norm",
        action="store_true",
        help="rank hypotheses by log-probability per token (overrides --length-penalty)",
    )
    p.add_argument("--min-length", type=int, default=0, help="no EOS before this many tokens")
    p.add_argument(
        "--max-length-ratio",
        type=float,
        default=0.0,
        help="at most RATIO x source length + 10 tokens (default: the model's config)",
    )
    p.add_argument(
        "--max-source-length",
        type=int,
        default=250,
        metavar="N",
        help="cut longer source lines to N tokens, with a warning (0 = no limit)",
    )
    p.add_argument(
        "--alignments",
        metavar="FILE",
        help="write hard attention alignments 'SRC-TGT' (subword positions) to FILE",
    )
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("average", help="average the parameters of checkpoints of one model")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--out", required=True, help="the averaged checkpoint")
    p.set_defaults(func=cmd_average)

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
    checks.choices["overfit"].add_argument("--sentences", type=int, default=32)
    checks.choices["overfit"].add_argument("--steps", type=int, default=500)
    checks.choices["gradcheck"].add_argument(
        "--all", action="store_true", help="every cell kind x attention kind"
    )
    checks.choices["lr-find"].add_argument("--steps", type=int, default=100)
    checks.choices["lr-find"].add_argument("--out", default="lr_find.png", help="plot file")

    p = sub.add_parser(
        "compare", help="train variants x seeds and compare their BLEU (mean, std, tests)"
    )
    p.add_argument("sweep", help="sweep file: base config, variants / grid / random, seeds")
    p.add_argument("--out", help="sweep folder (default runs/<sweep name>)")
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs and their settings; train nothing"
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("charlm", help="character / byte language models: train, sample, probe")
    actions = p.add_subparsers(dest="action", required=True)
    c = actions.add_parser("train", help="train (resumes an existing run folder)")
    c.add_argument("config", help="YAML config, e.g. configs/charlm_shakespeare.yaml")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    c.add_argument("--out", help="run folder (default runs/<config name>)")
    c.add_argument("--force", action="store_true", help="start over in a folder of another run")
    c.set_defaults(func=cmd_charlm)
    c = actions.add_parser("sample", help="generate text")
    c.add_argument("checkpoint")
    c.add_argument("--prime", default="", help="text to read first")
    c.add_argument("--length", type=int, default=300, help="units to generate")
    c.add_argument("--temperature", type=float, default=0.8, help="0 = argmax")
    c.add_argument("--seed", type=int, default=1)
    c.set_defaults(func=cmd_charlm)
    c = actions.add_parser(
        "probe", help="k-fold logistic-regression accuracy on the LM's features of labelled text"
    )
    c.add_argument("checkpoint")
    c.add_argument("--pos", required=True, help="file of positive texts, one a line")
    c.add_argument("--neg", required=True, help="file of negative texts, one a line")
    c.add_argument("--encoding", help="char units: the files' encoding (bytes need none)")
    c.add_argument("--folds", type=int, default=10)
    c.add_argument("--seed", type=int, default=0, help="seeds the fold split")
    c.add_argument("--l2", type=float, default=1e-3, help="L2 penalty of the regression")
    c.set_defaults(func=cmd_charlm)

    p = sub.add_parser("score", help="BLEU and chrF with sacrebleu")
    p.add_argument("--ref", required=True, help="reference file (plain or .gz)")
    p.add_argument("--hyp", help="hypothesis file (default: standard input)")
    p.add_argument(
        "--published",
        action="store_true",
        help="lowercase, --tokenize none: for pre-tokenized text as papers score it",
    )
    p.add_argument("--encoding", default="utf-8")
    p.set_defaults(func=cmd_score)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Arguments, with KEY=VALUE overrides accepted before and after options
    (``s2s train CONFIG --out DIR key=value``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    late = [x for x in extra if "=" in x and not x.startswith("-")]
    if late and hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *late]
        extra = [x for x in extra if x not in late]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except S2SError as err:
        print(f"s2s: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("s2s: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
