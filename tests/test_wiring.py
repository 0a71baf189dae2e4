"""Wiring, end to end: what the config and the command line set is what reaches the
loss, the search and the model. Spies record the arguments the library passes on."""

import json

import pytest
import torch
from conftest import SENTENCES, tiny_config_dict, write_corpus

import s2s.decoding.translate as translate_mod
import s2s.training.engine as engine_mod
import s2s.translation.task as train_mod
from s2s import config
from s2s.cli import main
from s2s.data.corpus import source_ids
from s2s.data.tokenize import EOS
from s2s.decoding.ensemble import Ensemble
from s2s.decoding.search import ROW_STEP
from s2s.decoding.translate import translate_lines
from s2s.translation import Trainer, checkpoint, train

NOVEL = ["a dog plays in the park .", "two men read .", "the cat runs down the street ."]


def spy_on_losses(monkeypatch) -> list[dict]:
    """Record the options of every training-mode ``batch_loss`` call of the trainer."""
    real, calls = train_mod.batch_loss, []

    def spy(model, batch, label_smoothing=0.0, **options):
        if model.training:
            calls.append({"label_smoothing": label_smoothing, **options})
        return real(model, batch, label_smoothing, **options)

    monkeypatch.setattr(train_mod, "batch_loss", spy)
    return calls


def run(tmp_path, corpus, name="run", model=None, data=None, **train_options) -> Trainer:
    cfg = tiny_config_dict(corpus, **train_options)
    cfg["model"].update(model or {})
    cfg["data"].update(data or {})
    trainer = Trainer(config.from_dict(cfg), tmp_path / name)
    trainer.result = trainer.run()
    return trainer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("wiring")
    return {
        "train": write_corpus(base / "data", "train", SENTENCES * 4),
        "valid": write_corpus(base / "data", "valid", SENTENCES[:4]),
        "dir": base,
    }


@pytest.fixture(scope="module")
def two_runs(corpus):
    """Two briefly trained models of different architectures and seeds."""
    a = corpus["dir"] / "a"
    train(config.from_dict(tiny_config_dict(corpus, max_steps=12, lr=0.01)), a)
    cfg = tiny_config_dict(corpus, max_steps=12, lr=0.01, seed=7)
    cfg["model"]["decoder"]["cell"] = "gru"
    train(config.from_dict(cfg), corpus["dir"] / "b")
    return a / "last.pt", corpus["dir"] / "b" / "last.pt"


# --------------------------------------------------------------------------- the loss


def test_the_scheduled_teacher_probability_is_what_training_feeds(
    tmp_path, tiny_corpus, monkeypatch
):
    calls = spy_on_losses(monkeypatch)
    sampling = {"decay": "linear", "k": 1.0, "c": 0.1, "mode": "parallel", "sample": True}
    run(tmp_path, tiny_corpus, max_steps=4, scheduled_sampling=sampling)
    assert [c["teacher_prob"] for c in calls] == pytest.approx([1.0, 0.9, 0.8, 0.7])
    assert all(c["parallel"] is True and c["sample"] is True for c in calls)


def test_label_smoothing_reaches_the_loss(tmp_path, tiny_corpus, monkeypatch):
    calls = spy_on_losses(monkeypatch)
    run(tmp_path, tiny_corpus, max_steps=2, label_smoothing=0.15)
    assert [c["label_smoothing"] for c in calls] == [0.15, 0.15]


def test_the_distillation_teacher_weight_and_temperature_reach_the_loss(
    tmp_path, tiny_corpus, monkeypatch
):
    run(tmp_path, tiny_corpus, "teacher", max_steps=3)
    calls = spy_on_losses(monkeypatch)
    distill = {"teacher": str(tmp_path / "teacher" / "last.pt"), "weight": 0.3, "temperature": 2.0}
    student = run(tmp_path, tiny_corpus, "student", max_steps=2, distill=distill)
    assert len(calls) == 2
    for call in calls:
        assert call["teacher"] is student.task.teacher and call["teacher"] is not None
        assert call["distill_weight"] == 0.3 and call["temperature"] == 2.0
    teacher = checkpoint.load_for_translation(tmp_path / "teacher" / "last.pt").model
    for name, value in teacher.state_dict().items():
        assert torch.equal(student.task.teacher.state_dict()[name], value), name


# --------------------------------------------------------------------------- the search


@pytest.fixture
def spy_search(monkeypatch):
    calls = {"beam": [], "greedy": []}
    for name in calls:
        real = getattr(translate_mod, "beam_search" if name == "beam" else "greedy")

        def spy(*args, _real=real, _name=name, **kw):
            calls[_name].append(kw)
            return _real(*args, **kw)

        monkeypatch.setattr(translate_mod, "beam_search" if name == "beam" else "greedy", spy)
    return calls


