"""The run folder: created or checked before a run, resumable, one writer.

``prepare_run_dir`` creates a run folder or checks that it holds a run of the same
config (stopping limits and devices may change between sessions), and takes its lock;
the other helpers keep ``metrics.jsonl`` one history, route stop signals, check disk
space and keep step checkpoints. The engine uses them.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch

from s2s import config as config_mod
from s2s.errors import ConfigError, DataError, S2SError
from s2s.training import runlock
from s2s.training.checkpoint import atomic_write, load

log = logging.getLogger(__name__)


def resolve_device(name: str, what: str = "train.device") -> torch.device:
    """The device ``name`` (auto, cpu, cuda) asks for; ``what`` names where it was set."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{what} is 'cuda' but no CUDA device is available")
    return torch.device(name)


# Keys that may change between sessions of one run: stopping limits (e.g. to train
# longer), how many step checkpoints are kept, and where and how the arithmetic runs
# (resume a CPU run on a GPU, or in mixed precision, or with another number of
# processes, whose effective batch train.accumulate can keep: a warning says which).
LIMIT_KEYS = frozenset(
    {
        "train.accumulate",
        "train.device",
        "train.threads",
        "train.precision",
        "train.max_steps",
        "train.max_epochs",
        "train.max_minutes",
        "train.early_stopping",
        "train.keep_checkpoints",
    }
)


def prepare_run_dir(
    cfg: Any, out: Path, force: bool, parse: Callable[[dict], Any] = config_mod.from_dict
) -> bool:
    """Create or check the run folder; return True when it holds a run to resume.
    ``parse`` turns the folder's config.yaml into a config (of the type of ``cfg``).
    Nothing trained is lost: a run started over (``force``, or one whose last.pt is
    gone) has its files moved into ``replaced-TIME/`` first; only what a start that
    never saved a checkpoint left (a data error, say) is removed, whatever its config."""
    cfg_path = out / "config.yaml"
    if out.exists() and not out.is_dir():
        raise DataError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(p.name != runlock.NAME for p in out.iterdir()):
        if not cfg_path.is_file() and not force:
            raise DataError(
                f"output folder {out} is not empty and holds no s2s run (no config.yaml); "
                "choose another --out or pass --force"
            )
        if cfg_path.is_file() and not _trained(out):
            runlock.acquire(out)  # never a live run's files, before its first checkpoint
            for path in _run_files(out):  # a start that saved no checkpoint
                path.unlink()
            log.info("run folder %s: no checkpoint from an earlier start; starting afresh", out)
        elif cfg_path.is_file() and _resumes(cfg, out, force, parse):
            return True
        runlock.acquire(out)
        kept = set_aside(out)
        if kept is not None:
            log.warning("run folder %s: the earlier run's files moved to %s", out, kept)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".s2s-write-test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as err:
        raise DataError(f"cannot write to output folder {out}: {err.strerror or err}") from None
    runlock.acquire(out)
    atomic_write(cfg_path, lambda h: h.write(config_mod.dump(cfg).encode("utf-8")))
    return False


def _resumes(cfg: Any, out: Path, force: bool, parse: Callable[[dict], Any]) -> bool:
    """Whether ``out``'s trained run is ``cfg``'s to resume (locked, its config.yaml
    updated to new limits); False where ``force`` starts another config over there; an
    error for another config without ``force``."""
    cfg_path = out / "config.yaml"
    try:
        old = parse(config_mod.read_yaml(cfg_path))
    except S2SError as err:
        if force:
            return False
        raise ConfigError(
            f"{cfg_path} (the run in this folder): {err}; --force starts over"
        ) from None
    differs = config_mod.diff(old, cfg)
    changed = [k for k in differs if k not in LIMIT_KEYS]
    if changed and not force:
        shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
        key = changed[0]
        was, now = config_mod.value(old, key), config_mod.value(cfg, key)
        raise ConfigError(
            f"run folder {out} belongs to a different config (differs in {shown}; "
            f"{key} was {was!r}, now {now!r}); use another --out, or --force to "
            "start over there"
        )
    if changed or not (out / "last.pt").is_file():
        return False
    past = _past_limit(cfg, out) if differs else None
    if past is not None:
        if force:
            return False
        raise ConfigError(
            f"run folder {out}: {past}, so a run with this config would have stopped "
            "earlier; use another --out, or --force to start over there (the trained "
            "run's files are moved aside, not deleted)"
        )
    runlock.acquire(out)
    if differs:  # new limits or devices: config.yaml says what runs now
        shown = (
            f"{k} {config_mod.value(old, k)!r} -> {config_mod.value(cfg, k)!r}" for k in differs
        )
        log.info("run folder %s: resuming with %s", out, ", ".join(shown))
        text = config_mod.dump(cfg).encode("utf-8")
        atomic_write(cfg_path, lambda handle: handle.write(text))
    return True


# What a run writes into its folder (README, "The run folder"), and s2s compare's
# outputs and scores of it; .lock is the lock's own.
RUN_FILES = (
    "config.yaml",
    "last.pt",
    "best.pt",
    "step-*.pt",
    "metrics.jsonl",
    "events.out.tfevents.*",
    "tokenizer.*",
    "*.hyp",
    "result*.json",
)


