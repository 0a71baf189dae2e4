"""s2s charlm: units, truncated BPTT with a carried state, exact resume, sampling,
features and the logistic-regression probe."""

import dataclasses
import gzip
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from s2s import config
from s2s.charlm import LMTrainer, load_lm, probe, train_lm
from s2s.charlm.generate import sample
from s2s.charlm.probe import (
    fold_accuracies,
    ngram_features,
    sequence_features,
    stratified_folds,
)
from s2s.cli import main
from s2s.data.units import Units
from s2s.errors import ConfigError, DataError, S2SError
from s2s.nn.charlm import build_lm


def lm_config(text_path, **train):
    return config.lm_from_dict(
        {
            "model": {"embedding_size": 8, "hidden_size": 32, "unit": "char"},
            "data": {"text": str(text_path), "valid_fraction": 0.2},
            "train": {
                "batch_size": 4,
                "bptt": 8,
                "lr": 0.01,
                "max_steps": 6,
                "log_every": 2,
                "valid_every": 3,
                "save_every": 3,
                **train,
            },
        }
    )


@pytest.fixture
def periodic(tmp_path):
    path = tmp_path / "abcd.txt"
    path.write_text("abcd" * 400, encoding="utf-8")
    return path


def test_units_bytes_and_chars():
    raw = "héllo".encode("latin-1")
    byte = Units.fit("byte", raw, "utf-8")
    assert byte.size == 256 and byte.encode_raw(raw) == list(raw)  # the file's bytes as they are
    assert byte.decode(byte.encode("héllo")) == "héllo"
    char = Units.fit("char", raw, "latin-1")
    assert char.chars[0] == "\ufffd" and set(char.chars[1:]) == set("hélo")
    assert char.decode(char.encode("hollé")) == "hollé"
    assert char.encode("hex")[2] == 0  # unseen: the unknown id
    assert Units.from_state(char.state()) == char


def test_a_model_with_zero_weights_scores_log2_vocabulary_bits(tmp_path, periodic):
    trainer = LMTrainer(lm_config(periodic, threads=1), tmp_path / "run")
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.zero_()
    bits, _ = trainer.task.evaluate()
    assert bits == pytest.approx(math.log2(trainer.task.units.size), rel=1e-6)


def test_the_state_is_carried_between_updates_and_reset_at_an_epoch(tmp_path, periodic):
    trainer = LMTrainer(lm_config(periodic, threads=1), tmp_path / "run")
    seen = []
    real = trainer.model.forward

    def spy(ids, state=None):
        seen.append(state)
        return real(ids, state)

    trainer.model.forward = spy
    task = trainer.task
    trainer._update([task.batch(0)])
    first = task.carry
    trainer._update([task.batch(task.cfg.train.bptt)])
    assert seen[0] is None and seen[1] is first  # the second window starts where the first ended
    assert not first[0][0].requires_grad  # detached: gradients stop at the window
    width = task.train_data.shape[1]
    windows = task.epoch(0)
    assert windows[-1] + task.batch(windows[-1]).x.shape[1] == width - 1  # every unit read
    trainer.progress.batch_in_epoch = len(windows)  # streams read: the loop starts an epoch
    trainer.settings = dataclasses.replace(trainer.settings, max_steps=trainer.progress.step + 1)
    before = len(seen)
    trainer.run()
    assert trainer.progress.epoch == 1 and seen[before] is None  # ... from a fresh state


def test_tbptt_learns_a_periodic_text_and_samples_it(tmp_path, periodic):
    result = train_lm(lm_config(periodic, max_steps=150, valid_every=150), tmp_path / "run")
    assert result["best_bits"] < 0.1  # log2(5) = 2.3 bits at chance
    model, units, _ = load_lm(tmp_path / "run" / "best.pt")
    assert sample(model, units, prime="abc", length=9, temperature=0) == "dabcdabcd"
    a = sample(model, units, prime="ab", length=20, generator=torch.Generator().manual_seed(3))
    b = sample(model, units, prime="ab", length=20, generator=torch.Generator().manual_seed(3))
    assert a == b and len(a) == 20


def test_resume_is_exact(tmp_path, periodic):
    def run(name, steps):
        cfg = lm_config(periodic, max_steps=steps, threads=1)
        cfg = config.lm_from_dict(
            config.to_dict(cfg) | {"model": config.to_dict(cfg.model) | {"dropout": 0.3}}
        )
        train_lm(cfg, tmp_path / name)

    run("straight", 6)
    run("split", 3)
    run("split", 6)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert all(torch.equal(x, y) for x, y in zip(a["carry"][0], b["carry"][0]))
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines())


