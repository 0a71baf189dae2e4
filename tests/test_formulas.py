"""Formulas checked against hand computations: attention scores and context, the four
stacking wirings on layers replaced by known functions, gradient clipping, and beam
scores against the model's own log-probabilities."""

import math

import pytest
import torch
from torch import nn

from s2s.nn.attention import AdditiveAttention, MultiplicativeAttention
from s2s.nn.cells import RecurrentStack

# --------------------------------------------------------------------------- attention

Q = torch.tensor([[[1.0, 0.5]]])  # (batch 1, tgt_len 1, query 2)
KEYS = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]])  # (1, src_len 3, key 2)
MASK = torch.tensor([[True, True, False]])  # the third key is padding


def softmax2(a: float, b: float) -> tuple[float, float]:
    ea, eb = math.exp(a), math.exp(b)
    return ea / (ea + eb), eb / (ea + eb)


def check_attention(att, s1: float, s2: float) -> None:
    """Scores s1, s2 for the two real keys, worked out by hand: the weights are their
    softmax, the padded key gets weight 0, the context is the weighted keys."""
    with torch.no_grad():
        scores = att.score(Q, att.prepare(KEYS))
        context, weights = att(Q, KEYS, att.prepare(KEYS), MASK)
    assert scores[0, 0, :2].tolist() == pytest.approx([s1, s2], abs=1e-6)
    w1, w2 = softmax2(s1, s2)
    assert weights[0, 0].tolist() == pytest.approx([w1, w2, 0.0], abs=1e-6)
    assert context[0, 0].tolist() == pytest.approx([w1 * 1.0, w2 * 1.0], abs=1e-6)


def test_additive_attention_is_v_tanh_wq_plus_uk():
    att = AdditiveAttention(query_size=2, key_size=2, hidden_size=2)
    with torch.no_grad():
        att.query_proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # W
        att.key_proj.weight.copy_(torch.tensor([[0.5, 0.0], [1.0, -1.0]]))  # U
        att.v.weight.copy_(torch.tensor([[1.0, -1.0]]))
    # W q = (1, 1); U k1 = (0.5, 1), U k2 = (0, -1)
    s1 = math.tanh(1.5) - math.tanh(2.0)
    s2 = math.tanh(1.0) - math.tanh(0.0)
    check_attention(att, s1, s2)


def test_dot_attention_is_the_inner_product():
    att = MultiplicativeAttention(query_size=2, key_size=2, form="dot")
    check_attention(att, 1.0 * 1.0 + 0.5 * 0.0, 1.0 * 0.0 + 0.5 * 1.0)


def test_general_attention_is_q_w_k():
    att = MultiplicativeAttention(query_size=2, key_size=2, form="general")
    with torch.no_grad():
        att.key_proj.weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 3.0]]))  # W
    # W k1 = (2, -1), W k2 = (1, 3); q = (1, 0.5)
    check_attention(att, 2.0 - 0.5, 1.0 + 1.5)


# --------------------------------------------------------------------------- stacking


