"""The decoder: embeddings, a recurrent stack, attention, output layer.

Luong et al. 2015 layout: the recurrent stack reads the previous target token (and,
with input feeding, the previous attentional vector); attention uses its top output as
the query; the attentional vector h~ = tanh(W_c [h; context]) feeds the output layer.

``step()`` advances one position from an explicit ``DecoderState`` (search uses it);
``forward()`` runs teacher forcing over the whole target. Without input feeding it
needs no step loop: one fused kernel per layer and one batched attention call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from s2s.nn import feeding
from s2s.nn.attention import Attention
from s2s.nn.cells import LayerState, RecurrentStack, is_lstm, one_mask_per_sequence
from s2s.nn.dropout import Dropout
from s2s.nn.encoder import EncoderOutput
from s2s.nn.fused import pad_rows

BRIDGES = ("dense", "copy", "none")  # how the decoder's first state is made


def _reorder_layer(state: LayerState, index: torch.Tensor) -> LayerState:
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


def _coin_tosses(tgt_in: torch.Tensor, teacher_prob: float, coins: torch.Tensor | None):
    """True where the gold previous token is fed (always at BOS); one coin per token."""
    if coins is None:
        coins = torch.rand(tgt_in.shape, device=tgt_in.device)
    use_gold = coins < teacher_prob
    use_gold[:, 0] = True
    return use_gold


def _guess(logits: torch.Tensor, sample: bool) -> torch.Tensor:
    """(rows, vocab) -> (rows,): the argmax, or a sample from the softmax."""
    if sample:
        return torch.multinomial(torch.softmax(logits.float(), -1), 1).squeeze(1)
    # max's indices: the first maximum, as argmax, and 3x faster over bf16 on CPU
    return logits.max(-1).indices


GUESS_STEP = 8  # the guess pass's rows and positions, in multiples of this many


def guess_window(need: torch.Tensor) -> tuple[torch.Tensor, int]:
    """need: (batch, tgt_len) bool, True where a guess is fed -> the rows (distinct
    indices, those with a guess first) and the number of leading positions that hold
    every guess, both rounded up to a multiple of GUESS_STEP (a few tensor shapes, as
    the batches have) and never beyond the batch."""
    batch, length = need.shape
    per_row = need.any(1)
    size = min(batch, -(-int(per_row.sum()) // GUESS_STEP) * GUESS_STEP)
    rows = torch.argsort((~per_row).to(torch.uint8), stable=True)[:size]
    last = int(need.any(0).nonzero().max()) + 1
    return rows, min(length, -(-last // GUESS_STEP) * GUESS_STEP)


@dataclass
class DecoderState:
    hidden: list[LayerState]  # per layer: (1, batch, hidden) or an LSTM (h, c) pair
    feed: torch.Tensor | None = None  # (batch, out_size): previous h~ (input feeding)

    def reorder(self, index: torch.Tensor) -> "DecoderState":
        return replace(
            self,
            hidden=[_reorder_layer(s, index) for s in self.hidden],
            feed=None if self.feed is None else self.feed.index_select(0, index),
        )


@dataclass
class StepOutput:
    """One search step: the output layer's input and the layer itself, so that search
    can run the layer a block of rows at a time (``s2s.decoding.ranking``), or read
    ``logits`` whole."""

    features: torch.Tensor  # (batch, out_size): h~, dropout applied
    head: Callable[[torch.Tensor], torch.Tensor]  # the output layer: features -> logits
    state: DecoderState
    attention: torch.Tensor | None  # (batch, src_len)
    vocab: torch.Tensor | None = None  # the target id of each column of the logits; None:
    # the whole vocabulary (a shortlist's, s2s.decoding.shortlist, is a sorted subset)

    @property
    def logits(self) -> torch.Tensor:
        """(batch, vocab), computed at each reading."""
        return self.head(self.features)


def _dense_bridge(
    bridge: str, cell: str, encoder_size: int, hidden_size: int, layers: int
) -> nn.ModuleList | None:
    """Bridge "dense": the decoder's state from the encoder summary, one linear map per
    state kind (h, and c for an LSTM); "copy": the encoder's final states as they are (no
    parameters, sizes equal); "none": zeros. The dense maps, else None."""
    if bridge not in BRIDGES:
        raise ValueError(f"bridge {bridge!r}: expected one of {', '.join(BRIDGES)}")
    if bridge == "copy" and encoder_size != hidden_size:
        raise ValueError(
            f"a copied bridge needs the encoder's state size ({encoder_size}) to equal "
            f"the decoder's hidden size ({hidden_size})"
        )
    if bridge != "dense":
        return None
    n_states = 2 if is_lstm(cell) else 1
    return nn.ModuleList(nn.Linear(encoder_size, layers * hidden_size) for _ in range(n_states))


class Decoder(nn.Module):
    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_size: int,
        cell: str,
        hidden_size: int,
        layers: int,
        stacking: str,
        encoder_size: int,
        attention: Attention | None,
        input_feeding: bool,
        bridge: str,
        dropout: float,
        embedding_dropout: float,
        tie_embeddings: bool,
        activation: str = "tanh",
        padding_idx: int = 0,
        recurrent_dropout: float = 0.0,
        attentional_tanh: bool = True,
    ):
        super().__init__()
        self.cell = cell
        self.attentional_tanh = attentional_tanh  # h~ = tanh(W_c [h; c] + b), else linear
        self.layers = layers
        self.hidden_size = hidden_size
        self.input_feeding = input_feeding
        # With tied embeddings the attentional vector lives in embedding space.
        self.out_size = embedding_size if tie_embeddings else hidden_size
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=padding_idx)
        self.embedding_dropout = Dropout(embedding_dropout)
        self.rnn = RecurrentStack(
            cell=cell,
            input_size=embedding_size + (self.out_size if input_feeding else 0),
            hidden_size=hidden_size,
            layers=layers,
            stacking=stacking,
            dropout=dropout,
            activation=activation,
            recurrent_dropout=recurrent_dropout,
        )
        self.attention = attention
        if attention is not None:
            self.combine = nn.Linear(hidden_size + encoder_size, self.out_size)
        elif self.out_size != hidden_size:
            self.combine = nn.Linear(hidden_size, self.out_size)
        else:
            self.combine = None
        self.dropout = Dropout(dropout)
        self.copy_bridge = bridge == "copy"
        self.bridge = _dense_bridge(bridge, cell, encoder_size, hidden_size, layers)
        self.output = nn.Linear(self.out_size, vocab_size)
        if tie_embeddings:
            self.output.weight = self.embedding.weight  # Press & Wolf 2017
        # torch.compile the input-feeding step (s2s/nn/feeding.py); set by the trainer
        # from train.compile, not saved
        self.compile_steps = False

    # ------------------------------------------------------------------ state
    def prepare(self, enc: EncoderOutput) -> EncoderOutput:
        """Project attention keys once per source batch."""
        if self.attention is None:
            return enc
        return replace(enc, prepared=self.attention.prepare(enc.states))

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        batch = enc.final.shape[0]
        if self.copy_bridge:
            parts = self._copied_states(enc)
        elif self.bridge is None:
            zeros = enc.final.new_zeros(self.layers, batch, self.hidden_size)
            parts = [zeros] * (2 if is_lstm(self.cell) else 1)
        else:
            parts = [
                torch.tanh(lin(enc.final))
                .view(batch, self.layers, self.hidden_size)
                .transpose(0, 1)
                for lin in self.bridge
            ]  # each (layers, batch, hidden)
        hidden: list[LayerState] = []
        for i in range(self.layers):
            layer = [p[i : i + 1].contiguous() for p in parts]
            hidden.append(tuple(layer) if is_lstm(self.cell) else layer[0])
        feed = enc.final.new_zeros(batch, self.out_size) if self.input_feeding else None
        return DecoderState(hidden=hidden, feed=feed)

    def _copied_states(self, enc: EncoderOutput) -> list[torch.Tensor]:
        """OpenNMT-py's default start (Joey NMT's "last"): decoder layer i takes encoder
        layer i's final h (and c), directions concatenated; where the layer counts differ,
        every decoder layer takes the encoder's top layer. An LSTM decoder after a cell
        without c starts its c at zero. Each part (layers, batch, hidden)."""
        states = enc.final_states  # (batch, enc_layers, kinds, hidden)
        top = states.shape[1] - 1
        index = list(range(self.layers)) if top + 1 == self.layers else [top] * self.layers
        h = states[:, index, 0].transpose(0, 1)
        if not is_lstm(self.cell):
            return [h]
        c = states[:, index, 1].transpose(0, 1) if states.shape[2] == 2 else torch.zeros_like(h)
        return [h, c]

    # ------------------------------------------------------------------ compute
    def attend(
        self, top: torch.Tensor, enc: EncoderOutput
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """top: (batch, tgt_len, hidden) -> h~ (batch, tgt_len, out_size), weights.
        ``enc`` may hold one row per group of G consecutive rows of ``top`` (the beams of
        a sentence in beam search, ``Seq2Seq.grouped_encoder``): each group's queries
        then attend over its one copy of the encoder output, G x tgt_len at once."""
        if self.attention is None:
            out = top if self.combine is None else self.combine(top)
            return out, None
        prepared = enc.prepared if enc.prepared is not None else self.attention.prepare(enc.states)
        rows, length = top.shape[:2]
        if enc.states.shape[0] == rows:
            context, weights = self.attention(top, enc.states, prepared, enc.mask)
        else:  # (sentences, G * tgt_len, hidden) queries
            if rows % enc.states.shape[0]:
                raise ValueError(f"{rows} query rows cannot share {enc.states.shape[0]} sources")
            query = top.reshape(enc.states.shape[0], -1, top.shape[-1])
            context, weights = self.attention(query, enc.states, prepared, enc.mask)
            context, weights = context.view(rows, length, -1), weights.view(rows, length, -1)
        att_vec = self.combine(torch.cat([top, context], dim=-1))
        return (torch.tanh(att_vec) if self.attentional_tanh else att_vec), weights

    def _advance(self, prev: torch.Tensor, state: DecoderState, enc: EncoderOutput):
        """One step short of the output layer: prev (batch,) -> h~ (batch, 1, out), the
        attention weights (or None) and the new state."""
        emb = self.embedding_dropout(self.embedding(prev)).unsqueeze(1)  # (batch, 1, emb)
        if self.input_feeding:
            emb = torch.cat([emb, state.feed.unsqueeze(1)], dim=-1)
        top, hidden = self.rnn(emb, state.hidden)
        att_vec, weights = self.attend(top, enc)  # (batch, 1, out)
        feed = att_vec.squeeze(1) if self.input_feeding else None
        return att_vec, weights, DecoderState(hidden=hidden, feed=feed)

    def step(self, prev: torch.Tensor, state: DecoderState, enc: EncoderOutput) -> StepOutput:
        """prev: (batch,) previous target tokens -> logits for the next one."""
        att_vec, weights, new_state = self._advance(prev, state, enc)
        return StepOutput(
            features=self.dropout(att_vec.squeeze(1)),
            head=self.output,
            state=new_state,
            attention=None if weights is None else weights.squeeze(1),
        )

    def scheduled(
        self,
        tgt_in: torch.Tensor,
        enc: EncoderOutput,
        *,
        teacher_prob: float,
        sample: bool = False,
        coins: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scheduled sampling (Bengio et al. 2015): at each position after the first,
        feed the true previous token with probability ``teacher_prob``, else the
        model's own prediction from the step before (its argmax, or a sample from its
        distribution with ``sample``), decided per token; no gradient flows through
        the choice. ``coins``: (batch, tgt_len) uniform draws (drawn here if None).
        Returns h~ (batch, tgt_len, out_size) and the tokens fed (batch, tgt_len)."""
        use_gold = _coin_tosses(tgt_in, teacher_prob, coins)
        state = self.init_state(enc)
        outs, fed = [], []
        prev = tgt_in[:, 0]
        with one_mask_per_sequence(self.rnn):
            for t in range(tgt_in.shape[1]):
                if t > 0:
                    with torch.no_grad():
                        guess = _guess(self.output(outs[-1].squeeze(1)), sample)
                    prev = torch.where(use_gold[:, t], tgt_in[:, t], guess)
                fed.append(prev)
                att_vec, _, state = self._advance(prev, state, enc)  # (batch, 1, out)
                outs.append(att_vec)
        return self.dropout(torch.cat(outs, dim=1)), torch.stack(fed, dim=1)

    def scheduled_parallel(
        self,
        tgt_in: torch.Tensor,
        enc: EncoderOutput,
        *,
        teacher_prob: float,
        sample: bool = False,
        coins: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Parallel scheduled sampling (Duckworth et al. 2019): the model's guesses come
        from one teacher-forced pass (no gradient) instead of its own sampled prefix, so
        both passes run the fused kernels. Same coins and return values as ``scheduled``.
        The guess pass runs only over the sentences and the first positions that hold a
        guess to feed (``guess_window``; a few percent while ``teacher_prob`` is near 1:
        each row's guesses depend on its own earlier tokens only), its output layer only
        at those guesses, and not at all when every coin picks the true token."""
        use_gold = _coin_tosses(tgt_in, teacher_prob, coins)
        real = tgt_in != self.embedding.padding_idx
        need = torch.zeros_like(real)  # the guess at t - 1 is fed at a real position t
        need[:, :-1] = ~use_gold[:, 1:] & real[:, 1:]
        guess = torch.zeros_like(tgt_in)
        if bool(need.any()):
            rows, length = guess_window(need)
            wanted = need[rows, :length]
            found = torch.zeros_like(wanted, dtype=tgt_in.dtype)
            with torch.no_grad():
                states = self.forward(tgt_in[rows, :length], enc.reorder(rows))[wanted]
                found[wanted] = _guess(self.output(pad_rows(states))[: states.shape[0]], sample)
            guess[rows, :length] = found
        fed = tgt_in.clone()
        fed[:, 1:] = torch.where(use_gold[:, 1:], tgt_in[:, 1:], guess[:, :-1])
        fed = torch.where(real, fed, tgt_in)  # padding stays
        return self.forward(fed, enc), fed

    def forward(self, tgt_in: torch.Tensor, enc: EncoderOutput) -> torch.Tensor:
        """Teacher forcing. tgt_in: (batch, tgt_len) -> h~ (batch, tgt_len, out_size),
        dropout applied; ``output`` turns it into logits."""
        if self.input_feeding and feeding.supported(self):
            # validation's loss (eval, no gradients) runs eager: compiling a third graph
            # for one pass per validation cost more than it saved (docs/speed.md)
            compiled = self.compile_steps and (self.training or torch.is_grad_enabled())
            return self.dropout(feeding.teacher_forced(self, tgt_in, enc, compiled=compiled))
        state = self.init_state(enc)
        if self.input_feeding:
            outs = []
            feed = state.feed
            hidden = state.hidden
            emb_all = self.embedding_dropout(self.embedding(tgt_in))
            with one_mask_per_sequence(self.rnn):
                for t in range(tgt_in.shape[1]):
                    inp = torch.cat([emb_all[:, t : t + 1], feed.unsqueeze(1)], dim=-1)
                    top, hidden = self.rnn(inp, hidden)
                    att_vec, _ = self.attend(top, enc)
                    feed = att_vec.squeeze(1)
                    outs.append(att_vec)
            return self.dropout(torch.cat(outs, dim=1))
        emb = self.embedding_dropout(self.embedding(tgt_in))  # (batch, tgt_len, emb)
        top, _ = self.rnn(emb, state.hidden)  # (batch, tgt_len, hidden)
        att_vec, _ = self.attend(top, enc)
        return self.dropout(att_vec)
