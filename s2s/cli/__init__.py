"""The ``s2s`` command: argument parsing and presentation only.

Subcommands: ``train``, ``translate``, ``shortlist``, ``average``, ``score``
(``cli.translation``), ``debug``, ``compare`` (``cli.experiments``), ``charlm``
(``cli.charlm``). Errors that s2s raises for bad input (``S2SError``) are printed as
one line, ``s2s: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from s2s.cli import charlm, experiments, translation
from s2s.errors import Interrupted, S2SError

# Commands that hold no open files, threads or background work once their output is
# written: after them the ``s2s`` executable skips the interpreter's teardown (freeing
# torch's state took 0.2-0.5 s of every exit on the 2-core VM; docs/speed.md).
QUICK_EXIT = frozenset({"translate", "score"})
_ran: list[str] = []  # the command main() ran last


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2s", description="Train, translate and score recurrent sequence-to-sequence models."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    translation.add_train(sub)
    translation.add_translate(sub)
    translation.add_shortlist(sub)
    translation.add_average(sub)
    experiments.add_debug(sub)
    experiments.add_compare(sub)
    charlm.add_charlm(sub)
    translation.add_score(sub)
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
    _ran[:] = [args.command]
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except Interrupted as err:  # saved; not bad input: the status of an interrupt
        print(f"s2s: {err}", file=sys.stderr)
        return 130
    except S2SError as err:
        print(f"s2s: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("s2s: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except RuntimeError as err:
        if not _peer_stopped(err):
            raise
        print(
            f"s2s: error: rank {os.environ.get('RANK')}: another process of this run stopped "
            "(its error is above)",
            file=sys.stderr,
        )
        return 1


def _peer_stopped(err: RuntimeError) -> bool:
    """Whether ``err`` is a data-parallel process losing a peer (one that stopped on an
    error of its own, reported there), not an error of this process."""
    world = os.environ.get("WORLD_SIZE", "")
    if not world.isdigit() or int(world) < 2:
        return False
    from torch.distributed import DistBackendError

    return isinstance(err, DistBackendError) or "Connection closed by peer" in str(err)


def command() -> None:
    """The ``s2s`` executable (and ``python -m s2s``): ``main``, then the exit, at once
    after a command in QUICK_EXIT, its output flushed first."""
    code = main()
    if _ran and _ran[0] in QUICK_EXIT:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:  # a closed pipe: nothing more can reach it
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    command()
