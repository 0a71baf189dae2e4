"""Self-describing checkpoints (level 5): save atomically, load safely, rebuild.

A checkpoint holds the resolved config, both tokenizers, the model weights, optimizer
and scheduler state, the step and data position, and RNG states: enough to resume
training or to translate with nothing else. Files are written to a temporary name,
fsynced and renamed, so a crash mid-save leaves the previous file intact; they are
loaded with ``weights_only=True``, which runs no pickled code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from s2s import config as config_mod
from s2s.errors import CheckpointError, S2SError
from s2s.model import Seq2Seq, build_model
from s2s.tokenize import Tokenizer, from_state

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


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's safe unpickler raises many kinds on garbage
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is not an s2s checkpoint ({reason[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an s2s checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this s2s reads {VERSION}"
        )
    return payload


def config_of(payload: dict) -> config_mod.Config:
    try:
        return config_mod.from_dict(payload["config"])
    except S2SError as err:
        raise CheckpointError(f"checkpoint config does not load: {err}") from None


def tokenizers_of(payload: dict) -> tuple[Tokenizer, Tokenizer]:
    src = from_state(payload["tokenizers"]["src"])
    tgt = src if payload["tokenizers"].get("joint") else from_state(payload["tokenizers"]["tgt"])
    return src, tgt


def model_of(payload: dict, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    cfg = config_of(payload)
    model = build_model(cfg.model, src_vocab=src_vocab, tgt_vocab=tgt_vocab)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint weights do not fit its model: {str(err).splitlines()[0]}"
        ) from None
    return model


def tokenizer_states(src: Tokenizer, tgt: Tokenizer) -> dict:
    return {"joint": src is tgt, "src": src.state(), "tgt": tgt.state()}