def translate_cli(tmp_path, checkpoints, *options, lines=None) -> list[str]:
    """``s2s translate``'s output lines; in fp32 (the Python API's default, which tests
    compare it with) unless the options name a precision."""
    if "--precision" not in options:
        options = (*options, "--precision", "fp32")
    path = tmp_path / "in.txt"
    path.write_text("".join(line + "\n" for line in (lines or NOVEL)))
    out = tmp_path / "out.txt"
    args = ["-q", "translate", *map(str, checkpoints), "--input", str(path)]
    assert main([*args, "--output", str(out), *options]) == 0
    return out.read_text().split("\n")[:-1]


@pytest.mark.parametrize("precision, row_step", [("fp32", 1), ("bf16", ROW_STEP)])
def test_bf16_decoding_shrinks_batches_in_steps_and_fp32_row_by_row(
    tmp_path, two_runs, spy_search, precision, row_step
):
    """A bf16 copy decodes in a few row counts (oneDNN builds a kernel per shape),
    float32 drops every finished sentence at once: both searches are told which."""
    translate_cli(tmp_path, two_runs[:1], "--precision", precision)
    translate_cli(tmp_path, two_runs[:1], "--precision", precision, "--beam", "2")
    assert [c["row_step"] for c in spy_search["greedy"]] == [row_step]
    assert [c["row_step"] for c in spy_search["beam"]] == [row_step]


def test_the_command_decodes_with_what_it_loaded_frozen_and_unfreezes_after(
    tmp_path, two_runs, monkeypatch
):
    """``s2s translate`` freezes the objects it loaded (the collector then never walks
    them during decoding) and leaves the collector as it found it."""
    import gc

    seen, real = [], translate_mod.translate

    def spy(*args, **kw):
        seen.append(gc.get_freeze_count())
        return real(*args, **kw)

    monkeypatch.setattr(translate_mod, "translate", spy)
    before = gc.get_freeze_count()
    translate_cli(tmp_path, two_runs[:1])
    assert len(seen) == 1 and seen[0] > before
    assert gc.get_freeze_count() == before


def test_search_options_of_the_command_reach_beam_search(tmp_path, two_runs, spy_search):
    options = ["--beam", "3", "--nbest", "2", "--length-penalty", "0.6", "--min-length", "2"]
    translate_cli(tmp_path, two_runs[:1], *options, "--max-length-ratio", "1.5")
    (call,) = spy_search["beam"]
    assert spy_search["greedy"] == []
    assert (call["beam"], call["nbest"], call["alpha"], call["min_len"]) == (3, 2, 0.6, 2)
    assert call["normalize"] is False
    src_tok = checkpoint.load_for_translation(two_runs[0]).src_tok
    lengths = sorted(len(ids) for ids in source_ids(src_tok, NOVEL, False))
    assert sorted(call["max_len"].tolist()) == [int(n * 1.5) + 10 for n in lengths]
    spy_search["beam"].clear()
    translate_cli(tmp_path, two_runs[:1], "--beam", "2", "--length-norm")
    assert spy_search["beam"][0]["normalize"] is True and spy_search["beam"][0]["beam"] == 2
    spy_search["beam"].clear()
    translate_cli(tmp_path, two_runs[:1])  # no --beam: greedy, the config's length ratio
    assert spy_search["beam"] == [] and len(spy_search["greedy"]) == 1
    ratio = checkpoint.load_for_translation(two_runs[0]).config.train.max_output_ratio
    assert sorted(spy_search["greedy"][0]["max_len"].tolist()) == [
        int(n * ratio) + 10 for n in lengths
    ]


def test_an_ensemble_translates_as_the_averaged_models_and_unlike_either(tmp_path, two_runs):
    lines = [s for s, _ in SENTENCES] + NOVEL
    members = [checkpoint.load_for_translation(p) for p in two_runs]
    toks = members[0].src_tok, members[0].tgt_tok
    options = dict(reverse_source=False, beam=3, min_len=1)
    direct = translate_lines(Ensemble([m.model for m in members]), *toks, lines, **options)
    singles = [translate_lines(m.model, *toks, lines, **options) for m in members]
    ensembled = translate_cli(tmp_path, two_runs, "--beam", "3", "--min-length", "1", lines=lines)
    assert ensembled == direct
    for single in singles:
        assert ensembled != single


# --------------------------------------------------------------------------- data paths


