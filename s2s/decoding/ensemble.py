"""Ensembles: several models decoded as one stepper.

Each step averages the members' log-probabilities (and attention weights, where
every member has attention). Members may differ in architecture; they must share the
source tokenizer and the target vocabulary, which ``check_compatible`` verifies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from s2s.decoding.search import reorder


@dataclass
class MemberStates:
    """One search state (encoder output or decoder state) per member."""

    parts: list

    def reorder(self, index: torch.Tensor) -> "MemberStates":
        return MemberStates([reorder(p, index) for p in self.parts])


@dataclass
class EnsembleStep:
    logits: torch.Tensor  # (batch, vocab): averaged log-probabilities
    state: MemberStates
    attention: torch.Tensor | None


class Ensemble:
    def __init__(self, models: list):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = models

    @property
    def grouped_encoder(self) -> bool:
        """Whether every member takes one encoder output row per group of beams."""
        return all(getattr(m, "grouped_encoder", False) for m in self.models)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> MemberStates:
        return MemberStates([m.encode(src, src_lengths) for m in self.models])

    def init_state(self, enc: MemberStates) -> MemberStates:
        return MemberStates([m.init_state(e) for m, e in zip(self.models, enc.parts)])

    def step(self, prev: torch.Tensor, state: MemberStates, enc: MemberStates) -> EnsembleStep:
        outs = [m.step(prev, s, e) for m, s, e in zip(self.models, state.parts, enc.parts)]
        logp = torch.stack([torch.log_softmax(o.logits.float(), dim=-1) for o in outs])
        weights = [o.attention for o in outs]
        attention = None if any(w is None for w in weights) else torch.stack(weights).mean(0)
        return EnsembleStep(
            logits=logp.mean(0), state=MemberStates([o.state for o in outs]), attention=attention
        )

    def to(self, *args, **kwargs) -> "Ensemble":
        """Every member ``.to(...)`` (a dtype for bf16 decoding, or a device)."""
        for m in self.models:
            m.to(*args, **kwargs)
        return self

    # translate() switches the members between train and eval mode.
    @property
    def training(self) -> bool:
        return self.models[0].training

    def eval(self) -> "Ensemble":
        for m in self.models:
            m.eval()
        return self

    def train(self, mode: bool = True) -> "Ensemble":
        for m in self.models:
            m.train(mode)
        return self
