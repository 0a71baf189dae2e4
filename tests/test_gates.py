"""The search step with the decoder LSTM's input product as a table (s2s.decoding.gates)."""

import pytest
import torch
from test_decoding import sharp_model, sources

from s2s.decoding import translate as module
from s2s.decoding.ensemble import Ensemble
from s2s.decoding.gates import TableStepper, table_steps
from s2s.decoding.search import beam_search, greedy, max_lengths

CPU = torch.device("cpu")


def first_steps(decoder, stepper, steps=3, seed=0):
    """Logits and states of ``steps`` steps from the same start, each fed the same
    random tokens, through the model's own step and through ``stepper``."""
    src, lengths = sources()
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.inference_mode():
        for s in (decoder, stepper):
            enc = s.encode(src, lengths)
            state, rows = s.init_state(enc), []
            for t in range(steps):
                prev = torch.randint(4, 20, (src.shape[0],), generator=g) if t else None
                prev = torch.full((src.shape[0],), 2) if prev is None else prev
                step = s.step(prev, state, enc)
                state = step.state
                rows.append((step.logits, *state.hidden[0], step.attention))
            g.manual_seed(seed)
            out.append(rows)
    return out


@pytest.mark.parametrize("attention", ["multiplicative", "additive", "none"])
def test_the_table_step_equals_the_models_step_to_the_bit_in_bf16(attention):
    decoder = module.decoding_model(sharp_model(2, attention=attention), "bf16", CPU)
    ours, theirs = first_steps(decoder, TableStepper(decoder))
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            assert (x is None and y is None) or (x.dtype == torch.bfloat16 and torch.equal(x, y))


def test_the_table_step_equals_the_models_step_in_fp32_within_rounding():
    # float32 products of different row counts may round differently (MKL)
    decoder = sharp_model(2)
    ours, theirs = first_steps(decoder, TableStepper(decoder))
    for a, b in zip(ours, theirs):
        for x, y in zip(a[:3], b[:3]):
            assert x.dtype == torch.float32
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_search_through_the_table_finds_what_the_model_finds():
    decoder = module.decoding_model(sharp_model(3), "bf16", CPU)
    stepper = TableStepper(decoder)
    src, lengths = sources(batch=9)
    limit = max_lengths(lengths, 2.0)
    g = [
        greedy(d, src, lengths, bos=2, eos=3, max_len=limit, row_step=8) for d in (decoder, stepper)
    ]
    assert g[0].tokens == g[1].tokens and g[0].scores == g[1].scores
    b = [
        beam_search(d, src, lengths, bos=2, eos=3, beam=3, nbest=2, max_len=limit, attention=True)
        for d in (decoder, stepper)
    ]
    assert b[0].tokens == b[1].tokens and b[0].scores == b[1].scores
    pairs = [(x, y) for r, s in zip(b[0].attention, b[1].attention) for x, y in zip(r, s)]
    assert pairs and all(torch.equal(x, y) for x, y in pairs)


@pytest.mark.parametrize(
    "kw",
    [
        {"decoder": {"input_feeding": True}},
        {"decoder": {"cell": "gru"}},
        {"decoder": {"layers": 2}},
        {"decoder": {"cell": "layernorm_lstm"}},
    ],
    ids=["input-feeding", "gru", "two-layers", "step-loop-cell"],
)
def test_only_a_one_layer_fused_lstm_decoder_without_input_feeding_is_tabled(kw):
    assert table_steps(sharp_model(2))
    model = sharp_model(2, **kw)
    assert not table_steps(model)
    with pytest.raises(ValueError, match="one-layer LSTM decoder without input feeding"):
        TableStepper(model)
    assert not table_steps(Ensemble([sharp_model(2), sharp_model(3)]))


class Letters:
    """A toy tokenizer over the test models' 20 ids: letters a-p are ids 4-19."""

    def encode(self, lines):
        return [[4 + (ord(c) - 97) % 16 for c in line if c.isalpha()] for line in lines]

    def decode(self, seqs):
        return ["".join(chr(97 + i - 4) for i in seq) for seq in seqs]


def test_translate_searches_through_the_table_where_it_applies(monkeypatch):
    src_tok = tgt_tok = Letters()
    lines = ["abc", "defgh", "", "ijklmnop", "ab"]
    model = sharp_model(2, attention="multiplicative")
    calls = []
    step = TableStepper.step
    monkeypatch.setattr(TableStepper, "step", lambda self, *a: calls.append(1) or step(self, *a))
    kw = dict(reverse_source=False, precision="bf16", beam=2)
    tabled = module.translate_lines(model, src_tok, tgt_tok, lines, **kw)
    assert calls
    calls.clear()
    monkeypatch.setattr(module, "table_steps", lambda m: False)
    assert module.translate_lines(model, src_tok, tgt_tok, lines, **kw) == tabled and not calls
