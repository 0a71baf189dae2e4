"""Attention: one base that masks, normalises and mixes; variants score.

Queries attend over encoder states ("keys", which are also the values). Keys are
projected once per source batch by ``prepare``; ``forward`` then runs for any number of
query positions at once, so teacher-forced training attends for all steps in one call.
"""

from __future__ import annotations

import torch
from torch import nn

from s2s.config import ATTENTIONS, MULTIPLICATIVE_FORMS


class Attention(nn.Module):
    """Base class: subclasses implement ``prepare`` (optional) and ``score``."""

    def prepare(self, keys: torch.Tensor) -> torch.Tensor:
        """Per-source precomputation. keys: (batch, src_len, key_size)."""
        return keys

    def score(self, query: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        """query (batch, tgt_len, query_size) -> scores (batch, tgt_len, src_len)."""
        raise NotImplementedError

    def forward(
        self,
        query: torch.Tensor,  # (batch, tgt_len, query_size)
        keys: torch.Tensor,  # (batch, src_len, key_size)
        prepared: torch.Tensor,  # from prepare(keys)
        mask: torch.Tensor,  # (batch, src_len), True at real tokens
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(query, prepared)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (batch, tgt_len, src_len)
        context = torch.bmm(weights, keys)  # (batch, tgt_len, key_size)
        return context, weights


class AdditiveAttention(Attention):
    """score(q, k) = v^T tanh(W q + U k) (Bahdanau et al. 2015, A.1.2)."""

    def __init__(self, *, query_size: int, key_size: int, hidden_size: int):
        super().__init__()
        self.key_proj = nn.Linear(key_size, hidden_size, bias=False)
        self.query_proj = nn.Linear(query_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, 1, bias=False)

    def prepare(self, keys: torch.Tensor) -> torch.Tensor:
        return self.key_proj(keys)  # (batch, src_len, hidden)

    def score(self, query: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        q = self.query_proj(query).unsqueeze(2)  # (batch, tgt_len, 1, hidden)
        return self.v(torch.tanh(q + prepared.unsqueeze(1))).squeeze(-1)


class MultiplicativeAttention(Attention):
    """score(q, k) = q^T W k ("general") or q^T k ("dot") (Luong et al. 2015, §3.1)."""

    def __init__(self, *, query_size: int, key_size: int, form: str = "general"):
        super().__init__()
        if form not in MULTIPLICATIVE_FORMS:
            raise ValueError(f"unknown form '{form}'; valid: {', '.join(MULTIPLICATIVE_FORMS)}")
        if form == "dot" and query_size != key_size:
            raise ValueError("dot attention needs query_size == key_size")
        # W is applied to the keys once per source, not to every query.
        self.key_proj = nn.Linear(key_size, query_size, bias=False) if form == "general" else None

    def prepare(self, keys: torch.Tensor) -> torch.Tensor:
        return keys if self.key_proj is None else self.key_proj(keys)

    def score(self, query: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        return torch.bmm(query, prepared.transpose(1, 2))


def make_attention(
    *, kind: str, query_size: int, key_size: int, hidden_size: int, form: str
) -> Attention | None:
    if kind == "none":
        return None
    if kind == "additive":
        return AdditiveAttention(query_size=query_size, key_size=key_size, hidden_size=hidden_size)
    if kind == "multiplicative":
        return MultiplicativeAttention(query_size=query_size, key_size=key_size, form=form)
    raise ValueError(f"unknown attention '{kind}'; valid values: {', '.join(ATTENTIONS)}")
