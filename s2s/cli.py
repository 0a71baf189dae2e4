"""The ``s2s`` command (level 6): argument parsing and presentation only.

Subcommands: ``train``, ``translate``, ``score``. Errors that s2s raises for bad input
(``S2SError``) are printed as one line, ``s2s: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from s2s.errors import DataError, S2SError

log = logging.getLogger("s2s")


def _read_input(path: str | None, encoding: str) -> list[str]:
    from s2s.data import read_lines, split_lines

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
    if sys.stderr.isatty():
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
    from s2s.train import resolve_device
    from s2s.translate import translate_lines

    payload = checkpoint.load(args.checkpoint)
    cfg = checkpoint.config_of(payload)
    src_tok, tgt_tok = checkpoint.tokenizers_of(payload)
    model = checkpoint.model_of(payload, src_tok.vocab_size, tgt_tok.vocab_size)
    device = resolve_device(args.device)
    model.to(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = _read_input(args.input, args.encoding)
    outputs = translate_lines(
        model,
        src_tok,
        tgt_tok,
        lines,
        reverse_source=cfg.data.reverse_source,
        batch_size=args.batch_size,
        max_output_ratio=cfg.train.max_output_ratio,
        device=device,
    )
    _write_output(args.output, outputs)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from s2s.data import read_lines
    from s2s.evaluate import score

    refs = read_lines(args.ref, args.encoding)
    hyps = _read_input(args.hyp, args.encoding)
    result = score(hyps, refs, published=args.published)
    print(f"BLEU = {result.bleu:.2f}  {result.bleu_signature}")
    print(f"chrF = {result.chrf:.2f}  {result.chrf_signature}")
    print(result.bleu_text)
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

    p = sub.add_parser("translate", help="translate raw text with a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--input", help="source file (default: standard input)")
    p.add_argument("--output", help="output file (default: standard output)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")
    p.add_argument("--encoding", default="utf-8", help="input encoding")
    p.set_defaults(func=cmd_translate)

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