def test_features_are_the_final_hidden_state():
    torch.manual_seed(0)
    cfg = config.LMModelConfig(embedding_size=8, hidden_size=16, layers=2)
    model = build_lm(cfg, 256).eval()
    seqs = [list(b"good film"), list(b"bad"), []]
    features = sequence_features(model, seqs)
    assert features.shape == (3, 16)
    for row, seq in zip(features, seqs):
        _, state = model(torch.tensor([seq or [0]]))
        assert torch.allclose(row, state[-1][0][0, 0], atol=1e-6)  # top layer, h


def test_features_come_back_in_the_order_of_the_sequences():
    """Batches are built longest first; each row is still its own sequence's features."""
    torch.manual_seed(0)
    cfg = config.LMModelConfig(embedding_size=8, hidden_size=16, layers=1)
    model = build_lm(cfg, 256).eval()
    seqs = [list(b"ok"), list(b"a much longer review"), [], list(b"mid length"), list(b"xy z")]
    together = sequence_features(model, seqs, kinds=("mean", "hidden"), batch_size=2)
    alone = torch.cat([sequence_features(model, [s], kinds=("mean", "hidden")) for s in seqs])
    assert torch.allclose(together, alone, atol=1e-6)


def test_features_mean_and_cell_are_what_they_say():
    torch.manual_seed(0)
    cfg = config.LMModelConfig(embedding_size=8, hidden_size=16, layers=2)
    model = build_lm(cfg, 256).eval()
    seqs = [list(b"a fine film"), list(b"dull")]
    features = sequence_features(model, seqs, kinds=("mean", "cell", "hidden"))
    assert features.shape == (2, 48)
    for row, seq in zip(features, seqs):
        out, state = model.rnn(model.embedding(torch.tensor([seq])))
        assert torch.allclose(row[:16], out[0].mean(0), atol=1e-6)  # over its own length
        assert torch.allclose(row[16:32], state[-1][1][0, 0], atol=1e-6)  # top layer, c
        assert torch.allclose(row[32:], state[-1][0][0, 0], atol=1e-6)
    mlstm = build_lm(dataclasses.replace(cfg, cell="mlstm"), 256).eval()  # Radford's cell
    row = sequence_features(mlstm, seqs[:1], kinds=("cell",))[0]
    _, state = mlstm(torch.tensor([seqs[0]]))
    assert torch.allclose(row, state[-1][1][0, 0], atol=1e-6)
    gru = build_lm(dataclasses.replace(cfg, cell="gru"), 256)
    with pytest.raises(ConfigError, match="no cell state"):
        sequence_features(gru, seqs, kinds=("cell",))


def test_feature_layers_is_every_layers_mean_bottom_first():
    torch.manual_seed(0)
    cfg = config.LMModelConfig(embedding_size=8, hidden_size=16, layers=3)
    model = build_lm(cfg, 256).eval()
    seqs = [list(b"a fine film"), list(b"dull"), list(b"not bad at all")]
    features = sequence_features(model, seqs, kinds=("layers", "mean"))
    assert features.shape == (3, 64)
    for row, seq in zip(features, seqs):
        every = []
        with torch.no_grad():
            model.rnn(model.embedding(torch.tensor([seq])), every=every)
        assert len(every) == 3
        for i, out in enumerate(every):  # over the sequence's own length
            assert torch.allclose(row[16 * i : 16 * (i + 1)], out[0].mean(0), atol=1e-6)
        assert torch.equal(row[32:48], row[48:])  # the top layer's is "mean"
        assert not torch.allclose(row[:16], row[16:32], atol=1e-3)


def test_probe_folds_are_stratified_and_fixed_by_the_seed():
    labels = [1] * 30 + [0] * 70
    splits = stratified_folds(labels, 10, seed=3)
    tests = [test for _, test in splits]
    assert sorted(np.concatenate(tests).tolist()) == list(range(100))  # a partition
    for train, test in splits:
        assert sum(labels[i] for i in test) == 3 and len(test) == 10  # 30 % positive each
        assert not set(train) & set(test)
    again = stratified_folds(labels, 10, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    other = stratified_folds(labels, 10, seed=4)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(splits, other))
    with pytest.raises(S2SError, match="smaller class"):
        stratified_folds(labels, 31, seed=0)


