"""``model.charlm``: a translation model that starts from a character language model.

The LM's recurrent stack goes into the encoder (its forward direction; a backward LM,
``model.charlm_backward``, into its backward one), the decoder or both, and its
embedding rows into the rows of the characters both vocabularies hold
(``s2s.nn.charlm.copy_into``). The LM checkpoint is read here, not through the char-LM
task: the two tasks do not import each other.
"""

from __future__ import annotations

import logging

from s2s.config import ModelConfig
from s2s.data.tokenize import Tokenizer
from s2s.errors import ConfigError
from s2s.nn.charlm import copy_into, lm_from_payload
from s2s.nn.seq2seq import Seq2Seq
from s2s.training.checkpoint import load

log = logging.getLogger(__name__)


def from_charlm(model: Seq2Seq, m: ModelConfig, src_tok: Tokenizer, tgt_tok: Tokenizer) -> None:
    """Copy the char LM ``m.charlm`` into the parts ``m.charlm_into`` names,
    ``m.charlm_decoder`` (if set) into the decoder and ``m.charlm_backward`` (if set)
    into the encoder's backward direction."""
    plan = []  # (part, LM checkpoint, direction)
    if m.charlm:
        into = ("encoder", "decoder") if m.charlm_into == "both" else (m.charlm_into,)
        plan += [(name, m.charlm, "forward") for name in into]
    if m.charlm_decoder:
        plan.append(("decoder", m.charlm_decoder, "forward"))
    if m.charlm_backward:
        plan.append(("encoder", m.charlm_backward, "backward"))
    parts = {"encoder": (model.encoder, src_tok), "decoder": (model.decoder, tgt_tok)}
    has_rows = set()  # parts whose embedding rows an earlier LM gave
    for name, path, direction in plan:
        lm, units, lm_cfg = lm_from_payload(load(path), path)
        key = "charlm_backward" if direction == "backward" else "charlm"
        if lm_cfg.data.direction != direction:
            raise ConfigError(
                f"model.{key}: {path} is a {lm_cfg.data.direction} language model "
                f"(data.direction); model.{key} takes a {direction} one"
            )
        module, tok = parts[name]
        part = getattr(m, name)
        for attr in ("stacking", "activation"):
            if getattr(part, attr) != getattr(lm_cfg.model, attr):
                raise ConfigError(
                    f"model.{key}: model.{name}.{attr} is {getattr(part, attr)!r} but the "
                    f"language model's is {getattr(lm_cfg.model, attr)!r}"
                )
        rows = copy_into(
            lm,
            units,
            rnn=module.rnn,
            embedding=None if name in has_rows else module.embedding,
            vocabulary=tok.vocabulary(),
            where=name,
            direction=direction,
        )
        has_rows.add(name)
        log.info(
            "model.%s: %s (%s) starts from %s, %d embedding rows", key, name, direction, path, rows
        )
