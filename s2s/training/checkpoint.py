"""Checkpoint files: written atomically, loaded safely, versioned.

Files are written to a temporary name, fsynced and renamed, so a crash mid-save leaves
the previous file intact; they are loaded with ``weights_only=True``, which runs no
pickled code. The RNG states a resumed run needs are saved and restored here too.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from s2s.errors import CheckpointError

FORMAT = "s2s-checkpoint"
VERSION = 1


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(path: Path, payload: dict[str, Any]) -> None:
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda handle: torch.save(payload, handle))


def read(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> Any:
    """What ``torch.save`` wrote to ``path``, on the CPU, read with ``weights_only``; a
    missing or unreadable file is a ``CheckpointError`` naming it as an s2s ``what``."""
    path = Path(path)
    if path.is_dir():
        hint = " (e.g. best.pt in it)" if (path / "best.pt").is_file() else ""
        raise CheckpointError(f"{path} is a folder, not a {what} file{hint}")
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(
            f"{path} is not an s2s {what} (not a file torch.save wrote, or cut short)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch's safe unpickler raises many kinds on garbage
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is not an s2s {what} ({reason[:120]})") from None


def load(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint's payload on the CPU; ``mmap``: tensors are read from the file
    when first touched (what is never touched is never read)."""
    payload = read(path, mmap=mmap)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an s2s checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this s2s reads {VERSION}"
        )
    return payload


def rng_state(device: torch.device) -> dict:
    """The random state a resumed run needs: the CPU generator's, and the current CUDA
    device's when training there (one device per process)."""
    cuda = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda"):
        torch.cuda.set_rng_state(state["cuda"][0], device)