def test_probe_finds_a_separable_signal_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g).numpy()
    labels = (x[:, 2] > 0).astype(int).tolist()
    assert min(fold_accuracies(x, labels, stratified_folds(labels, 5, 0))) >= 0.9
    noise = torch.randint(0, 2, (200,), generator=g).tolist()
    scores = fold_accuracies(x, noise, stratified_folds(noise, 5, 0))
    assert abs(sum(scores) / 5 - 0.5) < 0.15


def test_narrow_features_are_fitted_by_newton_and_reach_the_lbfgs_optimum(monkeypatch):
    """Newton-Cholesky for dense features up to NEWTON_MAX_FEATURES wide, L-BFGS beyond:
    the same regularised model either way (equal C, coefficients, predictions)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 12, generator=g).double().numpy()
    y = x[:, 0] + 0.5 * x[:, 3] + 0.8 * torch.randn(300, generator=g).double().numpy() > 0
    fitted = probe.fit(x, y.astype(int), seed=0)
    assert fitted[-1].solver == "newton-cholesky"
    monkeypatch.setattr(probe, "NEWTON_MAX_FEATURES", 11)
    wide = probe.fit(x, y.astype(int), seed=0)
    assert wide[-1].solver == "lbfgs"
    assert fitted[-1].C_[0] == wide[-1].C_[0]
    assert np.allclose(fitted[-1].coef_, wide[-1].coef_, atol=1e-3)
    assert np.array_equal(fitted.predict(x), wide.predict(x))
    assert probe.solver(True, 10) == "liblinear"


def test_the_ngram_baseline_reads_words_in_any_encoding():
    good = ["un film très bon", "très bon jeu", "bon et beau", "c'est bon"] * 5
    bad = ["un film nul", "très nul jeu", "nul et laid", "c'est nul"] * 5
    texts = [t.encode("latin-1") for t in good + bad]
    labels = [1] * 20 + [0] * 20
    grams = ngram_features(texts)
    assert grams.shape[0] == 40 and grams.shape[1] > 10  # words and bigrams
    assert min(fold_accuracies(grams, labels, stratified_folds(labels, 4, 0))) == 1.0


def test_the_probe_curve_script_fits_stratified_subsets(tmp_path, periodic, capsys, monkeypatch):
    """scripts/probe_curve.py: a seeded, stratified subset of each training part per size,
    one table row per size, the three feature sets side by side."""
    import importlib.util
    import sys

    path = Path(__file__).parents[1] / "scripts" / "probe_curve.py"
    spec = importlib.util.spec_from_file_location("probe_curve", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    y = np.array([0] * 15 + [1] * 5)
    for seed in range(5):  # the classes' shares kept in every draw
        part = script.subset(np.arange(20), y, 8, seed=seed)
        assert len(part) == 8 and np.bincount(y[part]).tolist() == [6, 2]
        assert np.array_equal(part, script.subset(np.arange(20), y, 8, seed=seed))
    assert len(script.subset(np.arange(20), y, None, seed=0)) == 20
    cfg = config.to_dict(lm_config(periodic))
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["-q", "charlm", "train", str(tmp_path / "lm.yaml"), "--out", str(out)]) == 0
    capsys.readouterr()
    (tmp_path / "pos").write_text("good\nfine film\nabcd\n" * 6)
    (tmp_path / "neg").write_text("bad\ndull film\ndcba\n" * 6)
    argv = [str(path), str(out / "best.pt"), "--pos", str(tmp_path / "pos")]
    argv += ["--neg", str(tmp_path / "neg"), "--sizes", "12,all", "--features", "mean"]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    rows = capsys.readouterr().out.splitlines()
    assert "| pretrained LM | same LM, random init | words + bigrams |" in rows[0]
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| 12", "| 24"]  # 36 texts, 3 folds


def test_commands_train_sample_probe_and_refuse_the_wrong_checkpoint(tmp_path, periodic, capsys):
    cfg = config.to_dict(lm_config(periodic))
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["-q", "charlm", "train", str(tmp_path / "lm.yaml"), "--out", str(out)]) == 0
    assert main(["charlm", "sample", str(out / "best.pt"), "--prime", "ab", "--length", "5"]) == 0
    assert capsys.readouterr().out.startswith("ab")
    (tmp_path / "pos").write_bytes("très bon\nbon\nabcd\n".encode("latin-1") * 4)
    (tmp_path / "neg").write_bytes("mauvais\ndcba\nnul\n".encode("latin-1") * 4)
    probe_args = ["charlm", "probe", str(out / "best.pt"), "--folds", "3"]
    probe_args += ["--pos", str(tmp_path / "pos"), "--neg", str(tmp_path / "neg")]
    assert main(probe_args) == 2  # a char LM fitted on UTF-8 meets Latin-1 bytes
    assert f"not valid utf-8 ({tmp_path / 'pos'}, non-empty line 1)" in capsys.readouterr().err
    assert main(probe_args + ["--encoding", "latin-1", "--features", "mean,cell"]) == 0
    printed = capsys.readouterr().out
    for row in ("| pretrained LM |", "| same LM, random init |", "| words + bigrams |"):
        assert row in printed
    assert "mean+cell (64)" in printed
    assert main(probe_args + ["--encoding", "latin-1", "--features", "max"]) == 2
    assert "unknown feature 'max'" in capsys.readouterr().err
    assert main(["translate", str(out / "best.pt")]) == 2
    assert "is a charlm checkpoint, not a translation model" in capsys.readouterr().err


def test_pretraining_on_the_users_own_latin1_files_from_the_cli(tmp_path, capsys):
    from s2s.data.text import read_texts

    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_bytes("un très bon film\nà voir\n".encode("latin-1") * 40)
    neg.write_bytes(("un film raté\n\nnul à pleurer\n" * 40).rstrip().encode("latin-1"))
    cfg = config.to_dict(lm_config(tmp_path / "unused.txt"))
    cfg["model"]["unit"] = "byte"
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(cfg))
    args = ["-q", "charlm", "train", str(tmp_path / "lm.yaml"), "data.documents=lines"]
    args += ["--text", str(pos), str(neg), "--out", str(tmp_path / "run")]
    assert main(args) == 0
    model, units, saved = load_lm(tmp_path / "run" / "best.pt")
    assert saved.data.text == (str(pos), str(neg)) and saved.data.documents == "lines"
    trainer = LMTrainer(saved, tmp_path / "run")  # resumes the same run
    seen = bytes(trainer.task.train_data.flatten().tolist()) + bytes(
        trainer.task.valid_data.flatten().tolist()
    )
    assert "très".encode("latin-1") in seen and "raté".encode("latin-1") in seen
    # lines: documents shuffled, so both files reach the held-out end
    joined = read_texts((str(pos), str(neg)), "lines", seed=1)
    tail = joined[int(len(joined) * 0.8) :]
    assert b"bon" in tail and b"nul" in tail and joined.count(b"\n") == 160
    assert read_texts((str(pos), str(neg)), "stream", seed=1).startswith(pos.read_bytes())
    # a UTF-8 byte-order mark is no text; gzip is known by its bytes; UTF-16 has no
    # byte \n of its own to split lines at
    marked = tmp_path / "marked"
    marked.write_bytes(gzip.compress(b"\xef\xbb\xbfabc\n"))
    assert read_texts((str(marked),), "stream", seed=1) == b"abc\n"
    with pytest.raises(DataError, match="utf-16 text does not use alone"):
        read_texts((str(marked),), "lines", seed=1, encoding="utf-16")
    # char units read the files in data.encoding: a wrong one names the file
    args = ["-q", "charlm", "train", str(tmp_path / "lm.yaml"), "model.unit=char"]
    assert main(args + ["--text", str(pos), "--out", str(tmp_path / "utf8")]) == 2
    assert f"{pos} at offset 5: bytes that are not valid utf-8" in capsys.readouterr().err
    args += ["data.encoding=latin-1", "--text", str(pos), "--out", str(tmp_path / "latin")]
    assert main(args) == 0
    assert "è" in load_lm(tmp_path / "latin" / "best.pt")[1].chars
    # overrides written after --text FILE... are overrides, not files
    args = ["-q", "charlm", "train", str(tmp_path / "lm.yaml"), "--out", str(tmp_path / "late")]
    assert main([*args, "--text", str(pos), "train.max_steps=2", "model.unit=byte"]) == 0
    late = load_lm(tmp_path / "late" / "best.pt")[2]
    assert late.train.max_steps == 2 and late.data.text == (str(pos),)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.text"):
        config.lm_from_dict({})
    with pytest.raises(ConfigError, match=r"unknown config key 'train.bpt'.*bptt"):
        config.lm_from_dict({"data": {"text": "x"}, "train": {"bpt": 5}})
    with pytest.raises(ConfigError, match="valid_fraction"):
        config.lm_from_dict({"data": {"text": "x", "valid_fraction": 1.0}})
    with pytest.raises(ConfigError, match="a translation config: train it with `s2s train`"):
        config.lm_from_dict({"data": {"text": "x"}, "model": {"encoder": {"cell": "gru"}}})
    with pytest.raises(ConfigError, match="a char-LM config: train it with `s2s charlm"):
        config.from_dict({"data": {"train": "x/train"}, "model": {"unit": "byte"}})


def test_a_translation_model_starts_from_a_char_lm(tmp_path, periodic, tiny_corpus):
    from conftest import tiny_config_dict

    lm_cfg = lm_config(periodic, max_steps=3)
    lm_cfg = config.lm_from_dict(
        config.to_dict(lm_cfg)
        | {"model": config.to_dict(lm_cfg.model) | {"hidden_size": 16, "embedding_size": 16}}
    )
    train_lm(lm_cfg, tmp_path / "lm")
    lm, units, _ = load_lm(tmp_path / "lm" / "best.pt")
    cfg = tiny_config_dict(tiny_corpus, max_steps=1)
    cfg["data"]["tokenizer"] = {"kind": "char"}
    cfg["model"]["charlm"] = str(tmp_path / "lm" / "best.pt")
    from s2s.translation import Trainer

    seq2seq = Trainer(config.from_dict(cfg), tmp_path / "mt")
    enc = seq2seq.model.encoder
    assert torch.equal(enc.rnn.layers[0].weight_hh_l0, lm.rnn.layers[0].weight_hh_l0)
    assert torch.equal(enc.rnn.layers[0].bias_ih_l0, lm.rnn.layers[0].bias_ih_l0)
    assert not torch.equal(
        enc.rnn.layers[0].weight_hh_l0_reverse[:16], lm.rnn.layers[0].weight_hh_l0
    )
    vocab = seq2seq.task.src_tok.vocabulary()
    a_row = enc.embedding.weight[vocab.index("a")]
    assert torch.equal(a_row, lm.embedding.weight[units.encode("a")[0]])
    assert not torch.equal(enc.embedding.weight[vocab.index("m")], lm.embedding.weight[0])
    cfg["model"]["charlm_into"] = "both"  # the decoder is 32 wide, the LM 16
    with pytest.raises(ConfigError, match=r"model.charlm: .* in the decoder"):
        Trainer(config.from_dict(cfg), tmp_path / "mt2")
    cfg["model"]["charlm_into"] = "encoder"
    cfg["model"]["encoder"]["layers"] = 2  # a layer the LM does not have
    with pytest.raises(
        ConfigError, match=r"the encoder has layers\.1\..*which the language model lacks"
    ):
        Trainer(config.from_dict(cfg), tmp_path / "mt3")
    cfg["model"]["encoder"] = {"hidden_size": 16, "stacking": "residual"}
    with pytest.raises(ConfigError, match=r"model\.encoder\.stacking is 'residual'"):
        Trainer(config.from_dict(cfg), tmp_path / "mt4")
    cfg["data"]["tokenizer"] = {"kind": "word"}
    with pytest.raises(ConfigError, match="model.charlm needs data.tokenizer.kind char"):
        config.from_dict(cfg)


def test_the_logged_learning_rate_is_the_one_each_update_used(tmp_path, periodic):
    import json

    cfg = lm_config(periodic, max_steps=4, log_every=1, warmup_steps=2, valid_every=4)
    train_lm(cfg, tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    logged = [r["lr"] for r in map(json.loads, lines) if r["kind"] == "train"]
    assert logged == pytest.approx([0.005, 0.01, 0.01, 0.01])  # warm-up 1/2, 2/2


def test_a_non_finite_step_is_skipped_as_in_translation(tmp_path, periodic, monkeypatch):
    """The char LM trains on the shared engine: a NaN loss skips that update (the
    weights stay), halves the learning rate, and training goes on from a fresh state
    (the skipped window's state may hold the NaN)."""
    from s2s.charlm.task import LMTask

    real, calls = LMTask.loss, []

    def poisoned(self, batch, step):  # the second window's loss and state are NaN
        calls.append(step)
        loss = real(self, batch, step)
        if len(calls) == 2:
            self.next = torch.utils._pytree.tree_map(lambda x: x * float("nan"), self.next)
            return loss * float("nan")
        return loss

    monkeypatch.setattr(LMTask, "loss", poisoned)
    trainer = LMTrainer(lm_config(periodic, max_steps=2, threads=1, log_every=1), tmp_path / "run")
    seen = []
    trainer.on_step = lambda r: seen.append(trainer.model.output.bias.detach().clone())
    trainer.run()
    assert len(seen) == 1 and torch.equal(trainer.model.output.bias, seen[0])  # 2 skipped
    assert trainer.task.carry is None
    result = train_lm(lm_config(periodic, max_steps=4, threads=1, log_every=1), tmp_path / "run")
    assert result["step"] == 4  # ... and training goes on
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [yaml.safe_load(x) for x in lines]
    bad = [r for r in records if r["kind"] == "bad_step"]
    assert [r["step"] for r in bad] == [2] and bad[0]["where"] == "the loss"
    lrs = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    assert lrs[1] == 0.01 and lrs[3] == lrs[4] == pytest.approx(0.005)


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_visualize_draws_the_chosen_units_over_the_text(tmp_path, periodic, capsys):
    from s2s.charlm import visualize as vis

    train_lm(lm_config(periodic, max_steps=3), tmp_path / "run")
    ckpt = str(tmp_path / "run" / "best.pt")
    text = tmp_path / "text.txt"
    # rows: 60 + 60 characters; the newline after them; "ab" and a newline; "dcba"
    text.write_text("abcd" * 30 + "\nab\ndcba", encoding="utf-8")
    out = tmp_path / "units.png"
    args = ["charlm", "visualize", ckpt, "--text", str(text), "--width", "60"]
    assert main(args + ["--units", "3,17,5", "--out", str(out)]) == 0
    w, h = vis.figure_inches(rows=5, width=60, panels=3)
    assert png_size(out) == (round(w * vis.DPI), round(h * vis.DPI))
    assert main(args + ["--units", "3", "--out", str(tmp_path / "u.html")]) == 0
    page = (tmp_path / "u.html").read_text(encoding="utf-8")
    assert page.count("<span") == len(text.read_text()) and "unit 3" in page
    model, units, _ = load_lm(ckpt)
    values = vis.activations(model, units, text.read_text())
    assert f'title="{values[0, 3]:.3f}"' in page  # the first character's value of unit 3
    assert main(args + ["--units", "32", "--out", str(out)]) == 2  # hidden size 32: 0..31
    assert "--units must name units 0..31" in capsys.readouterr().err
    assert main(args + ["--units", "1", "--out", str(tmp_path / "u.jpg")]) == 2
    (tmp_path / "pos").write_text("abab\nabba\n" * 6)
    (tmp_path / "neg").write_text("cdcd\ndccd\n" * 6)
    labelled = ["--pos", str(tmp_path / "pos"), "--neg", str(tmp_path / "neg")]
    out2 = tmp_path / "probe.png"
    assert main(args + ["--probe", "--top", "2", *labelled, "--out", str(out2)]) == 0
    assert png_size(out2)[1] == round(vis.figure_inches(5, 60, 2)[1] * vis.DPI)


def test_visualize_refuses_what_would_lose_or_mislead(tmp_path, periodic, capsys):
    """Its input as the output, --units beside --probe, a probe on too few texts; and
    what it takes as meant: a unit named twice, an upper-case suffix, a folder named."""
    train_lm(lm_config(periodic, max_steps=3), tmp_path / "run")
    ckpt = str(tmp_path / "run" / "best.pt")
    text = tmp_path / "text.html"
    text.write_text("abcd" * 10, encoding="utf-8")
    args = ["charlm", "visualize", ckpt, "--text", str(text)]
    assert main([*args, "--units", "1", "--out", str(text)]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert text.read_text(encoding="utf-8") == "abcd" * 10  # untouched
    (tmp_path / "pos").write_text("abab\nabba\n")
    (tmp_path / "neg").write_text("cdcd\ndccd\n")
    labelled = ["--pos", str(tmp_path / "pos"), "--neg", str(tmp_path / "neg")]
    out = str(tmp_path / "v.html")
    assert main([*args, "--units", "1", "--probe", *labelled, "--out", out]) == 2
    assert "--units or --probe" in capsys.readouterr().err
    assert main([*args, "--probe", *labelled, "--out", out]) == 2  # 2 texts a class
    assert "at least 3 texts in each" in capsys.readouterr().err
    assert main([*args, "--units", "4,1,4", "--out", out]) == 0
    page = Path(out).read_text(encoding="utf-8")
    assert page.count("unit 4") == 1 and page.count("unit 1") == 1
    assert main([*args, "--units", "1", "--out", str(tmp_path / "v.PNG")]) == 0
    assert png_size(tmp_path / "v.PNG")[0] > 0
    folder = ["charlm", "visualize", ckpt, "--text", str(tmp_path), "--units", "1"]
    assert main([*folder, "--out", out]) == 2
    assert f"{tmp_path} is a folder, not a text file" in capsys.readouterr().err


def test_visualize_probes_labelled_files_in_their_encoding(tmp_path, capsys):
    latin = tmp_path / "lm.txt"
    latin.write_bytes("très bon, raté, à voir.\n".encode("latin-1") * 80)
    cfg = config.to_dict(lm_config(latin, max_steps=3))
    cfg["model"]["unit"], cfg["data"]["encoding"] = "char", "latin-1"
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(cfg))
    assert (
        main(["-q", "charlm", "train", str(tmp_path / "lm.yaml"), "--out", str(tmp_path / "r")])
        == 0
    )
    (tmp_path / "pos").write_bytes("très bon\nbon à voir\n".encode("latin-1") * 4)
    (tmp_path / "neg").write_bytes("raté\nnul à voir\n".encode("latin-1") * 4)
    (tmp_path / "plain.txt").write_text("bon, à voir.".encode("latin-1").decode("ascii", "ignore"))
    args = ["charlm", "visualize", str(tmp_path / "r" / "best.pt")]
    args += ["--text", str(tmp_path / "plain.txt")]  # ASCII: the same in both encodings
    args += [
        "--probe",
        "--top",
        "2",
        "--pos",
        str(tmp_path / "pos"),
        "--neg",
        str(tmp_path / "neg"),
    ]
    assert main([*args, "--out", str(tmp_path / "v.html")]) == 0  # the LM's own encoding
    assert main([*args, "--encoding", "utf-8", "--out", str(tmp_path / "w.html")]) == 2
    assert "labelled text is not valid utf-8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--encoding", "bogus", "--out", str(tmp_path / "w.html")])
    assert "unknown text encoding 'bogus'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'data.encoding': unknown text encoding 'bogus'"):
        config.lm_from_dict(cfg | {"data": cfg["data"] | {"encoding": "bogus"}})


