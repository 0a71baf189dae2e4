"""Training tricks: each option changes what it says it changes."""

import json

import pytest
import torch
from conftest import tiny_config_dict
from test_model import V, model_cfg, toy_batch

from s2s import config
from s2s.errors import ConfigError
from s2s.nn.decoder import GUESS_STEP, guess_window
from s2s.nn.fused import ROW_BUCKET
from s2s.nn.seq2seq import build_model
from s2s.training.optim import make_optimizer
from s2s.translation import Trainer
from s2s.translation.objective import batch_loss


def tiny(**kw):
    torch.manual_seed(0)
    return build_model(model_cfg(**kw), src_vocab=V, tgt_vocab=V)


# --------------------------------------------------------------------------- sampling


def test_teacher_prob_one_reproduces_teacher_forcing_exactly():
    model = tiny(dropout=0.3, embedding_dropout=0.3)
    batch = toy_batch()
    torch.manual_seed(5)
    a = batch_loss(model, batch, teacher_prob=1.0)
    torch.manual_seed(5)
    b = batch_loss(model, batch)
    assert torch.equal(a, b)


@pytest.mark.parametrize("input_feeding", [False, True])
def test_scheduled_sampling_feeds_predictions_where_the_coin_says(input_feeding):
    model = tiny(decoder={"input_feeding": input_feeding}).eval()
    batch = toy_batch(batch=6, tgt_len=8)
    enc = model.encode(batch.src, batch.src_lengths)
    coins = torch.rand(batch.tgt_in.shape, generator=torch.Generator().manual_seed(3))
    features, fed = model.decoder.scheduled(batch.tgt_in, enc, teacher_prob=0.5, coins=coins)
    gold = (coins < 0.5) | (torch.arange(coins.shape[1]) == 0)
    assert torch.equal(fed[gold], batch.tgt_in[gold])
    # Where the coin chose the model, the fed token is the argmax of the previous step.
    predicted = model.logits(features).argmax(-1)  # (batch, tgt_len)
    chosen = ~gold
    assert chosen.any()
    assert torch.equal(fed[:, 1:][chosen[:, 1:]], predicted[:, :-1][chosen[:, 1:]])
    # and the features are what stepping with those inputs gives
    state = model.init_state(enc)
    for t in range(fed.shape[1]):
        out = model.step(fed[:, t], state, enc)
        assert torch.allclose(model.logits(features[:, t]), out.logits, atol=1e-5)
        state = out.state


def test_parallel_scheduled_sampling_feeds_teacher_forced_guesses():
    model = tiny().eval()
    batch = toy_batch(batch=6, tgt_len=8)
    enc = model.encode(batch.src, batch.src_lengths)
    coins = torch.rand(batch.tgt_in.shape, generator=torch.Generator().manual_seed(4))
    features, fed = model.decoder.scheduled_parallel(
        batch.tgt_in, enc, teacher_prob=0.5, coins=coins
    )
    guesses = model.logits(model.decoder(batch.tgt_in, enc)).argmax(-1)
    gold = (coins < 0.5) | (torch.arange(coins.shape[1]) == 0) | (batch.tgt_in == 0)
    assert torch.equal(fed[gold], batch.tgt_in[gold])
    chosen = ~gold
    assert chosen[:, 1:].any()
    assert torch.equal(fed[:, 1:][chosen[:, 1:]], guesses[:, :-1][chosen[:, 1:]])
    assert torch.allclose(features, model.decoder(fed, enc))


def test_parallel_scheduled_sampling_projects_only_the_guesses_it_feeds():
    """The guess pass's output layer sees the rows whose guess is fed (padded to the row
    bucket), and with every coin on the true token no guess pass runs at all."""
    model = tiny().eval()
    batch = toy_batch(batch=6, tgt_len=8)
    enc = model.encode(batch.src, batch.src_lengths)
    seen = []
    model.decoder.output.register_forward_hook(
        lambda m, inp, out: seen.append((inp[0].shape[0], int(inp[0].abs().sum(1).gt(0).sum())))
    )
    coins = torch.zeros(batch.tgt_in.shape)  # all below teacher_prob: the true token
    coins[0, 2] = coins[3, 1] = 1.0  # two positions take the model's guess
    real = batch.tgt_in != 0
    assert real[0, 2] and real[3, 1]
    calls = []
    forward = model.decoder.forward
    model.decoder.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    _, fed = model.decoder.scheduled_parallel(batch.tgt_in, enc, teacher_prob=0.5, coins=coins)
    assert seen == [(ROW_BUCKET, 2)] and len(calls) == 2  # the guess pass and the main one
    guesses = model.logits(forward(batch.tgt_in, enc)).argmax(-1)
    assert fed[0, 2] == guesses[0, 1] and fed[3, 1] == guesses[3, 0]
    seen.clear(), calls.clear()
    _, fed = model.decoder.scheduled_parallel(
        batch.tgt_in, enc, teacher_prob=0.5, coins=torch.zeros(batch.tgt_in.shape)
    )
    assert seen == [] and len(calls) == 1 and torch.equal(fed, batch.tgt_in)


