"""Teacher-forced input feeding in one step function (s2s/nn/feeding.py): the same values
and gradients as the generic loop, eager, compiled and under bf16 autocast; the decoders it
does not cover keep the generic loop; fused Adam."""

import pytest
import torch
from test_model import V, model_cfg, toy_batch

import s2s.nn.feeding as feeding
from s2s.nn.seq2seq import build_model
from s2s.runtime import compile_unavailable
from s2s.training.optim import fusable, make_optimizer

SHAPES = {
    "additive": dict(attention="additive"),
    "general": dict(attention="multiplicative"),
    # dot: the query (decoder hidden) and keys (2 x 5, bidirectional) have one size
    "dot": dict(
        attention="multiplicative",
        multiplicative_form="dot",
        encoder={"hidden_size": 5},
        decoder={"hidden_size": 10, "input_feeding": True},
    ),
    "tied, bridge": dict(attention="additive", tie_target_embeddings=True, bridge=True),
    "linear h~, copied bridge": dict(
        attention="additive",
        attentional_vector="linear",
        bridge_type="copy",
        encoder={"hidden_size": 5},
    ),
}


def feeding_model(shape: str, seed: int = 4):
    kw = dict(SHAPES[shape])
    kw["decoder"] = {"input_feeding": True, **kw.get("decoder", {})}
    torch.manual_seed(seed)
    model = build_model(model_cfg(**kw), src_vocab=V, tgt_vocab=V)
    with torch.no_grad():  # biases away from zero, so each term shows
        for name, p in model.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    return model


def run(model, batch, monkeypatch=None, generic=False, compiled=False):
    """h~ of every position and the gradients of a loss on them."""
    model.zero_grad()
    model.decoder.compile_steps = compiled
    if generic:
        monkeypatch.setattr(feeding, "supported", lambda decoder: False)
    enc = model.encode(batch.src, batch.src_lengths)
    out = model.decoder(batch.tgt_in, enc)
    if generic:
        monkeypatch.undo()
    (out.float() * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def assert_equals_the_generic_loop(model, batch, monkeypatch):
    """The decoder's h~ and every gradient as the generic loop gives them (float32)."""
    want, want_grads = run(model, batch, monkeypatch, generic=True)
    got, got_grads = run(model, batch)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert got_grads.keys() == want_grads.keys()
    for name, g in want_grads.items():
        torch.testing.assert_close(got_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_step_function_equals_the_generic_loop_in_values_and_gradients(shape, monkeypatch):
    model = feeding_model(shape)
    assert feeding.supported(model.decoder)
    assert_equals_the_generic_loop(model, toy_batch(seed=5), monkeypatch)


def test_compiled_steps_equal_eager_ones_over_two_shapes(monkeypatch):
    if compile_unavailable(torch.device("cpu")):
        pytest.skip("torch.compile needs a C++ compiler on this machine")
    from torch._dynamo.utils import counters

    # the compiled step is the path where the C loop (s2s/nn/feedloop.py) is not built
    monkeypatch.setattr(feeding.feedloop, "applies", lambda pre: False)

    model = feeding_model("additive")
    compiles = counters["frames"]["ok"]
    # dynamic shapes: sizes unlike the model's (an equal one would be specialised) and
    # batch x source above 24 (Inductor handles tinier products apart)
    for seed, (batch, src_len, tgt_len) in enumerate([(5, 9, 6), (7, 11, 4)]):
        batch = toy_batch(seed=seed, batch=batch, src_len=src_len, tgt_len=tgt_len)
        want, want_grads = run(model, batch)
        got, got_grads = run(model, batch, compiled=True)
        assert feeding._compiled.cache_info().currsize == 1  # the additive step, compiled
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for name, g in want_grads.items():
            torch.testing.assert_close(got_grads[name], g, rtol=1e-4, atol=1e-5, msg=name)
    model.eval()
    before = counters["frames"]["ok"]
    with torch.no_grad():  # validation's loss: eager, no graph compiled for it
        model.decoder(batch.tgt_in, model.encode(batch.src, batch.src_lengths))
    assert counters["frames"]["ok"] == before
    model.train()
    with torch.no_grad():  # scheduled sampling's guess pass: a graph without gradients
        model.decoder(batch.tgt_in, model.encode(batch.src, batch.src_lengths))
    # one graph with gradients, one without: not one per position, length or batch
    assert counters["frames"]["ok"] - compiles <= 2


def test_under_bf16_autocast_it_computes_in_bf16_and_stays_near_float32():
    model = feeding_model("additive")
    batch = toy_batch(seed=6)
    want, _ = run(model, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, grads = run(model, batch)
    assert got.dtype == torch.bfloat16
    assert all(g.dtype == torch.float32 for g in grads.values())  # weights stay float32
    assert (got.float() - want).abs().max() < 0.05


@pytest.mark.parametrize(
    "kw",
    [
        dict(attention="additive", decoder={"layers": 2}),
        dict(attention="additive", decoder={"cell": "gru"}),
        dict(attention="none"),
        dict(attention="additive", recurrent_dropout=0.2),
        dict(attention="additive", decoder={"cell": "peephole_lstm"}),
    ],
)
def test_other_decoders_keep_the_generic_loop(kw):
    kw = dict(kw)
    kw["decoder"] = {"input_feeding": True, **kw.get("decoder", {})}
    model = build_model(model_cfg(**kw), src_vocab=V, tgt_vocab=V)
    assert not feeding.supported(model.decoder)
    batch = toy_batch()
    out = model.decoder(batch.tgt_in, model.encode(batch.src, batch.src_lengths))
    assert out.shape[:2] == batch.tgt_in.shape


def test_adam_is_fused_on_the_cpu_and_steps_as_the_loop_does():
    from s2s import config

    t = config.from_dict({"data": {"train": "x"}, "train": {"optimizer": "adam"}}).train
    batch = toy_batch()
    steps = {}
    for fused in (True, False):
        model = feeding_model("additive")
        assert fusable(model)
        opt = make_optimizer(model, t)
        assert opt.param_groups[0]["fused"]
        if not fused:
            opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=t.betas)
        for _ in range(3):
            run(model, batch)
            opt.step()
        steps[fused] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(steps[True], steps[False]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not fusable(torch.nn.Linear(2, 2).to(torch.float16).to("meta"))
