import itertools

import pytest
import torch

from s2s import config
from s2s.data.corpus import Batch
from s2s.decoding.search import greedy, max_lengths
from s2s.nn.seq2seq import build_model
from s2s.translation.objective import batch_loss

V = 20


def model_cfg(**kw) -> config.ModelConfig:
    enc = kw.pop("encoder", {})
    dec = kw.pop("decoder", {})
    data = {
        "embedding_size": 8,
        "attention_size": 8,
        "dropout": 0.0,
        "embedding_dropout": 0.0,
        "encoder": {"hidden_size": 6, **enc},
        "decoder": {"hidden_size": 10, **dec},
        **kw,
    }
    return config.from_dict({"model": data, "data": {"train": "x"}}).model


def toy_batch(seed=0, batch=4, src_len=5, tgt_len=6) -> Batch:
    """Random sources (row i is i tokens shorter) and targets y + EOS (row 1 padded)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (batch, src_len), generator=g)
    lengths = torch.tensor([max(1, src_len - i) for i in range(batch)])
    for i, n in enumerate(lengths):
        src[i, n:] = 0
    y = torch.randint(4, V, (batch, tgt_len), generator=g)
    tgt_in = torch.cat([torch.full((batch, 1), 2), y], dim=1)
    tgt_out = torch.cat([y, torch.full((batch, 1), 0)], dim=1)
    tgt_out[:, -1] = 3
    tgt_out[1, -3:] = torch.tensor([3, 0, 0])  # a shorter target, padded
    tgt_in[1, -2:] = 0
    return Batch(
        src=src,
        src_lengths=lengths,
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        n_tokens=int((tgt_out != 0).sum()),
    )


GRID = list(
    itertools.product(
        ("lstm", "gru", "rnn"),
        (False, True),
        ("none", "additive", "multiplicative"),
        ("none", "residual", "dense"),
    )
)


@pytest.mark.parametrize("cell,bidirectional,attention,stacking", GRID)
def test_variant_grid_builds_and_trains_a_step(cell, bidirectional, attention, stacking):
    torch.manual_seed(0)
    cfg = model_cfg(
        attention=attention,
        encoder={"cell": cell, "bidirectional": bidirectional, "layers": 2, "stacking": stacking},
        decoder={"cell": cell, "layers": 2, "stacking": stacking},
    )
    model = build_model(cfg, src_vocab=V, tgt_vocab=V)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = toy_batch()
    before = [p.detach().clone() for p in model.parameters()]
    loss = batch_loss(model, batch) / batch.n_tokens
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(changed), "every parameter gets a gradient and moves"
    after = batch_loss(model, batch) / batch.n_tokens
    assert after < loss


@pytest.mark.parametrize("input_feeding", [False, True])
@pytest.mark.parametrize("attention", ["none", "additive", "multiplicative"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_teacher_forced_forward_equals_stepping(cell, attention, input_feeding):
    """The fused training path and the step-wise search path compute the same thing."""
    torch.manual_seed(1)
    cfg = model_cfg(
        attention=attention,
        encoder={"cell": cell, "layers": 2},
        decoder={"cell": cell, "layers": 2, "stacking": "residual", "input_feeding": input_feeding},
    )
    model = build_model(cfg, src_vocab=V, tgt_vocab=V).eval()
    batch = toy_batch(seed=3)
    with torch.no_grad():
        full = model.logits(model(batch.src, batch.src_lengths, batch.tgt_in))
        enc = model.encode(batch.src, batch.src_lengths)
        state = model.init_state(enc)
        steps = []
        for t in range(batch.tgt_in.shape[1]):
            out = model.step(batch.tgt_in[:, t], state, enc)
            steps.append(out.logits)
            state = out.state
    torch.testing.assert_close(full, torch.stack(steps, dim=1), rtol=1e-5, atol=1e-5)


def test_padding_in_source_does_not_change_encoding():
    torch.manual_seed(2)
    model = build_model(model_cfg(attention="additive"), src_vocab=V, tgt_vocab=V).eval()
    src = torch.tensor([[5, 6, 7, 3]])
    padded = torch.tensor([[5, 6, 7, 3, 0, 0], [8, 9, 3, 0, 0, 0]])
    with torch.no_grad():
        a = model.encode(src, torch.tensor([4]))
        b = model.encode(padded, torch.tensor([4, 3]))
    torch.testing.assert_close(a.final[0], b.final[0])
    torch.testing.assert_close(a.states[0], b.states[0, :4])


@pytest.mark.parametrize("value", [1.0, 2.5])
def test_forget_gate_bias(value):
    cfg = model_cfg(init={"forget_bias": value})
    model = build_model(cfg, src_vocab=V, tgt_vocab=V)
    lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    assert lstms
    for lstm in lstms:
        h = lstm.hidden_size
        total = lstm.bias_ih_l0 + lstm.bias_hh_l0
        assert torch.allclose(total[h : 2 * h], torch.full((h,), value))
        assert torch.all(total[:h] == 0) and torch.all(total[2 * h :] == 0)


def test_fan_in_uniform_init_bounds():
    model = build_model(model_cfg(tie_target_embeddings=False), src_vocab=V, tgt_vocab=V)
    embeddings = {model.encoder.embedding.weight, model.decoder.embedding.weight}
    for name, p in model.named_parameters():
        if p.dim() == 2:
            # An embedding lookup reads one row: fan_in 1, so U(-1, 1).
            bound = 1.0 if any(p is e for e in embeddings) else 1 / p.shape[1] ** 0.5
            assert p.abs().max() <= bound + 1e-6, name
            assert p.abs().max() > 0.5 * bound, name
        elif "bias_ih" not in name:  # LSTM input biases hold the forget-gate value
            assert torch.all(p == 0), name
    assert torch.all(model.decoder.embedding.weight[0] == 0), "padding row is zero"


def test_tied_embeddings_share_storage():
    model = build_model(model_cfg(tie_target_embeddings=True), src_vocab=V, tgt_vocab=V)
    assert model.decoder.output.weight is model.decoder.embedding.weight
    untied = build_model(model_cfg(tie_target_embeddings=False), src_vocab=V, tgt_vocab=V)
    assert untied.decoder.output.weight is not untied.decoder.embedding.weight


def test_relu_vanilla_rnn_is_selectable():
    cfg = model_cfg(encoder={"cell": "rnn", "activation": "relu"}, decoder={"cell": "rnn"})
    model = build_model(cfg, src_vocab=V, tgt_vocab=V)
    assert model.encoder.rnn.layers[0].nonlinearity == "relu"
    assert model.decoder.rnn.layers[0].nonlinearity == "tanh"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_tiny_model_memorises_a_batch(cell):
    torch.manual_seed(0)
    cfg = model_cfg(
        encoder={"cell": cell, "hidden_size": 32},
        decoder={"cell": cell, "hidden_size": 64},
        embedding_size=32,
        attention="multiplicative",
    )
    model = build_model(cfg, src_vocab=V, tgt_vocab=V)
    batch = toy_batch(seed=5, batch=6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = batch_loss(model, batch) / batch.n_tokens
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    model.eval()
    hyp = greedy(
        model,
        batch.src,
        batch.src_lengths,
        bos=2,
        eos=3,
        max_len=max_lengths(batch.src_lengths, 3.0),
    )
    for row, target in zip(hyp.tokens, batch.tgt_out.tolist()):
        assert row == [t for t in target if t not in (0, 3)]


@pytest.mark.parametrize("stacking", ["none", "residual", "dense"])
def test_bidirectional_backward_direction_ignores_padding(stacking):
    """Each sentence encodes the same alone and inside a padded batch (both directions,
    every position), so padding never reaches real positions."""
    torch.manual_seed(4)
    cfg = model_cfg(encoder={"layers": 2, "stacking": stacking, "bidirectional": True})
    model = build_model(cfg, src_vocab=V, tgt_vocab=V).eval()
    batch = torch.tensor([[5, 6, 7, 8, 3], [9, 10, 3, 0, 0], [11, 3, 0, 0, 0]])
    lengths = torch.tensor([5, 3, 2])
    with torch.no_grad():
        together = model.encoder(batch, lengths)
        for row in range(3):
            n = int(lengths[row])
            alone = model.encoder(batch[row : row + 1, :n], lengths[row : row + 1])
            torch.testing.assert_close(together.states[row, :n], alone.states[0])
            torch.testing.assert_close(together.final[row], alone.final[0])