@pytest.mark.parametrize("input_feeding", [False, True])
def test_the_guess_pass_runs_only_over_the_rows_and_positions_with_a_guess(input_feeding):
    """Two guesses fed, in rows 3 and 11 of 20 at positions 2 and 4: the guess pass reads
    one block of GUESS_STEP rows (those two first) and GUESS_STEP positions, and its
    guesses are those of a teacher-forced pass over the whole batch."""
    model = tiny(decoder={"input_feeding": input_feeding}).eval()
    batch = toy_batch(batch=20, src_len=5, tgt_len=23)
    enc = model.encode(batch.src, batch.src_lengths)
    coins = torch.zeros(batch.tgt_in.shape)
    coins[3, 3] = coins[11, 5] = 1.0  # the guesses at positions 2 and 4 are fed
    shapes = []
    forward = model.decoder.forward
    model.decoder.forward = lambda tgt, e: shapes.append(tuple(tgt.shape)) or forward(tgt, e)
    _, fed = model.decoder.scheduled_parallel(batch.tgt_in, enc, teacher_prob=0.5, coins=coins)
    assert shapes == [(GUESS_STEP, GUESS_STEP), tuple(batch.tgt_in.shape)]
    guesses = model.logits(forward(batch.tgt_in, enc)).argmax(-1)
    assert fed[3, 3] == guesses[3, 2] and fed[11, 5] == guesses[11, 4]
    changed = fed != batch.tgt_in
    changed[3, 3] = changed[11, 5] = False
    assert not changed.any()


def test_guess_window_rounds_rows_and_positions_up_within_the_batch():
    need = torch.zeros(10, 30, dtype=torch.bool)
    need[7, 20] = need[2, 3] = True
    rows, length = guess_window(need)
    assert rows[:2].tolist() == [2, 7] and len(set(rows.tolist())) == GUESS_STEP
    assert length == 24
    need[:, 29] = True  # every row, the last position: the whole batch
    rows, length = guess_window(need)
    assert sorted(rows.tolist()) == list(range(10)) and length == 30


def test_scheduled_sampling_with_eps_zero_is_free_running_greedy():
    model = tiny().eval()
    batch = toy_batch()
    enc = model.encode(batch.src, batch.src_lengths)
    _, fed = model.decoder.scheduled(batch.tgt_in, enc, teacher_prob=0.0)
    assert not torch.equal(fed[:, 1:], batch.tgt_in[:, 1:])
    state, prev = model.init_state(enc), batch.tgt_in[:, 0]
    for t in range(1, fed.shape[1]):
        out = model.step(prev, state, enc)
        prev, state = out.logits.argmax(-1), out.state
        assert torch.equal(fed[:, t], prev)


