"""Reading parallel text (s2s.data.files): what a user's files can look like, and the
hub fallback."""

from __future__ import annotations

import gzip
import json

import pytest

from s2s import config
from s2s.data.files import load_split, read_lines, split_lines
from s2s.errors import DataError

LINES = ["Zwei Männer stehen.", "Ein Hund rennt."]


def test_wide_text_read_as_another_encoding_is_refused_naming_it(tmp_path):
    """latin-1 reads any bytes: UTF-16 text read that way was garbage with NUL
    characters and one line too many, and utf-8's hint suggested exactly that."""
    text = "\n".join(LINES) + "\n"
    for wide, encoded in (("utf-16", text.encode("utf-16")), ("utf-32", text.encode("utf-32"))):
        for encoding in ("utf-8", "latin-1"):
            with pytest.raises(DataError, match=f"looks like {wide} text .*byte-order mark"):
                split_lines(encoded, encoding, "f.de")
        assert split_lines(encoded, wide, "f.de") == LINES  # in its own encoding it reads
    without_mark = text.encode("utf-16-le")
    with pytest.raises(DataError, match=r"utf-16 or utf-32 text \(\d+% of its first bytes"):
        split_lines(without_mark, "latin-1", "f.de")
    assert split_lines(without_mark, "utf-16-le", "f.de") == LINES
    # a stray NUL in real text is a character, not a sign of UTF-16
    assert split_lines("a\x00 man is here .\n".encode(), "latin-1", "f") == ["a\x00 man is here ."]


def test_gzip_is_known_by_its_bytes_and_a_damaged_one_is_one_line(tmp_path):
    packed = gzip.compress(("\n".join(LINES) + "\n").encode())
    unnamed = tmp_path / "train.de"  # gzipped, without the suffix
    unnamed.write_bytes(packed)
    assert read_lines(unnamed) == LINES
    damaged = tmp_path / "bad.de.gz"
    damaged.write_bytes(packed[:12] + bytes(b ^ 0x5A for b in packed[12:30]) + packed[30:])
    with pytest.raises(DataError, match="cannot read .*bad.de.gz"):
        read_lines(damaged)


def test_data_paths_take_a_home_folder_and_name_a_language_suffix(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for lang, text in (("en", "a dog\n"), ("de", "ein hund\n")):
        (tmp_path / f"train.{lang}").write_text(text, encoding="utf-8")
    cfg = config.from_dict({"data": {"train": "~/train"}}).data
    assert load_split(cfg, "train")["tgt"] == ["ein hund"]
    suffixed = config.from_dict({"data": {"train": str(tmp_path / "train.en")}}).data
    with pytest.raises(DataError, match=r"prefixes, without the language \(.*train\)"):
        load_split(suffixed, "train")


def write_hub(folder, rows) -> str:
    folder.mkdir()
    with open(folder / "train.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return str(folder)


def test_hub_translation_layout_missing_texts_and_named_columns(tmp_path, monkeypatch):
    monkeypatch.delenv("S2S_NOT_SET", raising=False)
    nested = write_hub(tmp_path / "wmt", [{"translation": {"en": "a dog", "de": "ein hund"}}] * 2)
    cfg = config.from_dict({"data": {"train": "${S2S_NOT_SET}/train", "hub": nested}}).data
    pairs = load_split(cfg, "train")
    assert pairs["src"] == ["a dog"] * 2 and pairs["tgt"] == ["ein hund"] * 2
    holes = write_hub(tmp_path / "holes", [{"en": None, "de": "x"}, {"en": "a", "de": "b"}])
    cfg = config.from_dict({"data": {"train": "${S2S_NOT_SET}/train", "hub": holes}}).data
    assert load_split(cfg, "train")["src"] == ["", "a"]  # dropped later, as empty lines
    other = write_hub(tmp_path / "other", [{"text": "a", "label": 1}])
    cfg = config.from_dict({"data": {"train": "${S2S_NOT_SET}/train", "hub": other}}).data
    with pytest.raises(DataError, match="its columns: text, label"):
        load_split(cfg, "train")


def test_a_split_that_falls_back_to_the_hub_beside_local_ones_is_warned(
    tmp_path, monkeypatch, caplog
):
    """A misspelt variable in one split swapped its data for the hub's without a word."""
    monkeypatch.delenv("S2S_DTA", raising=False)
    for lang in ("en", "de"):
        (tmp_path / f"train.{lang}").write_text("a\n", encoding="utf-8")
    hub = write_hub(tmp_path / "hub", [{"en": "a dog", "de": "ein hund"}])
    (tmp_path / "hub" / "validation.jsonl").write_text(
        json.dumps({"en": "b", "de": "c"}) + "\n", encoding="utf-8"
    )
    cfg = config.from_dict(
        {"data": {"train": str(tmp_path / "train"), "valid": "${S2S_DTA}/val", "hub": hub}}
    ).data
    with caplog.at_level("WARNING"):
        assert load_split(cfg, "valid")["src"] == ["b"]
    assert "data.valid names unset S2S_DTA" in caplog.text
    assert "while data.train is read from local files" in caplog.text


def test_one_language_on_both_sides_is_warned(tmp_path, caplog):
    (tmp_path / "train.en").write_text("a dog\n", encoding="utf-8")
    cfg = config.from_dict(
        {"data": {"train": str(tmp_path / "train"), "src_lang": "en", "tgt_lang": "en"}}
    ).data
    with caplog.at_level("WARNING"):
        assert load_split(cfg, "train")["tgt"] == ["a dog"]
    assert "data.src_lang and data.tgt_lang are both 'en'" in caplog.text