class Known(nn.Module):
    """A stand-in recurrent layer computing a known function of its input."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, state=None):
        return self.fn(x), ("final", state)


def f1(x):
    return 2 * x + 1


def f2(x):
    return x * x


def f3(x):
    return -0.5 * x


def f2_skip(z):  # skip layers read [o; x]
    return z[..., :3] ** 2 + z[..., 3:]


def f3_skip(z):
    return -0.5 * z[..., :3] + 3 * z[..., 3:]


def known_stack(stacking: str) -> RecurrentStack:
    stack = RecurrentStack(cell="gru", input_size=3, hidden_size=3, layers=3, stacking=stacking)
    fns = (f1, f2_skip, f3_skip) if stacking == "skip" else (f1, f2, f3)
    stack.layers = nn.ModuleList(Known(fn) for fn in fns)
    return stack


X = torch.tensor([[[0.5, -1.0, 2.0], [1.5, 0.0, -0.25]]])  # (batch 1, time 2, 3)


def expected_output(stacking: str) -> torch.Tensor:
    o1 = f1(X)
    if stacking == "none":
        return f3(f2(o1))
    if stacking == "residual":  # from layer 2 on: o_l + x_l
        h2 = f2(o1) + o1
        return f3(h2) + h2
    if stacking == "dense":  # x_{l+1} = o_l + x_2 + ... + x_l (Britz et al. 2017)
        x2 = o1
        x3 = f2(x2) + x2
        return f3(x3) + x2 + x3
    o2 = f2_skip(torch.cat([o1, X], -1))  # skip (Graves 2013): [o_l; x], outputs summed
    o3 = f3_skip(torch.cat([o2, X], -1))
    return o1 + o2 + o3


@pytest.mark.parametrize("stacking", ["none", "residual", "dense", "skip"])
def test_stacking_wires_layers_as_its_formula_says(stacking):
    out, finals = known_stack(stacking)(X)
    torch.testing.assert_close(out, expected_output(stacking))
    assert finals == [("final", None)] * 3  # every layer's final state, in order


def test_the_four_wirings_give_four_different_outputs():
    outs = [known_stack(s)(X)[0] for s in ("none", "residual", "dense", "skip")]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(outs[i], outs[j])


def test_dropout_acts_between_layers_only():
    """Zaremba et al. 2014: dropout on the connections between layers (not on the
    stack's input, nor in evaluation)."""
    seen = []

    def record(x):
        seen.append(x.clone())
        return x

    stack = RecurrentStack(cell="gru", input_size=3, hidden_size=3, layers=2, dropout=0.5)
    stack.layers = nn.ModuleList([Known(record), Known(record)])
    x = torch.ones(4, 5, 3)
    torch.manual_seed(0)
    stack.train()(x)
    assert torch.equal(seen[0], x)  # the first layer reads its input untouched
    assert set(seen[1].unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled
    seen.clear()
    stack.eval()(x)
    assert torch.equal(seen[1], x)


# --------------------------------------------------------------------------- clipping


def gradients_and_update(tmp_path, corpus, name, **options):
    """The gradient of the trainer's normalised loss on a batch, and the update its
    optimizer makes from it (plain SGD, lr 1)."""
    from test_tricks import make_trainer, sgd

    from s2s.data.corpus import collate
    from s2s.translation.objective import batch_loss

    trainer = make_trainer(tmp_path, corpus, name, **(sgd(lr=1.0) | options))
    batch = collate(trainer.task.train_corpus, [0, 1, 2, 3])
    model = trainer.model
    model.zero_grad()
    (batch_loss(model, batch) / batch.n_tokens).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer._set_lr(1.0)
    trainer._update([batch])
    delta = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    return grads, delta


def test_clipping_by_norm_rescales_the_gradient_to_the_limit(tmp_path, tiny_corpus):
    grads, delta = gradients_and_update(tmp_path, tiny_corpus, "norm", clip_grad_norm=0.01)
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
    assert norm > 0.01  # so clipping acts
    for name, g in grads.items():  # update = -lr * g * (limit / ||g||): same direction
        torch.testing.assert_close(delta[name], -g * (0.01 / norm), atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("limit", [0.0, 0.5, 2.0, 1e6])
def test_clipping_by_norm_equals_pytorchs_and_leaves_unclipped_gradients_alone(limit):
    """Updater._clip_norm: the gradients clip_grad_norm_ leaves, bit for bit, and the
    same norm; no multiplication where the factor would be 1 (or clipping is off)."""
    import types

    from s2s.training.update import Updater

    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(5, 3, generator=gen) * 0.3, torch.randn(7, generator=gen) * 0.3]
    mine = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    theirs = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, q, g in zip(mine, theirs, grads):
        p.grad, q.grad = g.clone(), g.clone()
    from torch.utils._python_dispatch import TorchDispatchMode

    written = []  # the gradients some operator wrote into

    class Writes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func._schema.is_mutable:
                written.extend(a for a in torch.utils._pytree.tree_leaves(args))
            return func(*args, **(kwargs or {}))

    updater = types.SimpleNamespace(s=types.SimpleNamespace(clip_grad_norm=limit))
    with Writes():
        total, norm = Updater._clip_norm(updater, mine, torch.tensor(3.5, dtype=torch.float64))
    want = torch.nn.utils.clip_grad_norm_(theirs, limit or float("inf"))
    assert total == 3.5 and norm == pytest.approx(float(want), rel=1e-6) and norm > 0.5
    for p, q in zip(mine, theirs):
        assert torch.equal(p.grad, q.grad)
    touched = [any(w is p.grad for w in written) for p in mine]
    if limit == 0 or limit > norm:  # not clipped: not touched
        assert touched == [False, False]
    else:
        assert touched == [True, True]
        assert sum(float(p.grad.pow(2).sum()) for p in mine) == pytest.approx(limit**2, rel=1e-5)


def test_clipping_inside_fused_adams_step_equals_clipping_before_it(
    tmp_path, tiny_corpus, monkeypatch
):
    """With fused Adam the clipping factor goes into its step (``grad_scale``): the same
    update, and the same gradients left, as scaling the gradients before the step; the
    factor is not kept for the next update."""
    from test_tricks import make_trainer, updated

    import s2s.training.update as update

    results = {}
    for explicit in (False, True):
        if explicit:
            monkeypatch.setattr(update, "_fused", lambda optimizer: False)
        options = dict(optimizer="adam", lr=0.01, clip_grad_norm=0.01, label_smoothing=0.0)
        trainer = make_trainer(tmp_path, tiny_corpus, f"run{explicit}", **options)
        optimizer = trainer.updater.optimizer
        assert optimizer.param_groups[0]["fused"]
        delta, _ = updated(trainer)
        assert getattr(optimizer, "grad_scale", None) is None
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
        assert norm == pytest.approx(0.01, rel=1e-4)  # clipped, either way
        results[explicit] = delta, grads
    for got, want in zip(results[False], results[True]):
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-9, msg=name)


def test_clipping_by_norm_keeps_non_finite_gradients_for_the_guard():
    import types

    from s2s.training.update import Updater

    p, q = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    updater = types.SimpleNamespace(s=types.SimpleNamespace(clip_grad_norm=0.1))
    for bad in (float("inf"), float("nan")):
        p.grad, q.grad = torch.tensor([1.0, bad, 2.0]), torch.tensor([3.0, 4.0])
        _, norm = Updater._clip_norm(updater, [p, q], torch.tensor(1.0))
        assert not math.isfinite(norm)
        # not scaled (by 0 for an infinite norm: inf * 0 would be NaN, 3 and 4 zeros)
        assert q.grad.tolist() == [3.0, 4.0] and p.grad[0] == 1.0


def test_clipping_by_value_clamps_each_entry(tmp_path, tiny_corpus):
    grads, delta = gradients_and_update(tmp_path, tiny_corpus, "value", clip_grad_value=1e-3)
    assert max(float(g.abs().max()) for g in grads.values()) > 1e-3
    for name, g in grads.items():
        torch.testing.assert_close(delta[name], -g.clamp(-1e-3, 1e-3), atol=1e-7, rtol=1e-4)


# --------------------------------------------------------------------------- encoder, decoder


def small_model(**kw):
    from test_model import model_cfg

    from s2s.nn.seq2seq import build_model

    torch.manual_seed(3)
    model = build_model(model_cfg(**kw), src_vocab=20, tgt_vocab=20).eval()
    with torch.no_grad():  # biases away from zero, so each term shows
        for name, p in model.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    return model


def test_encoder_final_state_joins_both_directions_at_their_ends():
    """The summary is [forward state after the last token; backward state after the
    first], per layer-top and per sentence."""
    from test_model import toy_batch

    model = small_model()
    batch = toy_batch()
    with torch.no_grad():
        enc = model.encoder(batch.src, batch.src_lengths)
    hidden = enc.states.shape[-1] // 2
    for i, n in enumerate(batch.src_lengths.tolist()):
        torch.testing.assert_close(enc.final[i, :hidden], enc.states[i, n - 1, :hidden])
        torch.testing.assert_close(enc.final[i, hidden:], enc.states[i, 0, hidden:])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bridge_is_tanh_of_a_linear_map_of_the_encoder_summary(cell):
    from test_model import toy_batch

    model = small_model(decoder={"cell": cell, "layers": 2})
    batch = toy_batch()
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_lengths)
        state = model.init_state(enc)
        for kind, lin in enumerate(model.decoder.bridge):  # h (and c for an LSTM)
            expected = torch.tanh(enc.final @ lin.weight.t() + lin.bias)  # (batch, 2 * H)
            for layer in range(2):
                got = state.hidden[layer][kind] if cell == "lstm" else state.hidden[layer]
                part = expected[:, layer * 10 : (layer + 1) * 10]
                torch.testing.assert_close(got[0], part)