def test_one_long_text_is_batched_alone():
    """A text far longer than the others gets a batch of its own (not 63 short ones
    padded to its length); the features are those of each text alone."""
    torch.manual_seed(0)
    model = build_lm(config.LMModelConfig(embedding_size=8, hidden_size=16, layers=1), 256)
    shapes = []
    features = model.features
    model.features = lambda ids, *a: shapes.append(tuple(ids.shape)) or features(ids, *a)
    seqs = [list(b"short one")] * 20 + [list(b"long " * 400)] + [list(b"mid text")] * 5
    together = sequence_features(model, seqs, kinds=("mean",), positions=1000)
    assert shapes[0] == (1, 2000) and max(r * c for r, c in shapes[1:]) <= 1000
    model.features = features
    alone = torch.cat([sequence_features(model, [s], kinds=("mean",)) for s in seqs])
    assert torch.allclose(together, alone, atol=1e-6)


def test_probe_and_sample_refuse_what_they_cannot_use(tmp_path, periodic, capsys):
    train_lm(lm_config(periodic, max_steps=3), tmp_path / "run")
    ckpt = str(tmp_path / "run" / "best.pt")
    pos, neg = tmp_path / "pos", tmp_path / "neg"
    pos.write_text("abab\nabba\nbaba\naabb\n")
    neg.write_text("cdcd\ndccd\ndcdc\nccdd\n")
    probe = ["charlm", "probe", ckpt, "--pos", str(pos), "--no-references"]
    assert main([*probe, "--neg", str(pos), "--folds", "2"]) == 2
    assert "--pos and --neg name the same file" in capsys.readouterr().err
    assert main([*probe, "--neg", str(neg), "--folds", "3"]) == 2  # 4 a class
    assert "with --folds 3, each class needs at least 5 texts" in capsys.readouterr().err
    sample = ["charlm", "sample", ckpt, "--length", "12", "--seed", "3"]
    assert main([*sample, "--temperature", "0"]) == 0
    argmax = capsys.readouterr().out
    assert main([*sample, "--temperature", "1e-300"]) == 0  # the division overflows
    assert capsys.readouterr().out == argmax
    with pytest.raises(SystemExit):
        main([*sample, "--temperature", "nan"])
    assert "must be a finite number" in capsys.readouterr().err


