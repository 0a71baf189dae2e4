"""model.charlm_backward: a backward char LM goes into the encoder's backward direction,
beside (or without) a forward one in its forward direction; a backward LM that reads
the forward one's embedding (the char LM's model.embedding_from)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config_dict

from s2s import config
from s2s.charlm import load_lm, train_lm
from s2s.errors import ConfigError
from s2s.translation import Trainer


def train_small_lm(text, out, direction):
    cfg = {
        "model": {"embedding_size": 16, "hidden_size": 16, "unit": "char"},
        "data": {"text": str(text), "valid_fraction": 0.2, "direction": direction},
        "train": {"batch_size": 4, "bptt": 8, "max_steps": 3, "valid_every": 3, "seed": 7},
    }
    if direction == "forward":
        cfg["train"]["seed"] = 3  # another start than the backward LM's
    train_lm(config.lm_from_dict(cfg), out)
    return str(out / "best.pt")


@pytest.fixture
def lms(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("a cat sat on the mat\nthe dog ran\n" * 40, encoding="utf-8")
    return {d: train_small_lm(text, tmp_path / d, d) for d in ("forward", "backward")}


def encoder_of(cfg, out):
    trainer = Trainer(config.from_dict(cfg), out)
    return trainer.model.encoder, trainer.task.src_tok.vocabulary()


def test_a_backward_lm_goes_into_the_encoders_backward_direction(tmp_path, lms, tiny_corpus):
    fwd, _, _ = load_lm(lms["forward"])
    bwd, units, _ = load_lm(lms["backward"])
    cfg = tiny_config_dict(tiny_corpus, max_steps=1)
    cfg["data"]["tokenizer"] = {"kind": "char"}
    cfg["model"]["charlm_backward"] = lms["backward"]
    enc, vocab = encoder_of(cfg, tmp_path / "only")
    layer, lm_layer = enc.rnn.layers[0], bwd.rnn.layers[0]
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        assert torch.equal(getattr(layer, name + "_reverse"), getattr(lm_layer, name))
        assert not torch.equal(getattr(layer, name), getattr(lm_layer, name))
    row = units.encode("a")[0]
    # alone, the backward LM also gives the embedding rows
    assert torch.equal(enc.embedding.weight[vocab.index("a")], bwd.embedding.weight[row])

    cfg["model"]["charlm"] = lms["forward"]  # both: each LM in its own direction
    enc, vocab = encoder_of(cfg, tmp_path / "pair")
    layer = enc.rnn.layers[0]
    assert torch.equal(layer.weight_hh_l0, fwd.rnn.layers[0].weight_hh_l0)
    assert torch.equal(layer.weight_hh_l0_reverse, bwd.rnn.layers[0].weight_hh_l0)
    # the rows are the forward LM's, not overwritten by the backward one's
    assert torch.equal(enc.embedding.weight[vocab.index("a")], fwd.embedding.weight[row])
    assert not torch.equal(fwd.embedding.weight[row], bwd.embedding.weight[row])


def test_charlm_backward_errors_name_the_problem(tmp_path, lms, tiny_corpus):
    cfg = tiny_config_dict(tiny_corpus, max_steps=1)
    cfg["data"]["tokenizer"] = {"kind": "char"}
    cfg["model"]["charlm_backward"] = lms["forward"]
    with pytest.raises(ConfigError, match=r"model.charlm_backward: .* is a forward language"):
        encoder_of(cfg, tmp_path / "a")
    cfg["model"]["charlm_backward"] = lms["backward"]
    cfg["model"]["encoder"] = {"bidirectional": False, "hidden_size": 16}
    with pytest.raises(ConfigError, match="model.encoder.bidirectional is false"):
        config.from_dict(cfg)
    cfg["model"]["encoder"] = {"hidden_size": 8}
    with pytest.raises(
        ConfigError, match=r"model.charlm_backward: layers\.0\.weight_ih_l0_reverse is"
    ):
        encoder_of(cfg, tmp_path / "b")
    cfg["model"]["encoder"] = {"hidden_size": 16}
    cfg["data"]["tokenizer"] = {"kind": "word"}
    with pytest.raises(ConfigError, match="model.charlm_backward needs data.tokenizer.kind"):
        config.from_dict(cfg)


def test_a_backward_lm_can_read_the_forward_ones_embedding(tmp_path, lms):
    fwd, units, saved = load_lm(lms["forward"])
    text = saved.data.text[0]
    cfg = {
        "model": {"embedding_size": 16, "hidden_size": 16, "unit": "char"},
        "data": {"text": text, "valid_fraction": 0.2, "direction": "backward"},
        "train": {"batch_size": 4, "bptt": 8, "max_steps": 3, "valid_every": 3},
    }
    cfg["model"]["embedding_from"] = lms["forward"]
    cfg["train"]["lr_multipliers"] = {"embedding": 0.0}  # kept as the forward LM's
    train_lm(config.lm_from_dict(cfg), tmp_path / "shared")
    bwd, _, _ = load_lm(tmp_path / "shared" / "best.pt")
    assert torch.equal(bwd.embedding.weight, fwd.embedding.weight)
    assert not torch.equal(bwd.rnn.layers[0].weight_hh_l0, fwd.rnn.layers[0].weight_hh_l0)
    other = tmp_path / "other.txt"
    other.write_text("xyz\n" * 100, encoding="utf-8")
    cfg["data"]["text"] = str(other)
    with pytest.raises(ConfigError, match="model.embedding_from: .* has other units"):
        train_lm(config.lm_from_dict(cfg), tmp_path / "other")
    cfg["data"]["text"] = text
    cfg["model"]["embedding_size"] = 8
    with pytest.raises(ConfigError, match=r"embedding is \(\d+, 16\), this model's"):
        train_lm(config.lm_from_dict(cfg), tmp_path / "small")
