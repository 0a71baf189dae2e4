"""Shared fixtures: offline hub settings, the Multi30k slice under tests/data, tiny corpora."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests read the Multi30k slice committed under tests/data (see its README), wherever
# they run, so that a fresh clone tests itself and every machine tests the same data.
os.environ["S2S_DATA"] = str(ROOT / "tests" / "data")

SENTENCES = [
    ("a man rides a horse .", "ein mann reitet ein pferd ."),
    ("a dog runs .", "ein hund rennt ."),
    ("two girls play in the park .", "zwei mädchen spielen im park ."),
    ("a woman reads a book .", "eine frau liest ein buch ."),
    ("the boy jumps .", "der junge springt ."),
    ("a cat sleeps on the sofa .", "eine katze schläft auf dem sofa ."),
    ("people walk down the street .", "leute gehen die straße entlang ."),
    ("a man plays guitar .", "ein mann spielt gitarre ."),
]


def write_corpus(folder: Path, name: str, pairs, src="en", tgt="de") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.{src}").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    (folder / f"{name}.{tgt}").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return str(folder / name)


@pytest.fixture
def tiny_corpus(tmp_path) -> dict:
    """Train/valid prefixes of a tiny synthetic corpus."""
    data = tmp_path / "data"
    return {
        "train": write_corpus(data, "train", SENTENCES * 4),
        "valid": write_corpus(data, "valid", SENTENCES[:4]),
        "dir": data,
    }


def tiny_config_dict(corpus: dict, **train) -> dict:
    """A very small word-level model on the tiny corpus."""
    return {
        "model": {
            "embedding_size": 16,
            "encoder": {"hidden_size": 16},
            "decoder": {"hidden_size": 32},
            "dropout": 0.0,
            "embedding_dropout": 0.0,
        },
        "data": {
            "train": corpus["train"],
            "valid": corpus["valid"],
            "tokenizer": {"kind": "word", "vocab_size": 1000},
            "batch_size": 8,
            "batch_unit": "sentences",
        },
        "train": {"max_steps": 6, "valid_every": 3, "save_every": 3, "log_every": 2, **train},
    }


@pytest.fixture
def multi30k_slice() -> Path:
    """The folder holding multi30k/{train,val,test_2016_flickr}.{en,de}.gz (a slice)."""
    return Path(os.environ["S2S_DATA"])