@pytest.mark.parametrize("mode", ["scheduled", "scheduled_parallel"])
@pytest.mark.parametrize("sample", [False, True])
def test_scheduled_sampling_trains_as_teacher_forcing_on_the_fed_tokens(mode, sample):
    """The loss and its gradient under scheduled sampling equal those of teacher forcing
    on the tokens it fed: the choice of token is data, no gradient flows through it,
    and the features come from the fed tokens."""
    model = tiny()
    batch = toy_batch(batch=6, tgt_len=8)
    mask = batch.tgt_out != 0
    enc = model.encode(batch.src, batch.src_lengths)
    coins = torch.rand(batch.tgt_in.shape, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    features, fed = getattr(model.decoder, mode)(
        batch.tgt_in, enc, teacher_prob=0.5, sample=sample, coins=coins
    )
    assert not torch.equal(fed, batch.tgt_in)  # some tokens are the model's own
    loss = torch.nn.functional.cross_entropy(
        model.logits(features[mask]), batch.tgt_out[mask], reduction="sum"
    )
    grads = torch.autograd.grad(loss, list(model.parameters()))
    forced = model.decoder(fed, model.encode(batch.src, batch.src_lengths))
    reference = torch.nn.functional.cross_entropy(
        model.logits(forced[mask]), batch.tgt_out[mask], reduction="sum"
    )
    expected = torch.autograd.grad(reference, list(model.parameters()))
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    for (name, _), got, want in zip(model.named_parameters(), grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)


def test_trainer_logs_the_teacher_forcing_probability(tmp_path, tiny_corpus, monkeypatch):
    import json

    import s2s.translation.task as train_mod

    real, used = train_mod.batch_loss, []

    def spy(model, batch, *args, teacher_prob=1.0, **kw):
        if model.training:
            used.append(teacher_prob)
        return real(model, batch, *args, teacher_prob=teacher_prob, **kw)

    monkeypatch.setattr(train_mod, "batch_loss", spy)
    cfg = tiny_config_dict(tiny_corpus, max_steps=4, log_every=1)
    cfg["train"]["scheduled_sampling"] = {"decay": "linear", "k": 1.0, "c": 0.1}
    trainer = Trainer(config.from_dict(cfg), tmp_path / "run")
    trainer.run()
    records = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n") if x
    ]
    probs = [r["teacher_prob"] for r in records if r["kind"] == "train"]
    assert probs == pytest.approx([1.0, 0.9, 0.8, 0.7])
    assert used == pytest.approx(probs)  # logged = what the loss was computed with


def test_sampling_config_is_checked():
    with pytest.raises(ConfigError, match="inverse_sigmoid"):
        config.from_dict(
            {
                "data": {"train": "x"},
                "train": {"scheduled_sampling": {"decay": "inverse_sigmoid", "k": 0.5}},
            }
        )


# --------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize(
    "options, kind",
    [
        ({}, torch.optim.Adam),
        ({"optimizer": "adamw"}, torch.optim.AdamW),
        ({"optimizer": "sgd", "momentum": 0.9, "nesterov": True}, torch.optim.SGD),
    ],
)
def test_optimizer_choice(options, kind):
    cfg = {"data": {"train": "x"}, "train": {"lr": 0.1, "weight_decay": 0.01, **options}}
    opt = make_optimizer(tiny(), config.from_dict(cfg).train)
    assert type(opt) is kind
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["weight_decay"] == 0.01  # every optimizer's
    if kind is torch.optim.SGD:
        assert group["momentum"] == 0.9 and group["nesterov"] is True


def test_trainer_follows_the_lr_schedule(tmp_path, tiny_corpus):
    import json

    cfg = tiny_config_dict(tiny_corpus, max_steps=6, log_every=1, lr=0.01)
    cfg["train"].update(
        {"lr_schedule": "linear", "decay_start": 2, "min_lr": 0.001, "warmup_steps": 2}
    )
    Trainer(config.from_dict(cfg), tmp_path / "run").run()
    records = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n") if x
    ]
    lrs = [r["lr"] for r in records if r["kind"] == "train"]
    # steps 0..5: warm-up 1/2, 2/2, then linear from 0.01 at step 2 to 0.001 at step 6
    assert lrs == pytest.approx([0.005, 0.01, 0.01, 0.00775, 0.0055, 0.00325])


def test_plateau_stops_at_min_lr(tmp_path, tiny_corpus):
    cfg = tiny_config_dict(
        tiny_corpus, max_steps=200, valid_every=1, lr=1e-5, min_lr=1e-5, patience=1
    )
    cfg["train"]["lr_decay"] = 0.5
    result = Trainer(config.from_dict(cfg), tmp_path / "run").run()
    assert "min_lr" in result["reason"] and result["step"] < 200


def test_plateau_decays_by_lr_decay_at_each_stall_down_to_min_lr(tmp_path, tiny_corpus):
    """Starting at min_lr (above) never decays: here each validation without a gain
    multiplies the rate by lr_decay (0.1, not the default 0.5) until the floor."""
    cfg = tiny_config_dict(
        tiny_corpus, max_steps=50, valid_every=1, log_every=1, lr=1e-2, min_lr=1e-5, patience=1
    )
    cfg["train"]["lr_decay"] = 0.1
    trainer = Trainer(config.from_dict(cfg), tmp_path / "run")
    trainer.task.evaluate = lambda: (5.0, {"bleu": 5.0, "loss": 1.0, "ppl": 2.7, "chrf": 9.0})
    result = trainer.run()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    lrs = [r["lr"] for r in map(json.loads, lines) if r["kind"] == "train"]
    assert sorted(set(lrs), reverse=True) == pytest.approx([1e-2, 1e-3, 1e-4, 1e-5])
    # step 1 sets the best; 2, 3, 4 stall and decay; 5 stalls at the floor and stops
    assert "min_lr" in result["reason"] and result["step"] == 5