def test_layout_wraps_rows_and_breaks_at_newlines():
    from s2s.charlm.visualize import layout

    assert layout("abc\nde", 2) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]


def test_english_text_script_writes_packaged_text_in_mr_style(tmp_path):
    """scripts/english_text.py: Multi30k's English captions and Shakespeare's non-empty
    lines, lowercased with punctuation split off, which configs/charlm_mr_english.yaml
    reads beside MR's files."""
    import gzip
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    (data / "multi30k").mkdir(parents=True)
    (data / "tinyshakespeare").mkdir()
    with gzip.open(data / "multi30k" / "train.en.gz", "wt", encoding="utf-8") as f:
        f.write("Two young, White males are outside.\nA café (in Paris)!\n")
    (data / "tinyshakespeare" / "input.txt").write_text("First Citizen:\n\nSpeak, speak.\n")
    script = Path(__file__).parents[1] / "scripts" / "english_text.py"
    env = {**os.environ, "S2S_DATA": str(data)}
    subprocess.run([sys.executable, str(script), str(tmp_path / "out")], env=env, check=True)
    captions = (tmp_path / "out" / "multi30k.en").read_bytes()
    assert captions == "two young , white males are outside .\na café ( in paris ) !\n".encode(
        "latin-1"
    )
    plays = (tmp_path / "out" / "shakespeare.en").read_text(encoding="latin-1")
    assert plays == "first citizen :\nspeak , speak .\n"


