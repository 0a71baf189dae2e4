"""``s2s charlm train|sample|probe``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from s2s.cli.io import at_least, encoding_name, output_file
from s2s.cli.progress import training_progress
from s2s.errors import S2SError

log = logging.getLogger("s2s")


def _train_figures(record: dict) -> dict[str, str]:
    return {
        "bits": f"{record['bits']:.4f}",
        "units/s": f"{record['units_per_s']:.0f}",
        "lr": f"{record['lr']:.2g}",
    }


def cmd_charlm(args: argparse.Namespace) -> int:
    from s2s import config
    from s2s.charlm import train_lm
    from s2s.charlm.probe import INNER_FOLDS, probe_files

    if args.action == "train":
        # --text FILE... also takes the KEY=VALUE overrides written after it
        late = [t for t in args.text or [] if "=" in t and not Path(t).exists()]
        texts = [t for t in args.text or [] if t not in late] or None
        cfg = config.load_lm(args.config, [*args.overrides, *late], text=texts)
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem

        with training_progress(cfg.train.max_steps, _train_figures) as on_step:
            result = train_lm(cfg, out, force=args.force, on_step=on_step)
        log.info("done: %d steps, best validation %.4f bits", result["step"], result["best_bits"])
        return 0
    if args.action == "sample":
        return _sample(args)
    if args.action == "visualize":
        return _visualize(args)
    if Path(args.pos).resolve() == Path(args.neg).resolve():
        raise S2SError(f"--pos and --neg name the same file ({args.pos})")
    kinds = tuple(k.strip() for k in args.features.split(",") if k.strip())
    result = probe_files(
        args.checkpoints,
        args.pos,
        args.neg,
        folds=args.folds,
        seed=args.seed,
        kinds=kinds,
        encoding=args.encoding,
        references=not args.no_references,
    )
    print(
        f"probe: {result.texts} texts, {args.folds} stratified folds (seed {args.seed}), "
        f"LM features {'+'.join(result.kinds)} ({result.features}), logistic regression "
        f"with L2 chosen by {INNER_FOLDS}-fold cross-validation in each training part"
    )
    print(result.table())
    return 0


def _sample(args: argparse.Namespace) -> int:
    import torch

    from s2s.charlm import load_lm
    from s2s.charlm.generate import sample

    if args.length < 0:
        raise S2SError("--length must be >= 0")
    model, units, cfg = load_lm(args.checkpoint)
    unseen = sorted({c for c in args.prime if units.kind == "char" and c not in units.chars})
    if unseen:
        log.warning(
            "--prime: %d character(s) this LM never saw (%s) read as its first unit",
            len(unseen),
            "".join(unseen[:10]),
        )
    generator = torch.Generator().manual_seed(args.seed)
    backward = cfg.data.direction == "backward"
    text = sample(
        model,
        units,
        prime=args.prime,
        length=args.length,
        temperature=args.temperature,
        generator=generator,
        backward=backward,
    )
    sys.stdout.write((text + args.prime if backward else args.prime + text) + "\n")
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from s2s.charlm import load_lm
    from s2s.charlm.visualize import probe_units, visualize
    from s2s.data.text import read_raw

    inputs = tuple(p for p in (args.checkpoint, args.text, args.pos, args.neg) if p)
    out = output_file(args.out, inputs=inputs, suffixes=(".png", ".html", ".htm"))
    if args.probe and args.units:
        raise S2SError("give --units or --probe (which picks the units), not both")
    model, units, cfg = load_lm(args.checkpoint)
    backward = cfg.data.direction == "backward"
    encoding = args.encoding or units.encoding
    try:
        text = read_raw(args.text).decode(encoding)[: args.chars]
    except UnicodeDecodeError as err:
        raise S2SError(
            f"{args.text} is not valid {encoding}: {err.reason} (use --encoding)"
        ) from None
    if args.probe:
        if not (args.pos and args.neg):
            raise S2SError("--probe needs --pos and --neg (the labelled files to fit it on)")
        chosen = probe_units(
            model, units, args.pos, args.neg, top=args.top, backward=backward, encoding=encoding
        )
        if len(chosen) < args.top:
            log.warning("--top %d: the top layer has %d units, all drawn", args.top, len(chosen))
        log.info("units with the largest probe weights: %s", ", ".join(map(str, chosen)))
    elif args.units:
        try:
            chosen = list(dict.fromkeys(int(u) for u in args.units.split(",") if u.strip()))
        except ValueError:
            raise S2SError(
                f"--units must be comma-separated integers, got {args.units!r}"
            ) from None
    else:
        raise S2SError("say which units to draw: --units 3,17 or --probe --pos FILE --neg FILE")
    out = visualize(model, units, text, chosen, out, width=args.width, backward=backward)
    print(f"wrote {out} (units {', '.join(map(str, chosen))}, {len(text)} characters)")
    return 0


def add_charlm(sub) -> None:
    p = sub.add_parser(
        "charlm", help="character / byte language models: train, sample, probe, visualize"
    )
    actions = p.add_subparsers(dest="action", required=True)
    _add_train_sample(actions)
    _add_probe(actions)
    _add_visualize(actions)


def _add_train_sample(actions) -> None:
    c = actions.add_parser("train", help="train (resumes an existing run folder)")
    c.add_argument("config", help="YAML config, e.g. configs/charlm_shakespeare.yaml")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    c.add_argument(
        "--text",
        nargs="+",
        metavar="FILE",
        help="train on these text files instead of the config's data.text (any encoding with "
        "model.unit byte; data.documents=lines for one document a line)",
    )
    c.add_argument("--out", help="run folder (default runs/<config name>)")
    c.add_argument("--force", action="store_true", help="start over in a folder of another run")
    c.set_defaults(func=cmd_charlm)
    c = actions.add_parser("sample", help="generate text")
    c.add_argument("checkpoint")
    c.add_argument("--prime", default="", help="text to read first")
    c.add_argument("--length", type=int, default=300, help="units to generate")
    c.add_argument("--temperature", type=at_least(0.0, float), default=0.8, help="0 = argmax")
    c.add_argument("--seed", type=at_least(0, highest=2**63 - 1), default=1)
    c.set_defaults(func=cmd_charlm)


def _add_probe(actions) -> None:
    c = actions.add_parser(
        "probe",
        help="stratified k-fold logistic-regression accuracy on the LM's features of labelled "
        "text, beside a random-init LM and a bag of n-grams",
    )
    c.add_argument(
        "checkpoints",
        nargs="+",
        metavar="checkpoint",
        help="one LM, or several whose features go side by side (a forward and a backward "
        "LM: data.direction)",
    )
    c.add_argument("--pos", required=True, help="file of positive texts, one a line")
    c.add_argument("--neg", required=True, help="file of negative texts, one a line")
    c.add_argument(
        "--encoding", type=encoding_name, help="char units: the files' encoding (bytes need none)"
    )
    c.add_argument("--folds", type=int, default=10)
    c.add_argument(  # scikit-learn's seeds are 32-bit
        "--seed", type=at_least(0, highest=2**32 - 1), default=0, help="seeds the fold split"
    )
    c.add_argument(
        "--features",
        default="mean",
        help="comma-separated, side by side: mean (the top layer's hidden states averaged "
        "over positions), layers (every layer's, averaged: the best on MR, BENCHMARKS.md), "
        "hidden (final hidden state), cell (final cell state, LSTM-type cells)",
    )
    c.add_argument(
        "--no-references",
        action="store_true",
        help="skip the random-init and bag-of-n-grams rows (faster)",
    )
    c.set_defaults(func=cmd_charlm)


def _add_visualize(actions) -> None:
    c = actions.add_parser(
        "visualize", help="draw chosen units' activations over a text (.png or .html)"
    )
    c.add_argument("checkpoint")
    c.add_argument("--text", required=True, help="a text file to read")
    c.add_argument("--out", required=True, help="FILE.png or FILE.html")
    c.add_argument("--units", help="comma-separated unit numbers of the top layer")
    c.add_argument(
        "--probe",
        action="store_true",
        help="draw the --top units a logistic-regression probe on --pos/--neg weighs most",
    )
    c.add_argument("--pos", help="with --probe: positive texts, one a line")
    c.add_argument("--neg", help="with --probe: negative texts, one a line")
    c.add_argument("--top", type=at_least(1), default=4, help="with --probe: how many units")
    c.add_argument(
        "--encoding", type=encoding_name, help="the text file's encoding (default: the LM's)"
    )
    c.add_argument("--chars", type=at_least(1), default=1000, help="draw the first N characters")
    c.add_argument("--width", type=at_least(1, highest=1000), default=80, help="characters per row")
    c.set_defaults(func=cmd_charlm)
