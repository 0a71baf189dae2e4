#!/usr/bin/env python
"""A copy of a checkpoint that an older s2s (the one running this script) can load: config
keys the older code does not know are dropped and values it does not accept are mapped
(precision ``auto`` -> ``fp32``, which is what that code decoded in). The weights and
tokenizers are copied as they are, except a target vocabulary of the target side's pieces
(``data.tokenizer.target_vocab: train``), which the older code does not know: the decoder's
rows are spread back over the joint vocabulary, with zero weights and a bias of -1e4 at the
pieces it lacks, so that their probability is exactly 0 in float32 and the older code
computes the same model. Used by scripts/bench_speed.sh to decode the same weights with
the code before the speed work.

Usage: OLD_VENV/bin/python scripts/old_checkpoint.py NEW.pt OLD.pt
"""

import dataclasses
import sys

import torch

from s2s import config


def known(data: dict, reference: dict) -> dict:
    """``data`` restricted to the keys of ``reference``, recursively."""
    kept = {}
    for key, value in data.items():
        if key not in reference:
            continue
        ref = reference[key]
        kept[key] = (
            known(value, ref) if isinstance(value, dict) and isinstance(ref, dict) else value
        )
    return kept


# The decoder's tensors with a row per target piece (the output layer may be tied to the
# embedding: both names are in the state dict either way)
VOCABULARY_ROWS = ("decoder.embedding.weight", "decoder.output.weight", "decoder.output.bias")


def joint_vocabulary(payload: dict) -> None:
    """A target subset's decoder rows spread over the joint vocabulary, in place."""
    toks = payload["tokenizers"]
    if toks.get("joint") or toks["tgt"].get("kind") != "subset":
        return
    ids = toks["tgt"]["ids"].long()
    full = vocab_size(toks["src"])
    weights = payload["model"]
    for name in VOCABULARY_ROWS:  # by name: a size check alone could catch a hidden layer
        tensor = weights[name]
        spread = tensor.new_full(
            (full, *tensor.shape[1:]), -1e4 if name == "decoder.output.bias" else 0.0
        )
        spread[ids] = tensor
        weights[name] = spread
    payload["tokenizers"] = {"joint": True, "src": toks["src"], "tgt": toks["src"]}


def vocab_size(state: dict) -> int:
    """The size of a saved joint tokenizer (SentencePiece, or characters / words)."""
    if state["kind"] != "spm":
        return len(state["symbols"])
    import sentencepiece

    proto = bytes(state["model"].numpy().tobytes())
    return sentencepiece.SentencePieceProcessor(model_proto=proto).get_piece_size()


def main() -> None:
    source, target = sys.argv[1:3]
    payload = torch.load(source, map_location="cpu", weights_only=True)
    reference = dataclasses.asdict(config.Config())
    cfg = known(payload["config"], reference)
    if cfg["train"].get("precision") not in config.PRECISIONS:
        cfg["train"]["precision"] = "fp32"
    config.from_dict(cfg)  # fails here, with the older code's message, if it still cannot load
    payload["config"] = cfg
    joint_vocabulary(payload)
    for key in ("optimizer", "rng"):  # not needed to translate
        payload.pop(key, None)
    torch.save(payload, target)


if __name__ == "__main__":
    main()
