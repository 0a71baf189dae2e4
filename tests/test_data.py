import gzip
import random
import subprocess
import sys

import pytest
import torch
from conftest import SENTENCES, write_corpus

from s2s import config
from s2s.data.corpus import (
    Corpus,
    Packed,
    as_source,
    encode_corpus,
    epoch_batches,
    length_batches,
    source_ids,
)
from s2s.data.files import load_split, read_lines
from s2s.data.tokenize import EOS, UNK, save_tokenizers, train_tokenizers
from s2s.decoding.translate import _sources as translate_sources
from s2s.errors import ConfigError, DataError
from s2s.translation import checkpoint


def test_read_plain_and_gz_keep_empty_lines(tmp_path):
    text = "first\n\nthird\r\nfourth\u2028still fourth\n"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(text.encode()))
    expected = ["first", "", "third", "fourth\u2028still fourth"]
    assert read_lines(tmp_path / "a.txt") == expected
    assert read_lines(tmp_path / "a.txt.gz") == expected


def test_non_utf8_names_file_and_line(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"ok\nalso ok\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"b\.txt line 3: bytes that are not valid utf-8"):
        read_lines(tmp_path / "b.txt")
    assert read_lines(tmp_path / "b.txt", "latin-1")[2] == "café"


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_lines(tmp_path / "nope.txt")


def test_line_count_mismatch_names_files_and_counts(tmp_path):
    prefix = write_corpus(tmp_path, "train", SENTENCES)
    with open(f"{prefix}.de", "a", encoding="utf-8") as handle:
        handle.write("eine zeile mehr .\n")
    cfg = config.from_dict({"data": {"train": prefix}}).data
    with pytest.raises(DataError, match=r"train\.en has 8 lines, .*train\.de has 9"):
        load_split(cfg, "train")


def test_unset_variable_without_hub_is_an_error(monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    cfg = config.from_dict({"data": {"train": "${NOT_SET_ANYWHERE}/train"}}).data
    with pytest.raises(DataError, match="NOT_SET_ANYWHERE"):
        load_split(cfg, "train")


def test_train_limit(tmp_path):
    prefix = write_corpus(tmp_path, "train", SENTENCES)
    cfg = config.from_dict({"data": {"train": prefix, "train_limit": 3}}).data
    ds = load_split(cfg, "train")
    assert len(ds) == 3 and ds["src"][0] == SENTENCES[0][0] and ds["tgt"][2] == SENTENCES[2][1]


def test_local_files_load_without_importing_datasets(tmp_path):
    """datasets (with pyarrow and pandas, ~100 MB resident) is for hub data only."""
    prefix = write_corpus(tmp_path, "train", SENTENCES)
    code = (
        "import sys\n"
        "from s2s import config\n"
        "from s2s.data.files import load_split\n"
        f"cfg = config.from_dict({{'data': {{'train': {str(prefix)!r}}}}}).data\n"
        "pairs = load_split(cfg, 'train')\n"
        f"assert pairs['tgt'][1] == {SENTENCES[1][1]!r}, pairs['tgt']\n"
        "print(len(pairs), 'datasets' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(SENTENCES)), "False"]


def word_tok():
    cfg = config.from_dict({"data": {"train": "x", "tokenizer": {"kind": "word"}}}).data.tokenizer
    return train_tokenizers(cfg, [s for s, _ in SENTENCES], [t for _, t in SENTENCES])


def test_a_byte_order_mark_is_not_read_as_text(tmp_path):
    path = tmp_path / "bom.en"
    path.write_bytes("\ufeffa dog runs .\r\nthe end\n".encode("utf-8"))
    assert read_lines(path) == ["a dog runs .", "the end"]


def test_a_sentencepiece_vocabulary_smaller_than_asked_is_said(caplog):
    cfg = config.from_dict(
        {"data": {"train": "x", "tokenizer": {"kind": "spm", "vocab_size": 5000}}}
    ).data.tokenizer
    with caplog.at_level("WARNING"):
        src, _ = train_tokenizers(cfg, [s for s, _ in SENTENCES], [t for _, t in SENTENCES])
    assert src.vocab_size < 5000
    made = f"SentencePiece made {src.vocab_size} pieces for the joint tokenizer, not"
    assert made in caplog.text and "data.tokenizer.vocab_size 5000" in caplog.text


def test_source_cleaning_keeps_format_characters_that_carry_meaning():
    """Only control characters and line separators become spaces: the zero-width
    non-joiner inside a Persian word, emoji joiners and direction marks stay, a soft
    hyphen (an invisible hint inside a word) goes without splitting the word."""
    from s2s.data.tokenize import clean_source

    assert clean_source("می\u200cخواهم") == "می\u200cخواهم"
    assert clean_source("👩\u200d💻 \u200fשלום") == "👩\u200d💻 \u200fשלום"
    assert clean_source("Zusammen\u00adarbeit\u00a0jetzt") == "Zusammenarbeit\u00a0jetzt"
    assert clean_source("\x1b[31m a\u2029b\x00") == "[31m a b"


def test_word_and_char_outputs_keep_their_unknowns():
    """As Joey NMT writes <unk> (and SentencePiece ⁇): a dropped unknown loses a word
    from the output and from its BLEU without a trace."""
    src_tok, tgt_tok = word_tok()
    ids = tgt_tok.encode(["ein Zebra rennt ."])[0]
    assert UNK in ids
    assert tgt_tok.decode([ids + [EOS]]) == ["ein <unk> rennt ."]


def test_sentencepiece_names_lines_it_leaves_out_and_the_side_it_trains(caplog):
    cfg = config.from_dict(
        {"data": {"train": "x", "tokenizer": {"kind": "spm", "vocab_size": 40, "joint": False}}}
    ).data.tokenizer
    long = "ein hund " * 600  # over 4,192 bytes
    with caplog.at_level("WARNING"):
        train_tokenizers(cfg, [s for s, _ in SENTENCES], [t for _, t in SENTENCES] + [long])
    assert "1 of the target training lines are over 4192 bytes" in caplog.text
    with pytest.raises(DataError, match=r"\(target tokenizer\).*every target training line"):
        train_tokenizers(cfg, ["a dog"], [long])
    with caplog.at_level("WARNING"):
        spm_cfg = config.from_dict(
            {"data": {"train": "x", "tokenizer": {"kind": "spm", "min_freq": 3}}}
        ).data.tokenizer
        train_tokenizers(spm_cfg, [s for s, _ in SENTENCES], [t for _, t in SENTENCES])
    assert "min_freq applies to char and word vocabularies, not spm" in caplog.text


def test_line_ends_of_a_lone_carriage_return_are_named():
    from s2s.data.files import split_lines

    with pytest.raises(DataError, match=r"ends its lines with \\r alone"):
        split_lines(b"a dog\rthe cat\rsits\r", "utf-8", "train.en")
    assert split_lines(b"a dog\r", "utf-8", "x") == ["a dog"]


def test_sources_are_cleaned_alike_in_training_and_translation():
    cfg = config.from_dict({"data": {"train": "x", "tokenizer": {"kind": "word"}}}).data.tokenizer
    dirty = ["a\x00dog\u2028runs .", "the\x07 boy"]
    src_tok, tgt_tok = train_tokenizers(cfg, dirty, ["ein hund .", "der junge"])
    assert "a" in src_tok.vocabulary() and not any("\x00" in p for p in src_tok.vocabulary())
    clean = ["a dog runs .", "the  boy"]
    assert source_ids(src_tok, dirty, False) == source_ids(src_tok, clean, False)
    pairs = {"src": dirty, "tgt": ["ein hund .", "der junge"]}
    corpus = encode_corpus(pairs, src_tok, tgt_tok, reverse_source=False)
    assert [s.tolist() for s in corpus.src] == source_ids(src_tok, clean, False)


def test_source_reversal_is_a_data_transform():
    src_tok, _ = word_tok()
    plain = source_ids(src_tok, ["a dog runs ."], reverse=False)[0]
    rev = source_ids(src_tok, ["a dog runs ."], reverse=True)[0]
    assert plain[-1] == EOS and rev[-1] == EOS
    assert rev[:-1] == plain[:-1][::-1]


def test_a_reversed_source_is_cut_to_its_first_tokens_as_its_target(caplog):
    src_tok, tgt_tok = word_tok()
    line = "a dog runs on the grass ."
    first = src_tok.encode(["a dog runs"])[0]
    for reverse in (False, True):  # the cut comes before the reversal, EOS stays
        want = (first[::-1] if reverse else first) + [EOS]
        assert source_ids(src_tok, [line], reverse, max_len=3) == [want]
        pairs = {"src": [line], "tgt": ["ein hund rennt auf dem gras ."]}
        corpus = encode_corpus(
            pairs, src_tok, tgt_tok, reverse_source=reverse, max_len=3, long_pairs="truncate"
        )
        assert corpus.src[0].tolist() == want
        assert corpus.tgt[0].tolist() == tgt_tok.encode(["ein hund rennt"])[0]
        # translate --max-source-length: the same cut as training's
        assert translate_sources(src_tok, [line, "a dog"], reverse, 3) == [
            want,
            as_source(src_tok.encode(["a dog"])[0], reverse),
        ]


def test_empty_and_long_pairs_are_dropped(tmp_path):
    src_tok, tgt_tok = word_tok()
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "src": ["a dog runs .", "", "a " * 50, "the boy jumps ."],
            "tgt": ["ein hund rennt .", "leer", "ein " * 50, ""],
        }
    )
    corpus = encode_corpus(ds, src_tok, tgt_tok, reverse_source=False, max_len=20, drop_empty=True)
    assert len(corpus) == 1  # the first pair, and its ids
    assert corpus.src[0].tolist() == src_tok.encode(["a dog runs ."])[0] + [EOS]
    assert corpus.tgt[0].tolist() == tgt_tok.encode(["ein hund rennt ."])[0]
    kept = encode_corpus(ds, src_tok, tgt_tok, reverse_source=False, max_len=20)
    assert len(kept) == 3  # without drop_empty only the over-long pair goes
    assert kept.src[1].tolist() == [EOS] and kept.tgt[2].tolist() == []
    truncated = encode_corpus(
        ds, src_tok, tgt_tok, reverse_source=False, max_len=20, long_pairs="truncate"
    )
    assert len(truncated) == 4  # cut to max_len tokens (+ EOS on the source side)
    assert len(truncated.src[2]) == 21 and truncated.src[2][-1] == EOS
    assert len(truncated.tgt[2]) == 20


def test_a_corpus_keeps_its_ids_packed_in_one_tensor():
    # a tensor object per sentence cost ~800 bytes each (51 MB for Multi30k's training
    # side); the ids live in one flat tensor and each sentence is a view of it
    seqs = [[5, 6, 7], [], [8], [9, 10]]
    corpus = Corpus(src=seqs, tgt=[[1], [2, 3], [], [4]])
    assert isinstance(corpus.src, Packed) and len(corpus) == 4
    assert [s.tolist() for s in corpus.src] == seqs
    assert corpus.src[-1].tolist() == [9, 10] and corpus.src[3].dtype == torch.long
    base = corpus.src.ids.untyped_storage().data_ptr()
    assert all(s.untyped_storage().data_ptr() == base for s in corpus.src)
    assert corpus.costs() == [3, 3, 1, 2]  # max(source, target + 1)
    with pytest.raises(IndexError):
        corpus.src[4]
    assert Packed(corpus.src).lengths() == [3, 0, 1, 2]
    assert [s.tolist() for s in corpus.src[1:4:2]] == [[], [9, 10]]


def test_token_budget_and_sentence_batches():
    rng = random.Random(0)
    lengths = [rng.randint(1, 30) for _ in range(500)]
    batches = length_batches(lengths, batch_size=200, unit="tokens", pool=10, rng=random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 200
    by_count = length_batches(
        lengths, batch_size=32, unit="sentences", pool=10, rng=random.Random(1)
    )
    assert max(len(b) for b in by_count) == 32
    assert sorted(i for b in by_count for i in b) == list(range(500))


def test_shape_multiple_rounds_lengths_and_sentence_counts():
    """With a multiple, a batch that filled up holds a multiple of it sentences, its
    padded cost (lengths rounded up) stays in the budget, and no sentence is lost."""
    rng = random.Random(0)
    lengths = [rng.randint(1, 30) for _ in range(500)]
    batches = length_batches(  # one pool: only its last batch may be short
        lengths, batch_size=400, unit="tokens", pool=1000, rng=random.Random(1), multiple=8
    )
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert len(batches) > 10 and sum(len(b) % 8 != 0 for b in batches) <= 1
    for b in batches:
        assert len(b) == 1 or -(-max(lengths[i] for i in b) // 8) * 8 * len(b) <= 400
    plain = length_batches(lengths, batch_size=400, unit="tokens", pool=1000, rng=random.Random(1))
    assert len({len(b) for b in batches}) < len({len(b) for b in plain})


def test_collate_pads_both_sides_to_the_multiple():
    from s2s.data.corpus import collate
    from s2s.data.tokenize import PAD

    src_tok, tgt_tok = word_tok()
    import datasets

    ds = datasets.Dataset.from_dict(
        {"src": [s for s, _ in SENTENCES[:3]], "tgt": [t for _, t in SENTENCES[:3]]}
    )
    corpus = encode_corpus(ds, src_tok, tgt_tok, reverse_source=False)
    plain, padded = collate(corpus, [0, 1, 2]), collate(corpus, [0, 1, 2], multiple=8)
    for name in ("src", "tgt_in", "tgt_out"):
        a, b = getattr(plain, name), getattr(padded, name)
        assert b.shape[1] % 8 == 0 and b.shape[1] >= a.shape[1]
        assert (b[:, : a.shape[1]] == a).all() and (b[:, a.shape[1] :] == PAD).all()
    assert padded.n_tokens == plain.n_tokens and (padded.src_lengths == plain.src_lengths).all()


def test_epoch_batches_reshuffle_and_are_reproducible(tmp_path):
    src_tok, tgt_tok = word_tok()
    import datasets

    ds = datasets.Dataset.from_dict(
        {"src": [s for s, _ in SENTENCES] * 20, "tgt": [t for _, t in SENTENCES] * 20}
    )
    corpus = encode_corpus(ds, src_tok, tgt_tok, reverse_source=False)
    cfg = config.from_dict({"data": {"train": "x", "batch_size": 40}}).data
    e0, e0_again, e1 = (
        epoch_batches(corpus, cfg, 7, 0),
        epoch_batches(corpus, cfg, 7, 0),
        epoch_batches(corpus, cfg, 7, 1),
    )
    assert e0 == e0_again
    assert e0 != e1
    assert epoch_batches(corpus, cfg, 8, 0) != e0  # another seed, another order


def test_hub_fallback_loads_a_datasets_repository(tmp_path, monkeypatch):
    """A prefix naming an unset variable loads data.hub through datasets.load_dataset
    (here a local dataset folder, so no network is needed) and renames the language
    columns."""
    import json

    repo = tmp_path / "hubrepo"
    repo.mkdir()
    for split, pairs in (("train", SENTENCES), ("validation", SENTENCES[:2])):
        with open(repo / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for en, de in pairs:
                handle.write(json.dumps({"en": en, "de": de, "extra": 1}) + "\n")
    monkeypatch.delenv("S2S_NOT_SET", raising=False)
    cfg = config.from_dict(
        {"data": {"train": "${S2S_NOT_SET}/train", "valid": "${S2S_NOT_SET}/val", "hub": str(repo)}}
    ).data
    train = load_split(cfg, "train")
    assert train["src"] == [en for en, _ in SENTENCES]
    assert len(train) == len(SENTENCES) and train["tgt"][1] == SENTENCES[1][1]
    assert len(load_split(cfg, "valid")) == 2
    bad = config.from_dict(
        {"data": {"train": "${S2S_NOT_SET}/train", "hub": str(repo), "src_lang": "fr"}}
    ).data
    with pytest.raises(DataError, match="no column 'fr'"):
        load_split(bad, "train")


def test_a_batch_counts_target_tokens_with_their_eos():
    from s2s.data.corpus import collate
    from s2s.data.tokenize import BOS, PAD

    src_tok, tgt_tok = word_tok()
    import datasets

    ds = datasets.Dataset.from_dict(
        {"src": [s for s, _ in SENTENCES[:3]], "tgt": [t for _, t in SENTENCES[:3]]}
    )
    corpus = encode_corpus(ds, src_tok, tgt_tok, reverse_source=False)
    batch = collate(corpus, [0, 1, 2])
    words = [len(t.split()) for _, t in SENTENCES[:3]]
    assert batch.n_tokens == sum(words) + 3 == int((batch.tgt_out != PAD).sum())
    for row, n in enumerate(words):
        assert batch.tgt_in[row, 0] == BOS and batch.tgt_out[row, n] == EOS
        assert batch.tgt_in[row, 1 : n + 1].tolist() == batch.tgt_out[row, :n].tolist()


def test_target_vocab_train_keeps_only_the_target_sides_pieces(tmp_path):
    src_lines = [s for s, _ in SENTENCES] + ["only english words here"]
    tgt_lines = [t for _, t in SENTENCES]
    cfg = config.TokenizerConfig(kind="word", vocab_size=1000, target_vocab="train")
    src, tgt = train_tokenizers(cfg, src_lines, tgt_lines)
    german = {w for line in tgt_lines for w in line.split()}
    assert tgt.vocabulary()[:4] == src.vocabulary()[:4]  # the specials keep their ids
    assert set(tgt.vocabulary()[4:]) == german
    assert tgt.vocab_size == 4 + len(german) < src.vocab_size
    ids = tgt.encode(tgt_lines + ["ein mann english"])
    assert tgt.decode(ids[:-1]) == tgt_lines
    assert ids[-1][-1] == UNK and max(max(seq) for seq in ids) < tgt.vocab_size
    # Through a checkpoint's tokenizer states and back: the same vocabularies.
    states = checkpoint.tokenizer_states(src, tgt)
    assert not states["joint"]
    src2, tgt2 = checkpoint.tokenizers_of({"tokenizers": states})
    assert tgt2.vocabulary() == tgt.vocabulary() and tgt2.base.vocabulary() == src.vocabulary()
    save_tokenizers(src, tgt, tmp_path)
    assert (tmp_path / "tokenizer.tgt.pieces").read_text().split("\n")[4:-1] == sorted(
        german, key=src.vocabulary().index
    )


def test_target_vocab_train_on_a_joint_sentencepiece_model(multi30k_slice):
    ds = load_split(config.DataConfig(train=str(multi30k_slice / "multi30k" / "train")), "train")
    cfg = config.TokenizerConfig(vocab_size=600, target_vocab="train")
    src, tgt = train_tokenizers(cfg, list(ds["src"]), list(ds["tgt"]))
    assert tgt.vocab_size < src.vocab_size
    german = list(ds["tgt"])[:50]
    assert tgt.decode(tgt.encode(german)) == src.decode(src.encode(german))
    assert UNK not in {i for seq in tgt.encode(german) for i in seq}


def test_target_vocab_train_needs_a_joint_tokenizer():
    data = {"data": {"train": "x", "tokenizer": {"joint": False, "target_vocab": "train"}}}
    with pytest.raises(ConfigError, match="target_vocab 'train' needs data.tokenizer.joint"):
        config.from_dict(data)