def test_reversed_sources_are_what_training_validation_and_translation_feed(
    tmp_path, tiny_corpus, monkeypatch
):
    """A model trained with data.reverse_source reads every source reversed (EOS last)
    in training batches, in validation decoding and in ``s2s translate``."""
    seen = []
    real_encode = train_mod.Seq2Seq.encode

    def spy(self, src, src_lengths):
        seen.append([row[: int(n)].tolist() for row, n in zip(src, src_lengths)])
        return real_encode(self, src, src_lengths)

    monkeypatch.setattr(train_mod.Seq2Seq, "encode", spy)
    trainer = run(tmp_path, tiny_corpus, data={"reverse_source": True}, max_steps=3)
    tok = trainer.task.src_tok
    forward = {tuple(tok.encode([s])[0]) for s, _ in SENTENCES}
    reversed_ = {tuple(ids[::-1]) for ids in forward}
    fed = [tuple(row) for call in seen for row in call]
    assert all(row[-1] == EOS for row in fed)
    assert {row[:-1] for row in fed} <= reversed_  # training and validation batches
    assert not {row[:-1] for row in fed} & (forward - reversed_)
    seen.clear()
    translate_cli(tmp_path, [tmp_path / "run" / "last.pt"], lines=[SENTENCES[0][0]])
    assert seen[0] == [tok.encode([SENTENCES[0][0]])[0][::-1] + [EOS]]


def test_separate_tokenizers_when_not_joint(tmp_path, tiny_corpus):
    trainer = run(tmp_path, tiny_corpus, data={"tokenizer": {"kind": "word", "joint": False}})
    src, tgt = trainer.task.src_tok.vocabulary(), trainer.task.tgt_tok.vocabulary()
    assert "dog" in src and "dog" not in tgt and "hund" in tgt and "hund" not in src
    out = tmp_path / "run"
    assert (out / "tokenizer.src.vocab").is_file() and (out / "tokenizer.tgt.vocab").is_file()
    assert not (out / "tokenizer.joint.vocab").exists()
    loaded = checkpoint.load_for_translation(out / "last.pt")
    assert loaded.src_tok.vocabulary() == src and loaded.tgt_tok.vocabulary() == tgt
    for line in translate_cli(tmp_path, [out / "last.pt"]):
        assert set(line.split()) <= set(tgt)


def test_recurrent_dropout_reaches_every_recurrent_layer(tmp_path, tiny_corpus):
    from s2s.nn.cells import LoopRNN

    trainer = run(tmp_path, tiny_corpus, model={"recurrent_dropout": 0.4}, max_steps=1)
    model = trainer.model
    layers = [*model.encoder.rnn.layers, *model.decoder.rnn.layers]
    assert all(isinstance(x, LoopRNN) and x.recurrent_dropout == 0.4 for x in layers)
    from s2s.data.corpus import collate

    batch = collate(trainer.task.train_corpus, [0, 1, 2])
    outputs = []
    for mode in (True, True, False, False):
        model.train(mode)
        with torch.no_grad():
            outputs.append(model(batch.src, batch.src_lengths, batch.tgt_in))
    assert not torch.equal(outputs[0], outputs[1])  # a new mask per sequence and call
    assert torch.equal(outputs[2], outputs[3])  # none in evaluation


# --------------------------------------------------------------------------- stopping


