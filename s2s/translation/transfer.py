"""``model.charlm``: a translation model that starts from a character language model.

The LM's recurrent stack goes into the encoder (its forward direction), the decoder or
both, and its embedding rows into the rows of the characters both vocabularies hold
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
    """Copy the char LM ``m.charlm`` into the parts ``m.charlm_into`` names, and
    ``m.charlm_decoder`` (if set) into the decoder."""
    plan = []
    if m.charlm:
        into = ("encoder", "decoder") if m.charlm_into == "both" else (m.charlm_into,)
        plan += [(name, m.charlm) for name in into]
    if m.charlm_decoder:
        plan.append(("decoder", m.charlm_decoder))
    parts = {"encoder": (model.encoder, src_tok), "decoder": (model.decoder, tgt_tok)}
    for name, path in plan:
        lm, units, lm_cfg = lm_from_payload(load(path), path)
        if lm_cfg.data.direction != "forward":
            raise ConfigError(
                f"model.charlm: {path} is a backward language model (data.direction); "
                "a translation model starts from forward ones only"
            )
        module, tok = parts[name]
        part = getattr(m, name)
        for key in ("stacking", "activation"):
            if getattr(part, key) != getattr(lm_cfg.model, key):
                raise ConfigError(
                    f"model.charlm: model.{name}.{key} is {getattr(part, key)!r} but the "
                    f"language model's is {getattr(lm_cfg.model, key)!r}"
                )
        rows = copy_into(
            lm,
            units,
            rnn=module.rnn,
            embedding=module.embedding,
            vocabulary=tok.vocabulary(),
            where=name,
        )
        log.info("model.charlm: %s starts from %s (%d embedding rows)", name, path, rows)