# --------------------------------------------------------------------------- one update


def make_trainer(tmp_path, corpus, name="run", **train_options) -> Trainer:
    cfg = tiny_config_dict(corpus, **train_options)
    return Trainer(config.from_dict(cfg), tmp_path / name)


def sgd(lr=1.0, **kw):
    return dict(optimizer="sgd", momentum=0.0, lr=lr, clip_grad_norm=0.0, **kw)


def updated(trainer, rows=(0, 1, 2, 3)):
    from s2s.data.corpus import collate

    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer._set_lr(trainer._scheduled_lr())
    where = trainer._update([collate(trainer.task.train_corpus, list(rows))]).nonfinite
    assert where is None
    return {n: p.detach() - before[n] for n, p in trainer.model.named_parameters()}, before


def test_clip_grad_value_bounds_every_entry(tmp_path, tiny_corpus):
    delta, _ = updated(make_trainer(tmp_path, tiny_corpus, **sgd(clip_grad_value=1e-4)))
    biggest = max(float(d.abs().max()) for d in delta.values())
    assert biggest == pytest.approx(1e-4, rel=1e-3)


def test_loss_norm_per_sentence_scales_gradients_by_tokens_per_sentence(tmp_path, tiny_corpus):
    from s2s.data.corpus import collate

    per_token, _ = updated(make_trainer(tmp_path, tiny_corpus, "a", **sgd(lr=1e-3)))
    trainer = make_trainer(tmp_path, tiny_corpus, "b", **sgd(lr=1e-3, loss_norm="sentences"))
    per_sentence, _ = updated(trainer)
    batch = collate(trainer.task.train_corpus, [0, 1, 2, 3])
    factor = batch.n_tokens / 4
    name = "decoder.output.bias"
    assert torch.allclose(per_sentence[name], per_token[name] * factor, atol=1e-6)


