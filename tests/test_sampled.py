"""The sampled softmax of training (``train.sampled_softmax``, s2s/nn/sampled.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_model import V, model_cfg, toy_batch

from s2s import config
from s2s.errors import ConfigError
from s2s.nn.fused import linear_cross_entropy
from s2s.nn.sampled import column_layer, sample_columns
from s2s.nn.seq2seq import build_model
from s2s.translation.objective import batch_loss


def test_columns_hold_every_target_renumbered_and_a_uniform_draw():
    torch.manual_seed(0)
    vocab = 1000
    target = torch.tensor([5, 7, 7, 900, -100, 5, 3])
    cols = sample_columns(target, vocab, 64)
    ids = cols.ids.tolist()
    assert len(ids) == 64 and len(set(ids)) == 64
    assert set(ids[:4]) == {3, 5, 7, 900}  # the targets first
    kept = target >= 0
    assert torch.equal(cols.ids[cols.target[kept]], target[kept])
    assert cols.target[4] == -100  # ignored rows stay ignored
    assert torch.all(cols.offset[:4] == 0)
    assert torch.allclose(cols.offset[4:], torch.tensor(math.log((vocab - 4) / 60)))
    # another draw, other columns: the drawn ones are random, not the first ids
    assert sample_columns(target, vocab, 64).ids[4:].tolist() != ids[4:]
    assert max(ids[4:]) > 300


def test_columns_round_up_to_the_targets_and_give_way_to_the_whole_vocabulary():
    target = torch.arange(200)
    assert sample_columns(target, 1000, 64).ids.numel() == 256  # 201 rounded up to 128s
    assert sample_columns(target, 1000, 300).ids.numel() == 300
    assert sample_columns(target, 250, 64).ids.numel() == 201  # n + 1 in a small vocab
    assert sample_columns(target, 201, 64) is None  # n + 1 is the whole vocabulary
    assert sample_columns(target, 200, 64) is None  # every column is a target
    assert sample_columns(torch.tensor([1, 2]), 20, 20) is None
    with pytest.raises(ValueError, match="positive size"):
        sample_columns(target, 1000, 0)


def test_the_corrected_normaliser_estimates_the_whole_one():
    """E[sum over the columns of exp(logit + offset)] = the whole vocabulary's sum: the
    offset is what makes it so (without it, a fifth of the sum)."""
    torch.manual_seed(1)
    vocab = 500
    logits = torch.randn(vocab) * 2
    target = torch.tensor([1, 2, 3])
    whole = logits.exp().sum()
    with_offset, without = [], []
    for _ in range(2000):
        cols = sample_columns(target, vocab, 100)
        z = logits[cols.ids]
        with_offset.append((z + cols.offset).exp().sum())
        without.append(z.exp().sum())
    assert abs(float(torch.stack(with_offset).mean() / whole) - 1) < 0.03
    assert float(torch.stack(without).mean() / whole) < 0.3


@pytest.mark.parametrize("rows", [40, 2100])  # the plain path and the chunked one
def test_column_layer_loss_and_gradients_equal_the_small_layers(rows):
    """The output layer over some columns is the layer built from those rows alone,
    offsets added to the logits; gradients reach only the chosen rows."""
    torch.manual_seed(2)
    out = torch.nn.Linear(8, 300)
    x = torch.randn(rows, 8, requires_grad=True)
    target = torch.randint(0, 40, (rows,))
    cols = sample_columns(target, 300, 128)
    loss = linear_cross_entropy(x, column_layer(out, cols), cols.target, 0.1)
    loss.backward()
    w = out.weight.detach()[cols.ids].requires_grad_()
    b = out.bias.detach()[cols.ids].requires_grad_()
    x2 = x.detach().requires_grad_()
    ref = F.cross_entropy(
        x2 @ w.t() + b + cols.offset, cols.target, reduction="sum", label_smoothing=0.1
    )
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-5)
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)
    assert torch.allclose(out.weight.grad[cols.ids], w.grad, atol=1e-4)
    assert torch.allclose(out.bias.grad[cols.ids], b.grad, atol=1e-5)
    others = torch.ones(300, dtype=torch.bool)
    others[cols.ids] = False
    assert torch.all(out.weight.grad[others] == 0) and torch.all(out.bias.grad[others] == 0)


def test_batch_loss_samples_in_training_only():
    torch.manual_seed(3)
    model = build_model(model_cfg(tie_target_embeddings=False), src_vocab=V, tgt_vocab=V)
    batch = toy_batch()
    model.eval()
    full = batch_loss(model, batch)
    state = torch.get_rng_state()
    assert torch.equal(batch_loss(model, batch, sampled=8), full)  # eval: all columns
    assert torch.equal(torch.get_rng_state(), state)  # and nothing drawn
    model.train()
    assert torch.equal(batch_loss(model, batch, sampled=V), full)  # covers the vocabulary
    torch.manual_seed(4)
    sampled = batch_loss(model, batch, sampled=15)
    assert not torch.allclose(sampled, full)
    torch.manual_seed(4)
    assert torch.equal(batch_loss(model, batch, sampled=15), sampled)  # seeded
    sampled.backward()
    used = model.decoder.output.weight.grad.abs().sum(1) > 0
    assert used.sum() == 15  # only the 15 columns' rows were trained (13 targets, 2 drawn)
    assert used[batch.tgt_out[batch.tgt_out > 0]].all()


def _smoothing_part(model, batch, sampled, seed):
    """The label-smoothing part of a batch's loss (eps = 0.5 minus eps = 0, the same draw)
    and its gradient on the output layer's weight."""
    model.zero_grad()
    parts = []
    for eps, sign in ((0.5, 1.0), (0.0, -1.0)):
        torch.manual_seed(seed)
        loss = sign * batch_loss(model, batch, eps, sampled=sampled)
        loss.backward()
        parts.append(loss.detach())
    return parts[0] + parts[1], model.decoder.output.weight.grad.clone()


def test_label_smoothing_over_the_columns_estimates_the_whole_vocabularys():
    """Over many draws, the sampled loss's smoothing part and its gradient average to the
    whole output layer's: drawn columns weigh for the pieces they stand for. A plain mean
    over the columns (the batch's 13 targets and 2 drawn) misses both."""
    torch.manual_seed(5)
    model = build_model(model_cfg(tie_target_embeddings=False), src_vocab=V, tgt_vocab=V)
    batch = toy_batch()
    with torch.no_grad():  # pieces of unequal prior, so that the columns drawn matter
        model.decoder.output.bias.normal_(0.0, 1.0)
    model.train()  # no dropout in model_cfg: only the draw differs between calls
    whole, whole_grad = _smoothing_part(model, batch, 0, 0)
    draws = [_smoothing_part(model, batch, 15, seed) for seed in range(600)]
    values = torch.stack([d[0] for d in draws])
    mean_grad = torch.stack([d[1] for d in draws]).mean(0)
    assert float(values.std()) > 1.0  # the draws do differ
    assert abs(float(values.mean() - whole)) < 4 * float(values.std()) / 600**0.5
    assert torch.allclose(mean_grad, whole_grad, atol=0.05 * float(whole_grad.abs().max()))


def test_settings_that_cannot_act_together_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: x/train}\n")
    assert config.load(path, ["train.sampled_softmax=512"]).train.sampled_softmax == 512
    with pytest.raises(ConfigError, match="distillation needs the teacher's whole"):
        config.load(path, ["train.sampled_softmax=512", "train.distill.teacher=t.pt"])
    with pytest.raises(ConfigError, match="sampled_softmax_until is set but"):
        config.load(path, ["train.sampled_softmax_until=100"])