def records(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_early_stopping_counts_validations_without_improvement(tmp_path, tiny_corpus):
    # a learning rate too small to change BLEU: the first validation improves on
    # nothing (-1), the next two do not improve
    trainer = run(
        tmp_path, tiny_corpus, max_steps=50, valid_every=1, early_stopping=2, lr=1e-9, min_lr=0.0
    )
    assert trainer.result["step"] == 3
    assert trainer.result["reason"] == "no validation improvement in 2 validations"
    assert [r["step"] for r in records(tmp_path / "run") if r["kind"] == "valid"] == [1, 2, 3]


def test_max_epochs_stops_after_that_many_passes(tmp_path, tiny_corpus):
    trainer = run(tmp_path, tiny_corpus, max_steps=50, max_epochs=2)  # 4 batches an epoch
    assert trainer.result == {
        "step": 8,
        "best_bleu": trainer.progress.best,
        "reason": "reached train.max_epochs (2)",
    }
    assert trainer.progress.epoch == 2


def test_max_minutes_stops_on_the_training_clock(tmp_path, tiny_corpus, monkeypatch):
    clock = iter(range(0, 10**6, 20))  # every perf_counter call: 20 s later
    monkeypatch.setattr(engine_mod.time, "perf_counter", lambda: float(next(clock)))
    trainer = run(tmp_path, tiny_corpus, max_steps=50, max_minutes=1.0)
    assert trainer.result["reason"] == "reached train.max_minutes (1.0)"
    assert trainer.result["step"] == 3  # 20 s per step: 60 s after three
    assert trainer.progress.elapsed == 60.0


# --------------------------------------------------------------------------- char LM


@pytest.mark.parametrize("unit", ["byte", "char"])
def test_a_char_lm_transfers_into_encoder_and_decoder(tmp_path, tiny_corpus, unit):
    from s2s.charlm import load_lm, train_lm

    text = tmp_path / "text.txt"
    text.write_text("".join(s + "\n" for s, _ in SENTENCES[:4]) * 20, encoding="utf-8")
    lm_cfg = {
        "model": {"embedding_size": 16, "hidden_size": 16, "unit": unit},
        "data": {"text": str(text), "valid_fraction": 0.2},
        "train": {"batch_size": 4, "bptt": 8, "max_steps": 3, "valid_every": 3},
    }
    train_lm(config.lm_from_dict(lm_cfg), tmp_path / "lm")
    lm, units, _ = load_lm(tmp_path / "lm" / "best.pt")
    model = {
        "embedding_size": 16,
        "encoder": {"hidden_size": 16},
        "decoder": {"hidden_size": 16},
        "charlm": str(tmp_path / "lm" / "best.pt"),
        "charlm_into": "both",
    }
    data = {"tokenizer": {"kind": "char"}}
    cfg = tiny_config_dict(tiny_corpus, max_steps=1)
    cfg["model"].update(model)
    cfg["data"].update(data)
    trainer = Trainer(config.from_dict(cfg), tmp_path / "mt")
    lm_rnn = dict(lm.rnn.named_parameters())
    for side, tok in (("encoder", trainer.task.src_tok), ("decoder", trainer.task.tgt_tok)):
        part = getattr(trainer.model, side)
        for name, value in part.rnn.named_parameters():
            if name in lm_rnn:  # the forward direction (and the decoder's only one)
                assert torch.equal(value, lm_rnn[name]), (side, name)
        vocab = tok.vocabulary()
        for ch in "a.":  # characters the LM read: their rows come from the LM
            lm_row = lm.embedding.weight[units.encode(ch)[0]]
            assert torch.equal(part.embedding.weight[vocab.index(ch)], lm_row), (side, ch)
        # 'j' is in the vocabulary (joint), not in the LM's text: byte units still
        # hold its row, char units do not
        ch = "j"
        row = part.embedding.weight[vocab.index(ch)]
        lm_id = units.encode(ch)[0]
        if unit == "byte":
            assert torch.equal(row, lm.embedding.weight[lm_id])
        else:
            assert lm_id == 0 and not torch.equal(row, lm.embedding.weight[0])


def test_a_source_lm_and_a_target_lm_go_into_encoder_and_decoder(tmp_path, tiny_corpus):
    from s2s.charlm import load_lm, train_lm
    from s2s.errors import ConfigError

    paths = {}
    for side, col in (("src", 0), ("tgt", 1)):
        text = tmp_path / f"{side}.txt"
        text.write_text("".join(pair[col] + "\n" for pair in SENTENCES[:4]) * 20)
        lm_cfg = {
            "model": {"embedding_size": 16, "hidden_size": 16, "unit": "char"},
            "data": {"text": str(text), "valid_fraction": 0.2},
            "train": {"batch_size": 4, "bptt": 8, "max_steps": 3, "valid_every": 3, "seed": col},
        }
        train_lm(config.lm_from_dict(lm_cfg), tmp_path / side)
        paths[side] = str(tmp_path / side / "best.pt")
    cfg = tiny_config_dict(tiny_corpus, max_steps=1)
    cfg["model"].update(
        embedding_size=16,
        encoder={"hidden_size": 16},
        decoder={"hidden_size": 16},
        charlm=paths["src"],
        charlm_decoder=paths["tgt"],
    )
    cfg["data"]["tokenizer"] = {"kind": "char"}
    trainer = Trainer(config.from_dict(cfg), tmp_path / "mt")
    for side, lm_side in (("encoder", "src"), ("decoder", "tgt")):
        lm_rnn = dict(load_lm(paths[lm_side])[0].rnn.named_parameters())
        weights = dict(getattr(trainer.model, side).rnn.named_parameters())
        name = next(iter(lm_rnn))
        assert torch.equal(weights[name], lm_rnn[name]), side
    cfg["model"]["charlm_into"] = "both"
    with pytest.raises(ConfigError, match="charlm_into is 'both' \\(set it to encoder\\)"):
        config.from_dict(cfg)