def _run_files(out: Path) -> list[Path]:
    return sorted({p for pattern in RUN_FILES for p in out.glob(pattern) if p.is_file()})


def _past_limit(cfg: Any, out: Path) -> str | None:
    """How ``out``'s last.pt already went beyond a stopping limit ``cfg`` lowered (its
    step, epoch or validations without improvement), or None. Time limits are not
    compared: a run stopped by time is always a little past its own limit."""
    p, t = load(out / "last.pt", mmap=True).get("progress", {}), cfg.train
    max_epochs, stop = getattr(t, "max_epochs", 0), getattr(t, "early_stopping", 0)
    if t.max_steps and p.get("step", 0) > t.max_steps:
        return f"last.pt is at step {p['step']}, past train.max_steps {t.max_steps}"
    epoch, within = p.get("epoch", 0), p.get("batch_in_epoch", 0)
    if max_epochs and (epoch > max_epochs or (epoch == max_epochs and within > 0)):
        return f"last.pt is in epoch {epoch + 1}, past train.max_epochs {max_epochs}"
    if stop and p.get("stale_validations", 0) > stop:
        return (
            f"last.pt has {p['stale_validations']} validations without improvement, past "
            f"train.early_stopping {stop}"
        )
    return None


def _trained(out: Path) -> bool:
    """Whether ``out`` holds a checkpoint: something a fresh start would lose."""
    saved = (out / "last.pt").is_file() or (out / "best.pt").is_file()
    return saved or bool(step_checkpoints(out))


def set_aside(out: Path) -> Path | None:
    """Move the run files in ``out`` (``RUN_FILES``) into a new ``out/replaced-TIME``
    folder (UTC); return it, or None where there were none."""
    files = _run_files(out)
    if not files:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target, n = out / f"replaced-{stamp}", 1
    while target.exists():
        target, n = out / f"replaced-{stamp}-{n}", n + 1
    target.mkdir()
    for path in files:
        path.rename(target / path.name)
    return target


def trim_metrics(path: Path, step: int) -> None:
    """Drop the records of ``metrics.jsonl`` past ``step``: those logged after the
    checkpoint a run resumes from (all, at step 0), so the file tells one history."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step and step > 0:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    data = "".join(kept).encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))


def append_record(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def catch_stop_signals(handler: Callable) -> Callable[[], None]:
    """Route SIGINT and SIGTERM to ``handler``; returns the function that restores the
    previous handlers."""
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, old in previous.items():
            signal.signal(s, old)

    return restore


def check_disk_space(out: Path, n_params: int, keep: int) -> None:
    """Refuse to start when the folder cannot hold the checkpoints: last.pt, best.pt,
    kept step checkpoints and one temporary copy, each about 3 x 4 bytes per
    parameter (weights and two Adam moments)."""
    need = 12 * n_params * (3 + keep)
    free = shutil.disk_usage(out).free
    if free < need:
        raise DataError(
            f"not enough disk space in {out}: {free / 2**20:.0f} MiB free, checkpoints "
            f"need about {need / 2**20:.0f} MiB"
        )


def run_file(path: Path) -> str | None:
    """What ``path`` is to the run folder it sits in, where it is one of that folder's
    own files (what resuming, ``s2s average`` and ``s2s compare`` read: checkpoints,
    the config, metrics, tokenizers, results), whether it exists or not; else None."""
    path = Path(path)
    if not (path.parent / "config.yaml").is_file():
        return None
    name = path.name
    step = path.suffix == ".pt" and name.startswith("step-") and path.stem[5:].isdigit()
    if step or name in ("last.pt", "best.pt"):
        return "checkpoint"
    kept = (p for p in RUN_FILES if p != "*.hyp")  # translations may go beside them
    if name == runlock.NAME or any(fnmatch.fnmatchcase(name, p) for p in kept):
        return "file"
    return None


def step_checkpoints(out: Path) -> list[Path]:
    """The run's step-STEP.pt files, oldest first."""
    found = []
    for path in Path(out).glob("step-*.pt"):
        number = path.stem.removeprefix("step-")
        if number.isdigit():
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


def keep_step_checkpoint(out: Path, step: int, keep: int) -> None:
    """Keep last.pt as step-STEP.pt (a hard link: no second write) and delete the
    ones beyond ``keep`` (train.keep_checkpoints), oldest first."""
    if keep <= 0:
        return
    target = out / f"step-{step}.pt"
    target.unlink(missing_ok=True)
    try:
        os.link(out / "last.pt", target)
    except OSError:
        shutil.copyfile(out / "last.pt", target)
    for old in step_checkpoints(out)[:-keep]:
        old.unlink(missing_ok=True)


def check_same_data(payload: dict, digest: str, out: Path) -> None:
    """Warn where a run resumes on training data other than its checkpoint's (``digest``
    against the payload's ``data_sha1``; older checkpoints have none)."""
    saved = payload.get("data_sha1")
    if saved and saved != digest:
        log.warning(
            "%s: the training data differ from those its checkpoint was trained on; "
            "resuming on the new data, so the run no longer replays as one",
            out,
        )