def test_gradient_accumulation_equals_one_big_batch(tmp_path, tiny_corpus):
    from s2s.data.corpus import collate

    one = make_trainer(tmp_path, tiny_corpus, "a", **sgd(lr=0.1))
    two = make_trainer(tmp_path, tiny_corpus, "b", **sgd(lr=0.1, accumulate=2))
    one._update([collate(one.task.train_corpus, [0, 1, 2, 3])])
    two._update([collate(two.task.train_corpus, [0, 1]), collate(two.task.train_corpus, [2, 3])])
    for (name, a), b in zip(one.model.named_parameters(), two.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_accumulate_consumes_that_many_batches_per_step(tmp_path, tiny_corpus):
    trainer = make_trainer(tmp_path, tiny_corpus, accumulate=3, max_steps=1, valid_every=100)
    trainer.run()  # 4 batches of 8 sentences per epoch
    assert trainer.progress.step == 1 and trainer.progress.batch_in_epoch == 3


def test_l1_adds_lr_times_l1_times_sign(tmp_path, tiny_corpus):
    plain, before = updated(make_trainer(tmp_path, tiny_corpus, "a", **sgd(lr=0.01)))
    with_l1, _ = updated(make_trainer(tmp_path, tiny_corpus, "b", **sgd(lr=0.01, l1=0.5)))
    w = "encoder.rnn.layers.0.weight_hh_l0"
    expected = plain[w] - 0.01 * 0.5 * torch.sign(before[w])
    assert torch.allclose(with_l1[w], expected, atol=1e-6)
    bias = "encoder.rnn.layers.0.bias_hh_l0"  # biases carry no penalty
    assert torch.allclose(with_l1[bias], plain[bias], atol=1e-7)


def test_max_norm_caps_embedding_and_output_rows(tmp_path, tiny_corpus):
    cfg = tiny_config_dict(tiny_corpus, **sgd(lr=0.01, max_norm=0.5))
    cfg["model"]["tie_target_embeddings"] = False  # the output matrix on its own
    trainer = Trainer(config.from_dict(cfg), tmp_path / "run")
    assert trainer.model.decoder.output.weight is not trainer.model.decoder.embedding.weight
    updated(trainer)
    for weight in (trainer.model.encoder.embedding.weight, trainer.model.decoder.output.weight):
        norms = weight.detach().norm(dim=1)
        assert float(norms.max()) <= 0.5 + 1e-5
        assert float(norms.max()) == pytest.approx(0.5, abs=1e-4)


def test_lr_multipliers_make_groups(tmp_path, tiny_corpus):
    trainer = make_trainer(tmp_path, tiny_corpus, lr=0.01, lr_multipliers={"decoder.combine": 3.0})
    trainer._set_lr(0.01)
    by_mult = {g["lr_mult"]: g for g in trainer.optimizer.param_groups}
    assert by_mult[3.0]["lr"] == pytest.approx(0.03) and by_mult[1.0]["lr"] == 0.01
    out = {id(p) for p in trainer.model.decoder.combine.parameters()}
    assert {id(p) for p in by_mult[3.0]["params"]} == out


def test_lr_multiplier_prefix_must_match(tmp_path, tiny_corpus):
    from s2s.errors import S2SError

    with pytest.raises(S2SError, match="'decoder.outptu' matches no parameter"):
        make_trainer(tmp_path, tiny_corpus, lr_multipliers={"decoder.outptu": 2.0})


# --------------------------------------------------------------------------- NaN / Inf


def test_a_nan_loss_skips_the_update_and_training_goes_on(tmp_path, tiny_corpus, monkeypatch):
    import json

    import s2s.translation.task as train_mod

    real, calls = train_mod.batch_loss, []

    def flaky(model, batch, *args, **kw):
        loss = real(model, batch, *args, **kw)
        calls.append([p.detach().clone() for p in model.parameters()])  # before the update
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(train_mod, "batch_loss", flaky)
    trainer = make_trainer(tmp_path, tiny_corpus, max_steps=6, log_every=1)
    weights = []
    trainer.on_step = lambda record: weights.append(
        (record["step"], trainer.model.decoder.output.bias.detach().clone())
    )
    result = trainer.run()
    assert result["step"] == 6
    records = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n") if x
    ]
    bad = [r for r in records if r["kind"] == "bad_step"]
    assert [r["step"] for r in bad] == [3] and bad[0]["where"] == "the loss"
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    # the skipped update changed nothing (not even Adam's moments on zeroed gradients:
    # the next loss sees the weights the NaN loss saw); the learning rate was cut
    assert 3 not in [s for s, _ in weights]
    assert all(torch.equal(a, b) for a, b in zip(calls[2], calls[3]))
    assert not all(torch.equal(a, b) for a, b in zip(calls[1], calls[2]))  # others do
    assert trainer.progress.plateau_lr == pytest.approx(1e-3 * 0.5)


def test_nan_weights_stop_training_naming_the_module(tmp_path, tiny_corpus, monkeypatch):
    import s2s.translation.task as train_mod
    from s2s.errors import S2SError
    from s2s.translation import checkpoint

    real = train_mod.batch_loss
    trainer = make_trainer(tmp_path, tiny_corpus, max_steps=20, max_bad_steps=3)

    def poison(model, batch, *args, **kw):
        if model.training and trainer.progress.step == 3:  # after the checkpoint at 3
            with torch.no_grad():
                model.decoder.rnn.layers[0].weight_hh_l0[0, 0] = float("nan")
        return real(model, batch, *args, **kw)

    monkeypatch.setattr(train_mod, "batch_loss", poison)
    with pytest.raises(
        S2SError,
        match=r"3 steps in a row with NaN/Inf \(the first in "
        r"decoder\.rnn\.layers\.0 \(its weights\)\)",
    ):
        trainer.run()
    payload = checkpoint.load(tmp_path / "run" / "last.pt")
    assert payload["progress"]["step"] == 3
    assert all(torch.isfinite(v).all() for v in payload["model"].values())


# --------------------------------------------------------------------------- diagnostics


def test_update_ratio_formula():
    from s2s.training.diagnostics import snapshot, update_ratios

    model = tiny()
    before = snapshot(model)
    with torch.no_grad():
        model.decoder.combine.weight.mul_(1.01)
    ratios = update_ratios(before, model)
    combine = [before["decoder.combine.weight"], before["decoder.combine.bias"]]
    expected = 0.01 * combine[0].norm() / torch.sqrt(sum(w.pow(2).sum() for w in combine))
    assert ratios["decoder.combine"] == pytest.approx(float(expected), rel=1e-4)
    assert ratios["encoder.rnn"] == 0.0