@pytest.mark.parametrize(
    "enc_cell, dec_cell, enc_layers", [("lstm", "lstm", 2), ("lstm", "gru", 2), ("gru", "lstm", 1)]
)
def test_copied_bridge_starts_each_decoder_layer_from_the_encoders_own_final_state(
    enc_cell, dec_cell, enc_layers
):
    """OpenNMT-py's start (model.bridge_type copy): decoder layer i begins at encoder layer
    i's final h (and c), both directions joined, each sentence's state after its own last
    token, as the encoder run on that sentence alone ends; where the layer counts differ,
    every decoder layer takes the top encoder layer's; an LSTM decoder after a GRU starts
    its c at zero. No bridge parameters."""
    from test_model import toy_batch

    model = small_model(
        bridge_type="copy",
        encoder={"cell": enc_cell, "layers": enc_layers, "hidden_size": 5},
        decoder={"cell": dec_cell, "layers": 2},
    )
    assert model.decoder.bridge is None
    batch = toy_batch()
    with torch.no_grad():
        state = model.init_state(model.encode(batch.src, batch.src_lengths))
        for i, n in enumerate(batch.src_lengths.tolist()):
            x = model.encoder.embedding(batch.src[i : i + 1, :n])
            ends = []  # per encoder layer: (h, c) or (h,), directions joined
            for rnn in model.encoder.rnn.layers:
                x, final = rnn(x)
                kinds = final if isinstance(final, tuple) else (final,)
                ends.append([torch.cat([k[0, 0], k[1, 0]]) for k in kinds])
            for layer in range(2):
                want = ends[layer if enc_layers == 2 else -1]
                got = state.hidden[layer]
                got_h = got[0] if dec_cell == "lstm" else got
                torch.testing.assert_close(got_h[0, i], want[0])
                if dec_cell == "lstm":
                    c = want[1] if enc_cell == "lstm" else torch.zeros(10)
                    torch.testing.assert_close(got[1][0, i], c)


