"""Translation checkpoints: the config, tokenizers and model a checkpoint holds.

A translation checkpoint holds the resolved config, both tokenizers, the model weights,
optimizer and scheduler state, the step and data position, and RNG states: enough to
resume training or to translate with nothing else. Writing and loading the files
(atomic, versioned, ``weights_only``) is ``s2s.training.checkpoint``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from s2s import config as config_mod
from s2s.data.tokenize import Tokenizer, from_state
from s2s.errors import CheckpointError, S2SError
from s2s.nn.seq2seq import Seq2Seq, build_model
from s2s.training.checkpoint import load, save

__all__ = [  # load and save: the files themselves, for callers that hold this module
    "Loaded",
    "average",
    "check_compatible",
    "config_of",
    "load",
    "load_for_translation",
    "model_of",
    "save",
    "tokenizer_states",
    "tokenizers_of",
]


def config_of(payload: dict) -> config_mod.Config:
    try:
        return config_mod.from_dict(payload["config"])
    except S2SError as err:
        raise CheckpointError(f"checkpoint config does not load: {err}") from None


def tokenizers_of(payload: dict) -> tuple[Tokenizer, Tokenizer]:
    states = payload["tokenizers"]
    src = from_state(states["src"])
    tgt = src if states.get("joint") else from_state(states["tgt"], base=src)
    return src, tgt


def model_of(payload: dict, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    cfg = config_of(payload)
    model = build_model(cfg.model, src_vocab=src_vocab, tgt_vocab=tgt_vocab, init=False)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint weights do not fit its model: {str(err).splitlines()[0]}"
        ) from None
    return model


def translation_payload(payload: dict, path: str | Path) -> dict:
    """``payload`` (the file ``path``) where it is a translation checkpoint; else an
    error naming its kind (a char LM's, say)."""
    if payload.get("kind", "seq2seq") != "seq2seq":
        raise CheckpointError(f"{path} is a {payload['kind']} checkpoint, not a translation model")
    return payload


def tokenizer_states(src: Tokenizer, tgt: Tokenizer) -> dict:
    return {"joint": src is tgt, "src": src.state(), "tgt": tgt.state()}


# --------------------------------------------------------------------------- several


@dataclass
class Loaded:
    """A checkpoint ready to translate with."""

    path: Path
    payload: dict
    config: config_mod.Config
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    model: Seq2Seq


def load_for_translation(path: str | Path) -> Loaded:
    """The model, tokenizers and config; the file is memory-mapped, so the optimizer
    state a training checkpoint also holds is never read, and none of it is kept."""
    payload = translation_payload(load(path, mmap=True), path)
    cfg = config_of(payload)
    src_tok, tgt_tok = tokenizers_of(payload)
    model = model_of(payload, src_tok.vocab_size, tgt_tok.vocab_size)
    kept = {k: v for k, v in payload.items() if k not in ("model", "optimizer", "rng")}
    return Loaded(Path(path), kept, cfg, src_tok, tgt_tok, model)


def check_compatible(members: list[Loaded]) -> None:
    """Ensemble members must read the same source tokens and write the same target
    vocabulary (architectures may differ)."""
    first = members[0]
    for other in members[1:]:
        names = f"{first.path} and {other.path}"
        if first.tgt_tok.vocabulary() != other.tgt_tok.vocabulary():
            raise CheckpointError(f"cannot ensemble {names}: their target vocabularies differ")
        if first.src_tok.vocabulary() != other.src_tok.vocabulary():
            raise CheckpointError(f"cannot ensemble {names}: their source tokenizers differ")
        if first.config.data.reverse_source != other.config.data.reverse_source:
            raise CheckpointError(
                f"cannot ensemble {names}: one reverses the source (data.reverse_source), "
                "the other does not"
            )


def average(paths: list[str | Path]) -> dict[str, Any]:
    """Parameter mean of checkpoints of one model (same config.model and tokenizers);
    the result translates like any checkpoint but holds no optimizer state."""
    payloads = [translation_payload(load(p), p) for p in paths]
    first = payloads[0]
    for path, payload in zip(paths[1:], payloads[1:]):
        if payload["config"]["model"] != first["config"]["model"]:
            changed = config_mod.diff(config_of(first), config_of(payload))
            shown = ", ".join(k for k in changed if k.startswith("model.")) or "model"
            raise CheckpointError(
                f"cannot average {paths[0]} and {path}: different models ({shown})"
            )
        if any(
            a.vocabulary() != b.vocabulary()
            for a, b in zip(tokenizers_of(payload), tokenizers_of(first))
        ):
            raise CheckpointError(f"cannot average {paths[0]} and {path}: vocabularies differ")
        reverse = [config_of(x).data.reverse_source for x in (first, payload)]
        if reverse[0] != reverse[1]:
            raise CheckpointError(
                f"cannot average {paths[0]} and {path}: one reverses the source "
                "(data.reverse_source), the other does not"
            )
        if payload["model"].keys() != first["model"].keys():
            raise CheckpointError(f"cannot average {paths[0]} and {path}: parameters differ")
    averaged = {}
    for name, value in first["model"].items():
        if value.is_floating_point():
            total = torch.zeros_like(value, dtype=torch.float64)
            for payload in payloads:
                total += payload["model"][name].double()
            averaged[name] = (total / len(payloads)).to(value.dtype)
        else:
            averaged[name] = value.clone()
    result = {
        k: v for k, v in payloads[-1].items() if k not in ("format", "version", "optimizer", "rng")
    }
    result["model"] = averaged
    result["averaged_from"] = [str(p) for p in paths]
    return result