def test_update_ratios_are_logged_and_warned_about(tmp_path, tiny_corpus, caplog):
    import json
    import logging

    trainer = make_trainer(
        tmp_path, tiny_corpus, max_steps=2, diagnostics_every=1, update_ratio_band=[1e-9, 1e-8]
    )
    with caplog.at_level(logging.WARNING):
        trainer.run()
    records = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n") if x
    ]
    diag = [r for r in records if r["kind"] == "diag"]
    assert [r["step"] for r in diag] == [1, 2]
    assert diag[0]["update_ratio/decoder.output"] > 1e-8
    assert "update/weight ratio of" in caplog.text and "too high" in caplog.text


def test_histograms_go_to_tensorboard(tmp_path, tiny_corpus):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_trainer(tmp_path, tiny_corpus, max_steps=2, histograms_every=2).run()
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"histograms": 0})
    acc.Reload()
    tags = acc.Tags()["histograms"]
    assert "weights/decoder.combine.weight" in tags
    assert "gradients/encoder.embedding.weight" in tags
    assert "activations/encoder.rnn" in tags and "activations/decoder.output" in tags


# --------------------------------------------------------------------------- losses


def test_label_smoothing_changes_the_loss_by_the_computed_amount():
    model = tiny().eval().requires_grad_(False)
    batch = toy_batch()
    eps = 0.1
    features = model(batch.src, batch.src_lengths, batch.tgt_in)
    mask = batch.tgt_out != 0
    logp = torch.log_softmax(model.logits(features[mask]), -1)
    nll = -logp.gather(1, batch.tgt_out[mask].unsqueeze(1)).sum()
    uniform = -logp.mean(-1).sum()  # cross-entropy to the uniform distribution
    expected = (1 - eps) * nll + eps * uniform
    assert float(batch_loss(model, batch, eps)) == pytest.approx(float(expected), rel=1e-5)
    assert float(batch_loss(model, batch, 0.0)) == pytest.approx(float(nll), rel=1e-5)


def test_the_trainer_minimises_the_smoothed_loss(tmp_path, tiny_corpus):
    """train.label_smoothing is the loss an update reports and descends: its value
    before the update is the smoothed cross-entropy of the batch."""
    from s2s.data.corpus import collate

    for eps in (0.0, 0.2):
        trainer = make_trainer(tmp_path, tiny_corpus, f"ls{eps}", label_smoothing=eps)
        batch = collate(trainer.task.train_corpus, [0, 1, 2, 3])
        with torch.no_grad():
            smoothed = float(batch_loss(trainer.model, batch, eps))
            plain = float(batch_loss(trainer.model, batch, 0.0))
        total = trainer._update([batch]).loss
        assert total == pytest.approx(smoothed, rel=1e-5)
        assert (total == pytest.approx(plain, rel=1e-5)) == (eps == 0.0)


def test_distillation_mixes_teacher_distributions():
    student, batch = tiny().eval().requires_grad_(False), toy_batch()
    torch.manual_seed(9)
    teacher = build_model(model_cfg(), src_vocab=V, tgt_vocab=V).eval().requires_grad_(False)
    mask = batch.tgt_out != 0
    s_logits = student.logits(student(batch.src, batch.src_lengths, batch.tgt_in)[mask])
    t_logits = teacher.logits(teacher(batch.src, batch.src_lengths, batch.tgt_in)[mask])
    T, w = 2.0, 0.3
    ce = torch.nn.functional.cross_entropy(s_logits, batch.tgt_out[mask], reduction="sum")
    soft = -(torch.softmax(t_logits / T, -1) * torch.log_softmax(s_logits / T, -1)).sum()
    expected = (1 - w) * ce + w * T * T * soft
    got = batch_loss(student, batch, teacher=teacher, temperature=T, distill_weight=w)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    plain = batch_loss(student, batch, teacher=teacher, temperature=T, distill_weight=0.0)
    assert float(plain) == pytest.approx(float(ce), rel=1e-5)