@pytest.mark.parametrize("form", ["tanh", "linear"])
def test_attentional_vector_is_tanh_of_w_c_h_and_context(form):
    """Luong et al. 2015, eq. 5: h~ = tanh(W_c [h; c]), c the attention-weighted keys;
    model.attentional_vector linear: W_c [h; c] alone (OpenNMT-py's mlp attention)."""
    from test_model import toy_batch

    model = small_model(attention="additive", attentional_vector=form)
    batch = toy_batch()
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_lengths)
        top = torch.randn(batch.src.shape[0], 3, 10)
        got, weights = model.decoder.attend(top, enc)
        context = torch.bmm(weights, enc.states)
        combine = model.decoder.combine
        expected = torch.cat([top, context], -1) @ combine.weight.t() + combine.bias
    torch.testing.assert_close(got, torch.tanh(expected) if form == "tanh" else expected)
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:2]))


def test_hard_alignment_counts_positions_of_the_original_source():
    from s2s.decoding.translate import hard_alignment

    # 3 source tokens + EOS; 2 target tokens + EOS; each row's argmax over real tokens
    weights = torch.tensor([[0.1, 0.7, 0.1, 0.1], [0.6, 0.1, 0.1, 0.2], [0.0, 0.0, 0.0, 1.0]])
    assert hard_alignment(weights, 4, reverse_source=False) == "1-0 0-1"
    # fed reversed, position 0 of the model's input is the original's last token
    assert hard_alignment(weights, 4, reverse_source=True) == "1-0 2-1"
    # an output cut at the length limit has no EOS row: its last token keeps its link
    assert hard_alignment(weights[:2], 4, reverse_source=False) == "1-0"  # taken for EOS
    assert hard_alignment(weights[:2], 4, reverse_source=False, tgt_len=2) == "1-0 0-1"


# --------------------------------------------------------------------------- search


def test_beam_scores_are_the_models_log_probabilities_of_its_outputs():
    """Rescoring each n-best hypothesis by teacher forcing gives its search score
    (length penalty off): beam search reorders states and attention correctly."""
    from test_decoding import sharp_model, sources

    from s2s.decoding.search import beam_search, max_lengths

    for kw in ({}, {"attention": "additive", "decoder": {"input_feeding": True}}):
        model = sharp_model(7, **kw)
        src, lengths = sources(batch=5, seed=1)
        limit = max_lengths(lengths, 1.0, extra=3)
        nb = beam_search(model, src, lengths, bos=2, eos=3, beam=4, max_len=limit, nbest=3)
        checked = 0
        for i in range(src.shape[0]):
            for tokens, value in zip(nb.tokens[i], nb.scores[i]):
                ended = len(tokens) < int(limit[i])  # else cut at the limit, no EOS
                target = tokens + ([3] if ended else [])
                n = int(lengths[i])
                with torch.no_grad():
                    tgt_in = torch.tensor([[2] + target[:-1]])
                    logits = model.logits(model(src[i : i + 1, :n], lengths[i : i + 1], tgt_in))
                    logp = torch.log_softmax(logits[0], -1)
                    rescored = float(logp[torch.arange(len(target)), torch.tensor(target)].sum())
                assert value == pytest.approx(rescored, abs=1e-4)
                checked += 1
        assert checked >= 10
