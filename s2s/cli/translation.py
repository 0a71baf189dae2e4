"""``s2s train``, ``translate``, ``shortlist``, ``average`` and ``score``: arguments in,
results out; the work is the library's."""

from __future__ import annotations

import argparse
import gc
import logging
from pathlib import Path

from s2s.cli.io import (
    at_least,
    encoding_name,
    is_stream,
    output_file,
    read_input,
    write_output,
)
from s2s.cli.progress import training_progress
from s2s.errors import S2SError

# sacrebleu's BLEU tokenizers (named here: importing sacrebleu would slow every command's
# start; tests/test_cli.py checks the names against sacrebleu.BLEU.TOKENIZERS)
TOKENIZERS = (
    "13a",
    "char",
    "flores101",
    "flores200",
    "intl",
    "ja-mecab",
    "ko-mecab",
    "none",
    "spm",
    "zh",
)

log = logging.getLogger("s2s")


def _train_figures(record: dict) -> dict[str, str]:
    return {
        "loss": f"{record['loss']:.3f}",
        "tok/s": f"{record['tokens_per_s']:.0f}",
        "lr": f"{record['lr']:.2g}",
    }


def cmd_train(args: argparse.Namespace) -> int:
    from s2s import config
    from s2s.translation import train

    cfg = config.load(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    with training_progress(cfg.train.max_steps or None, _train_figures) as on_step:
        result = train(cfg, out, force=args.force, on_step=on_step)
    log.info(
        "done: %d steps, best validation BLEU %.2f, run folder %s",
        result["step"],
        result["best_bleu"],
        out,
    )
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    import torch

    from s2s.decoding.ensemble import Ensemble
    from s2s.decoding.shortlist import Shortlist
    from s2s.training.runfolder import resolve_device
    from s2s.translation import checkpoint

    if args.nbest < 1 or (args.beam is not None and args.beam < 1):
        raise S2SError("--beam and --nbest must be at least 1")
    if args.max_source_length < 0:
        raise S2SError("--max-source-length must be >= 0 (0 = no limit)")
    if args.nbest > (args.beam or 1):
        raise S2SError(f"--nbest {args.nbest} needs --beam of at least {args.nbest}")
    _check_outputs(args)
    members = [checkpoint.load_for_translation(p) for p in args.checkpoint]
    checkpoint.check_compatible(members)
    if args.alignments and any(m.config.model.attention == "none" for m in members):
        raise S2SError("--alignments needs a model with attention (model.attention is 'none')")
    shortlist = Shortlist.load(args.shortlist) if args.shortlist else None
    device = resolve_device(args.device, "--device")
    if args.threads:
        torch.set_num_threads(args.threads)
    for m in members:
        m.model.to(device)
    first = members[0]
    model = first.model if len(members) == 1 else Ensemble([m.model for m in members])
    lines = read_input(args.input, args.encoding)
    results = _translate_lines(args, model, first, lines, device, shortlist)
    if args.nbest > 1:
        out = []
        for i, r in enumerate(results):
            pairs = list(zip(r.texts, r.scores))
            pairs += [pairs[-1]] * (args.nbest - len(pairs))  # empty input: N empty lines
            out += [f"{i} ||| {text} ||| {value:.4f}" for text, value in pairs]
    else:
        out = [r.texts[0] for r in results]
    if args.alignments:
        write_output(args.alignments, [r.alignment for r in results])
    write_output(args.output, out)
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """--output and --alignments, before any decoding: writable files, neither one of
    the command's inputs (checkpoints, --input, --shortlist) nor the other."""
    inputs = (*args.checkpoint, args.input, args.shortlist)
    inputs = tuple(p for p in inputs if p and p != "-")
    named = [(o, p) for o, p in (("--output", args.output), ("--alignments", args.alignments))]
    files = [(o, p) for o, p in named if p and p != "-" and not is_stream(p)]
    for option, path in files:
        output_file(path, inputs=inputs, what=option)
    if len(files) == 2 and Path(files[0][1]).resolve() == Path(files[1][1]).resolve():
        raise S2SError("--output and --alignments name the same file")


def _translate_lines(args: argparse.Namespace, model, first, lines, device, shortlist):
    from s2s.decoding.translate import translate

    # What is loaded by now (torch's modules, the model) lives as long as the command:
    # frozen, the collector never walks it again; a full collection over it cost about
    # 80 ms of the decoding time (docs/speed.md).
    gc.freeze()
    try:
        return translate(
            model,
            first.src_tok,
            first.tgt_tok,
            lines,
            reverse_source=first.config.data.reverse_source,
            batch_size=args.batch_size,
            batch_unit=args.batch_unit,
            max_output_ratio=args.max_length_ratio or first.config.train.max_output_ratio,
            device=device,
            beam=args.beam,
            nbest=args.nbest,
            alpha=args.length_penalty,
            normalize=args.length_norm,
            min_len=args.min_length,
            max_src_len=args.max_source_length,
            alignments=bool(args.alignments),
            precision=args.precision,
            scores=args.nbest > 1,  # printed only with n-best lists
            shortlist=shortlist,
        )
    finally:
        gc.unfreeze()


def cmd_shortlist(args: argparse.Namespace) -> int:
    from s2s.data.corpus import source_ids
    from s2s.data.files import load_split, read_parallel
    from s2s.decoding import shortlist
    from s2s.translation import checkpoint

    if bool(args.src) != bool(args.tgt):
        raise S2SError("--src and --tgt go together (the parallel text to count over)")
    inputs = (args.checkpoint, *(path for path in (args.src, args.tgt) if path))
    out = output_file(args.out, inputs=inputs)
    loaded = checkpoint.load_for_translation(args.checkpoint)
    data = loaded.config.data
    if args.src:
        src, tgt = read_parallel(Path(args.src), Path(args.tgt), args.encoding)
    else:
        pairs = load_split(data, "train")
        src, tgt = list(pairs["src"]), list(pairs["tgt"])
    made = shortlist.build(
        source_ids(loaded.src_tok, src, data.reverse_source),
        loaded.tgt_tok.encode(tgt),
        loaded.src_tok.vocab_size,
        loaded.tgt_tok.vocab_size,
        top=args.top,
        frequent=args.frequent,
    )
    made.digest = shortlist.vocab_digest(loaded.src_tok, loaded.tgt_tok)
    made.save(out)
    log.info(
        "shortlist of %d pairs: %d target pieces per source piece, %d always; %s",
        len(src),
        made.table.shape[1],
        len(made.frequent),
        args.out,
    )
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from s2s.translation import checkpoint

    out = output_file(args.out, inputs=tuple(args.checkpoints))
    payload = checkpoint.average(args.checkpoints)
    checkpoint.save(out, payload)
    log.info("averaged %d checkpoints into %s", len(args.checkpoints), out)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from s2s.data.files import read_lines
    from s2s.translation.scores import score

    if args.published and (args.tokenize or args.lowercase):
        raise S2SError("--published sets the tokenizer (none) and lowercasing itself")
    refs = [read_lines(path, args.encoding) for path in args.ref]
    hyps = read_input(args.hyp, args.encoding)
    result = score(
        hyps,
        refs,
        published=args.published,
        tokenize=args.tokenize,
        lowercase=args.lowercase,
        chrf_word_order=2 if args.chrf_plus else 0,
    )
    print(f"BLEU = {result.bleu:.2f}  {result.bleu_signature}")
    print(f"chrF = {result.chrf:.2f}  {result.chrf_signature}")
    print(result.bleu_text)
    return 0


def add_train(sub) -> None:
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


def add_translate(sub) -> None:
    p = sub.add_parser(
        "translate", help="translate raw text with a checkpoint (several: an ensemble)"
    )
    p.add_argument("checkpoint", nargs="+", help="checkpoint(s); several are ensembled")
    p.add_argument("--input", help="source file (default: standard input)")
    p.add_argument("--output", help="output file (default: standard output)")
    p.add_argument(
        "--batch-size",
        type=at_least(1),
        default=256,
        help="sentences (or, with --batch-unit tokens, padded source tokens) per batch; "
        "on a 2-core CPU 256 sentences decoded faster than 64 (docs/speed.md)",
    )
    p.add_argument(
        "--batch-unit",
        default="sentences",
        choices=["sentences", "tokens"],
        help="what --batch-size counts (tokens: padded source tokens)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=at_least(0), default=0, help="CPU threads (0 = default)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="auto (default): a bfloat16 copy of the model decodes where the CPU "
        "(avx512_bf16/AMX) or GPU has bf16 at hardware speed, else fp32; bf16: always; "
        "fp32: never. bf16 outputs may differ from fp32 in a few tokens (test BLEU within "
        "about 0.1: docs/speed.md)",
    )
    p.add_argument("--encoding", type=encoding_name, default="utf-8", help="input encoding")
    p.add_argument(
        "--shortlist",
        metavar="FILE",
        help="score only each batch's likely target pieces (from s2s shortlist): faster "
        "on a CPU, outputs may differ in a few tokens (docs/speed.md)",
    )
    _add_search_options(p)
    p.set_defaults(func=cmd_translate)


def _add_search_options(p) -> None:
    """``s2s translate``'s options of the search itself."""
    p.add_argument("--beam", type=int, help="beam size (default: greedy search)")
    p.add_argument(
        "--nbest",
        type=int,
        default=1,
        help="N hypotheses per input, as lines 'INDEX ||| TEXT ||| SCORE' (needs --beam >= N)",
    )
    p.add_argument(
        "--length-penalty",
        type=at_least(0.0, float),
        default=0.0,
        metavar="ALPHA",
        help="GNMT length penalty alpha (Wu et al. 2016); 0 = off",
    )
    p.add_argument(
        "--length-norm",
        action="store_true",
        help="rank hypotheses by log-probability per token (overrides --length-penalty)",
    )
    p.add_argument(
        "--min-length", type=at_least(0), default=0, help="no EOS before this many tokens"
    )
    p.add_argument(
        "--max-length-ratio",
        type=at_least(0.0, float),
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


def add_shortlist(sub) -> None:
    p = sub.add_parser(
        "shortlist",
        help="count, for each source piece, the target pieces likely in its translation "
        "(for s2s translate --shortlist)",
    )
    p.add_argument("checkpoint", help="the model the shortlist is for")
    p.add_argument("--out", required=True, help="the shortlist file to write")
    p.add_argument(
        "--top",
        type=at_least(1),
        default=200,
        help="target pieces kept per source piece (default 200: on Multi30k's validation "
        "set 3 of 1,014 greedy outputs differ from the full search, 67 with 100; "
        "docs/speed.md)",
    )
    p.add_argument(
        "--frequent",
        type=at_least(0),
        default=300,
        help="the commonest target pieces, always decoded over (default 300)",
    )
    p.add_argument("--src", help="source side of the parallel text (default: the training set)")
    p.add_argument("--tgt", help="its target side")
    p.add_argument(
        "--encoding", type=encoding_name, default="utf-8", help="encoding of --src and --tgt"
    )
    p.set_defaults(func=cmd_shortlist)


def add_average(sub) -> None:
    p = sub.add_parser("average", help="average the parameters of checkpoints of one model")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--out", required=True, help="the averaged checkpoint")
    p.set_defaults(func=cmd_average)


def add_score(sub) -> None:
    p = sub.add_parser("score", help="BLEU and chrF with sacrebleu")
    p.add_argument(
        "--ref",
        required=True,
        nargs="+",
        action="extend",
        help="reference file(s) (plain or .gz); several: multi-reference BLEU and chrF",
    )
    p.add_argument("--hyp", help="hypothesis file (default: standard input)")
    p.add_argument(
        "--published",
        action="store_true",
        help="lowercase, --tokenize none: for pre-tokenized text as papers score it",
    )
    p.add_argument(
        "--tokenize",
        choices=TOKENIZERS,
        help="sacrebleu's BLEU tokenizer (default 13a; zh, ja-mecab or ko-mecab for Chinese, "
        "Japanese or Korean; the mecab ones need their packages)",
    )
    p.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU and chrF")
    p.add_argument("--chrf-plus", action="store_true", help="chrF++ (word bigrams too)")
    p.add_argument("--encoding", type=encoding_name, default="utf-8")
    p.set_defaults(func=cmd_score)