def test_distillation_run_uses_the_teachers_tokenizers(tmp_path, tiny_corpus):
    teacher = make_trainer(tmp_path, tiny_corpus, "teacher", max_steps=3)
    teacher.run()
    cfg = tiny_config_dict(tiny_corpus, max_steps=3)
    cfg["model"]["decoder"]["hidden_size"] = 16  # a smaller student
    cfg["train"]["distill"] = {"teacher": str(tmp_path / "teacher" / "last.pt"), "weight": 0.5}
    student = Trainer(config.from_dict(cfg), tmp_path / "student")
    assert student.task.teacher is not None
    assert student.task.tgt_tok.vocabulary() == teacher.task.tgt_tok.vocabulary()
    assert not any(p.requires_grad for p in student.task.teacher.parameters())
    # the update descends the mixed loss: the summed loss it reports is the formula's
    from s2s.data.corpus import collate

    batch = collate(student.task.train_corpus, [0, 1, 2, 3])
    with torch.no_grad():
        mixed = float(
            batch_loss(student.model, batch, teacher=student.task.teacher, distill_weight=0.5)
        )
        plain = float(batch_loss(student.model, batch))
    assert mixed != pytest.approx(plain, rel=1e-3)
    total = student._update([batch]).loss
    assert total == pytest.approx(mixed, rel=1e-5)
    student.progress.step = 1
    assert student.run()["step"] == 3


def test_a_teacher_that_reads_sources_the_other_way_is_refused(tmp_path, tiny_corpus):
    make_trainer(tmp_path, tiny_corpus, "teacher", max_steps=2).run()
    cfg = tiny_config_dict(tiny_corpus, max_steps=2)
    cfg["data"]["reverse_source"] = True
    cfg["train"]["distill"] = {"teacher": str(tmp_path / "teacher" / "last.pt")}
    with pytest.raises(ConfigError, match="has data.reverse_source False, this run True"):
        Trainer(config.from_dict(cfg), tmp_path / "student")


# --------------------------------------------------------------------------- weight average


def test_ema_is_the_moving_average_used_for_translation(tmp_path, tiny_corpus):
    from s2s.translation import checkpoint

    trainer = make_trainer(
        tmp_path,
        tiny_corpus,
        ema_decay=0.5,
        max_steps=4,
        log_every=1,
        valid_every=100,
        save_every=4,
    )
    names = [n for n, _ in trainer.model.named_parameters()]
    ema = [p.detach().clone() for p in trainer.updater.unique_params()]
    raws = []
    trainer.on_step = lambda r: raws.append(
        [p.detach().clone() for p in trainer.updater.unique_params()]
    )
    trainer.run()
    assert len(raws) == 4
    for t, raw in enumerate(raws):
        d = min(0.5, (1 + t) / (10 + t))
        ema = [e + (1 - d) * (r - e) for e, r in zip(ema, raw)]
    payload = checkpoint.load(tmp_path / "run" / "last.pt")
    for name, expected, raw in zip(names, ema, raws[-1]):
        assert torch.allclose(payload["model"][name], expected, atol=1e-6), name
        assert torch.equal(payload["train_model"][name], raw), name


def test_validation_scores_the_moving_average(tmp_path, tiny_corpus):
    """The weights validation (and so best.pt's choice) sees are the average, not the
    raw training weights, which are back in place afterwards."""
    trainer = make_trainer(
        tmp_path, tiny_corpus, ema_decay=0.5, max_steps=3, valid_every=3, save_every=3
    )
    seen = []
    real = trainer.task.evaluate

    def spy():
        seen.append([p.detach().clone() for p in trainer.updater.unique_params()])
        seen.append([e.clone() for e in trainer.updater.ema])
        return real()

    trainer.task.evaluate = spy
    trainer.run()
    during, ema = seen[0], seen[1]
    assert all(torch.equal(a, b) for a, b in zip(during, ema))
    after = [p.detach() for p in trainer.updater.unique_params()]
    assert not all(torch.equal(a, b) for a, b in zip(after, ema))


def test_ema_resumes_exactly(tmp_path, tiny_corpus):
    from s2s.translation import checkpoint

    def run(name, steps):
        cfg = tiny_config_dict(tiny_corpus, ema_decay=0.9, max_steps=steps, save_every=2)
        Trainer(config.from_dict(cfg), tmp_path / name).run()

    run("straight", 4)
    run("split", 2)
    run("split", 4)
    a = checkpoint.load(tmp_path / "straight" / "last.pt")
    b = checkpoint.load(tmp_path / "split" / "last.pt")
    for part in ("model", "train_model"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)