def test_a_backward_lm_reads_the_text_from_its_end(tmp_path, periodic, capsys, tiny_corpus):
    """data.direction backward: trained on the text read from its end, the LM knows what
    comes before (sampling returns it in reading order, the CLI prints it before the
    prime); its features of a text, for the probe and for visualize, read the text from
    its end; a forward and a backward LM probe side by side; a translation model refuses
    to start from it."""
    from s2s.charlm import visualize as vis
    from s2s.charlm.probe import label_sequences

    cfg = config.lm_from_dict(
        config.to_dict(lm_config(periodic, max_steps=150, valid_every=150))
        | {"data": {"text": str(periodic), "valid_fraction": 0.2, "direction": "backward"}}
    )
    assert train_lm(cfg, tmp_path / "bwd")["best_bits"] < 0.1
    model, units, saved = load_lm(tmp_path / "bwd" / "best.pt")
    assert saved.data.direction == "backward"
    # in "abcdabcd...", the six characters before "bcd" are "dabcda" (after it: "abcdab")
    assert sample(model, units, prime="bcd", length=6, temperature=0, backward=True) == "dabcda"
    ckpt = str(tmp_path / "bwd" / "best.pt")
    assert (
        main(["charlm", "sample", ckpt, "--prime", "bcd", "--length", "6", "--temperature", "0"])
        == 0
    )
    assert capsys.readouterr().out == "dabcdabcd\n"
    assert label_sequences(units, True, [b"abd"], None) == [units.encode("dba")]
    rows = vis.activations(model, units, "abdc", backward=True)
    assert np.allclose(rows, vis.activations(model, units, "cdba")[::-1])
    train_lm(lm_config(periodic, max_steps=3), tmp_path / "fwd")
    (tmp_path / "pos").write_text("abab\nabba\n" * 6)
    (tmp_path / "neg").write_text("cdcd\ndccd\n" * 6)
    args = ["charlm", "probe", str(tmp_path / "fwd" / "best.pt"), ckpt, "--folds", "3"]
    assert main([*args, "--pos", str(tmp_path / "pos"), "--neg", str(tmp_path / "neg")]) == 0
    printed = capsys.readouterr().out
    assert "mean (64)" in printed and "| same LM, random init |" in printed  # 2 x 32 units
    from conftest import tiny_config_dict

    mt = tiny_config_dict(tiny_corpus, max_steps=1)
    mt["data"]["tokenizer"] = {"kind": "char"}
    mt["model"]["charlm"] = ckpt
    from s2s.translation.transfer import from_charlm

    with pytest.raises(ConfigError, match="is a backward language model"):
        from_charlm(
            SimpleNamespace(encoder=None, decoder=None), config.from_dict(mt).model, None, None
        )
