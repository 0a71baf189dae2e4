"""The sequence-to-sequence model and the one builder from config.

``Seq2Seq`` is also the "stepper" that search drives: ``encode``, ``init_state`` and
``step`` (log-probabilities for the next token from an explicit state).
"""

from __future__ import annotations

import torch
from torch import nn

from s2s.config import ModelConfig
from s2s.data.tokenize import UNK
from s2s.nn.attention import make_attention
from s2s.nn.cells import is_lstm
from s2s.nn.decoder import Decoder, DecoderState, StepOutput
from s2s.nn.dropout import drop_words
from s2s.nn.encoder import Encoder, EncoderOutput
from s2s.nn.init import initialize


class Seq2Seq(nn.Module):
    # Beam search may hand ``step`` one encoder output row for the K rows of a sentence.
    grouped_encoder = True

    def __init__(
        self, *, encoder: Encoder, decoder: Decoder, word_dropout: float = 0.0, pad_id: int = 0
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.word_dropout = word_dropout  # decoder inputs turned into UNK while training
        self.pad_id = pad_id

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        return self.decoder.prepare(self.encoder(src, src_lengths))

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        return self.decoder.init_state(enc)

    def step(self, prev: torch.Tensor, state: DecoderState, enc: EncoderOutput) -> StepOutput:
        return self.decoder.step(prev, state, enc)

    def forward(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        tgt_in: torch.Tensor,
        *,
        teacher_prob: float = 1.0,
        sample: bool = False,
        parallel: bool = False,
    ) -> torch.Tensor:
        """Decoder features (batch, tgt_len, out_size) under teacher forcing, or under
        scheduled sampling when ``teacher_prob`` < 1 (step by step, or ``parallel``);
        see ``logits``."""
        enc = self.encode(src, src_lengths)
        if self.training and self.word_dropout > 0.0:
            tgt_in = drop_words(tgt_in, self.word_dropout, unk=UNK, pad=self.pad_id)
        if teacher_prob >= 1.0:
            return self.decoder(tgt_in, enc)
        run = self.decoder.scheduled_parallel if parallel else self.decoder.scheduled
        features, _ = run(tgt_in, enc, teacher_prob=teacher_prob, sample=sample)
        return features

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Output layer; apply it to the non-padding positions only to save work."""
        return self.decoder.output(features)


def build_model(
    cfg: ModelConfig, *, src_vocab: int, tgt_vocab: int, pad_id: int = 0, init: bool = True
) -> Seq2Seq:
    """The only place where config becomes constructor arguments. ``init=False``: skip
    ``model.init`` (weights about to be loaded from a checkpoint)."""
    e, d = cfg.encoder, cfg.decoder
    encoder = Encoder(
        vocab_size=src_vocab,
        embedding_size=cfg.embedding_size,
        cell=e.cell,
        hidden_size=e.hidden_size,
        layers=e.layers,
        bidirectional=e.bidirectional,
        stacking=e.stacking,
        dropout=cfg.dropout,
        embedding_dropout=cfg.embedding_dropout,
        activation=e.activation,
        padding_idx=pad_id,
        recurrent_dropout=cfg.recurrent_dropout,
        full_state=(
            cfg.bridge and cfg.bridge_type == "copy" and is_lstm(d.cell) and is_lstm(e.cell)
        ),
    )
    attention = make_attention(
        kind=cfg.attention,
        query_size=d.hidden_size,
        key_size=encoder.output_size,
        hidden_size=cfg.attention_size,
        form=cfg.multiplicative_form,
    )
    decoder = Decoder(
        vocab_size=tgt_vocab,
        embedding_size=cfg.embedding_size,
        cell=d.cell,
        hidden_size=d.hidden_size,
        layers=d.layers,
        stacking=d.stacking,
        encoder_size=encoder.output_size,
        attention=attention,
        input_feeding=d.input_feeding,
        attentional_tanh=cfg.attentional_vector == "tanh",
        bridge=cfg.bridge_type if cfg.bridge else "none",
        dropout=cfg.dropout,
        embedding_dropout=cfg.embedding_dropout,
        tie_embeddings=cfg.tie_target_embeddings,
        activation=d.activation,
        padding_idx=pad_id,
        recurrent_dropout=cfg.recurrent_dropout,
    )
    model = Seq2Seq(encoder=encoder, decoder=decoder, word_dropout=cfg.word_dropout, pad_id=pad_id)
    if init:
        initialize(model, cfg.init)
    return model