def test_clip_grad_norm_bounds_the_update(tmp_path, tiny_corpus):
    options = sgd(lr=1.0) | {"clip_grad_norm": 1e-3}
    delta, _ = updated(make_trainer(tmp_path, tiny_corpus, **options))
    norm = torch.sqrt(sum(d.pow(2).sum() for d in delta.values()))  # tied weights once
    assert float(norm) == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize("key", ["dropout", "embedding_dropout"])
def test_dropout_options_act_in_training_only(key):
    model = tiny(**{key: 0.5})
    batch = toy_batch()
    model.train()
    a = model(batch.src, batch.src_lengths, batch.tgt_in)
    b = model(batch.src, batch.src_lengths, batch.tgt_in)
    assert not torch.allclose(a, b)
    model.eval()
    a = model(batch.src, batch.src_lengths, batch.tgt_in)
    b = model(batch.src, batch.src_lengths, batch.tgt_in)
    assert torch.equal(a, b)
    plain = tiny()
    plain.train()
    c = plain(batch.src, batch.src_lengths, batch.tgt_in)
    d = plain(batch.src, batch.src_lengths, batch.tgt_in)
    assert torch.equal(c, d)  # with both at 0, training mode is deterministic


def test_every_dropout_site_drops_at_its_configured_rate():
    """Two training passes that differ show that some dropout acts, not that each does:
    each site (embeddings on both sides, between stacked layers on both sides, the
    attentional vector) is run and zeroes about its rate of its input."""
    from s2s.nn.dropout import Dropout

    model = build_model(
        model_cfg(
            dropout=0.5,
            embedding_dropout=0.25,
            encoder={"layers": 2, "hidden_size": 32},
            decoder={"layers": 2, "hidden_size": 32},
            embedding_size=32,
        ),
        src_vocab=V,
        tgt_vocab=V,
    ).train()
    seen = {}
    for name, module in model.named_modules():
        if isinstance(module, Dropout):
            module.register_forward_hook(
                lambda m, args, out, name=name: seen.setdefault(name, []).append(
                    float(((out == 0) & (args[0] != 0)).sum() / (args[0] != 0).sum())
                )
            )
    batch = toy_batch()
    for _ in range(20):
        model(batch.src, batch.src_lengths, batch.tgt_in)
    want = {
        "encoder.embedding_dropout": 0.25,
        "decoder.embedding_dropout": 0.25,
        "encoder.rnn.dropout": 0.5,
        "decoder.rnn.dropout": 0.5,
        "decoder.dropout": 0.5,
    }
    assert set(seen) == set(want)
    for name, rate in want.items():
        assert sum(seen[name]) / len(seen[name]) == pytest.approx(rate, abs=0.05), name


def test_validation_bleu_and_loss_are_those_computed_apart(tmp_path, tiny_corpus):
    """What picks best.pt and drives the plateau and early stopping: BLEU of the greedy
    translations against the references line by line, and the cross-entropy summed over
    every target token (EOS included) divided by their count, one sentence at a time."""
    import math

    import sacrebleu
    import torch.nn.functional as F

    from s2s.data.corpus import collate
    from s2s.decoding.translate import translate_lines

    trainer = make_trainer(tmp_path, tiny_corpus, max_steps=8, valid_every=100)
    trainer.run()
    task, model = trainer.task, trainer.model.eval()
    bleu, fields = task.evaluate()
    hyps = translate_lines(model, task.src_tok, task.tgt_tok, task.valid_src, reverse_source=False)
    assert bleu == sacrebleu.corpus_bleu(hyps, [task.valid_ref]).score == fields["bleu"]
    # a tiny model's BLEU may be 0 either way: translations equal to their references
    # line by line must score 100
    import s2s.translation.task as task_module

    real = task_module.translate_lines
    task_module.translate_lines = lambda *a, **k: list(task.valid_ref)
    try:
        assert task.evaluate()[0] == pytest.approx(100.0)
    finally:
        task_module.translate_lines = real
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(len(task.valid_corpus)):
            batch = collate(task.valid_corpus, [i])
            logits = model.logits(model(batch.src, batch.src_lengths, batch.tgt_in))
            total += float(F.cross_entropy(logits[0], batch.tgt_out[0], reduction="sum"))
            tokens += batch.tgt_out.numel()
    assert fields["loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert fields["ppl"] == pytest.approx(math.exp(fields["loss"]))
