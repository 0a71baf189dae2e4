"""Lexical shortlists: what is counted, what a batch decodes over, search through one,
and the ``s2s shortlist`` / ``translate --shortlist`` commands."""

import pytest
import torch
from conftest import SENTENCES, write_corpus
from test_decoding import sharp_model, sources, train_tiny
from test_model import V

from s2s.cli import main
from s2s.decoding import ranking
from s2s.decoding.search import beam_search, greedy, max_lengths
from s2s.decoding.shortlist import Shortlist, ShortlistStepper, build, vocab_digest
from s2s.errors import CheckpointError
from s2s.nn.decoder import StepOutput


def test_each_source_piece_keeps_its_likeliest_target_pieces_in_order():
    # source 5 occurs in 3 pairs: target 9 in all three (p = 1), 8 in two, 7 and 6 in one
    src = [[5, 4], [5], [5, 6]]
    tgt = [[9, 8, 7], [9, 8], [9, 6, 6]]
    made = build(src, tgt, src_vocab=7, tgt_vocab=10, top=3, frequent=1)
    assert made.table[5].tolist() == [9, 8, 6]  # ties (6 and 7, p = 1/3) to the lower id
    assert made.table[4].tolist() == [7, 8, 9]  # one pair: all p = 1, ids ascending
    assert made.table[6].tolist() == [6, 9, -1]  # two target pieces: the rest padded
    assert made.table[0].tolist() == [-1, -1, -1]  # never seen (padding)
    # the specials (0-3) and the commonest target piece (9, in every pair)
    assert made.frequent.tolist() == [0, 1, 2, 3, 9]
    assert (made.src_vocab, made.tgt_vocab) == (7, 10)


def test_a_batch_decodes_over_its_sources_lists_and_the_frequent_pieces():
    made = build([[4], [5], [6]], [[7], [8], [9]], src_vocab=7, tgt_vocab=12, top=2, frequent=0)
    src = torch.tensor([[5, 4, 0], [4, 0, 0]])  # padding ignored
    assert made.vocab(src).tolist() == [0, 1, 2, 3, 7, 8]
    assert made.vocab(torch.tensor([[6]])).tolist() == [0, 1, 2, 3, 9]


def test_a_shortlist_file_round_trips_and_bad_files_are_named(tmp_path):
    made = build([[4, 5]], [[7, 8]], src_vocab=6, tgt_vocab=10, top=2, frequent=1)
    made.save(tmp_path / "sl")
    back = Shortlist.load(tmp_path / "sl")
    assert torch.equal(back.table, made.table) and torch.equal(back.frequent, made.frequent)
    assert back.tgt_vocab == 10
    (tmp_path / "junk").write_bytes(b"not a shortlist")
    with pytest.raises(CheckpointError, match="junk is not an s2s shortlist"):
        Shortlist.load(tmp_path / "junk")
    torch.save({"kind": "something else"}, tmp_path / "other")
    with pytest.raises(CheckpointError, match="not an s2s shortlist"):
        Shortlist.load(tmp_path / "other")
    with pytest.raises(CheckpointError, match="not found"):
        Shortlist.load(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="6 source and 10 target pieces; the model"):
        made.check(Pieces(6), Pieces(11))
    made.check(Pieces(6), Pieces(10))  # no digest kept: the sizes decide
    made.digest = vocab_digest(Pieces(6), Pieces(10))
    made.check(Pieces(6), Pieces(10))
    with pytest.raises(CheckpointError, match="another model's vocabulary"):
        made.check(Pieces(6), Pieces(10, "y"))


class Pieces:
    """A tokenizer's vocabulary, as a shortlist checks it."""

    def __init__(self, size: int, prefix: str = "x"):
        self.vocab_size, self.prefix = size, prefix

    def vocabulary(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(self.vocab_size)]


def full_shortlist(vocab: int) -> Shortlist:
    """A shortlist holding every target piece for every source piece."""
    table = torch.arange(vocab, dtype=torch.int32).repeat(vocab, 1)
    return Shortlist(table, torch.arange(4), vocab)


@pytest.mark.parametrize("head_rows", [4, 256])
def test_a_shortlist_of_the_whole_vocabulary_searches_as_the_model(monkeypatch, head_rows):
    """Blocks of rows or not, the shortlist stepper's ids map back through the whole
    vocabulary: greedy and beam search find the model's own tokens and scores."""
    monkeypatch.setattr(ranking, "HEAD_ROWS", head_rows)
    model = sharp_model(5)
    stepper = ShortlistStepper(model, model.decoder.output, full_shortlist(V), torch.float32)
    src, lengths = sources()
    limit = max_lengths(lengths, 2.0)
    found = [greedy(d, src, lengths, bos=2, eos=3, max_len=limit) for d in (stepper, model)]
    assert found[0].tokens == found[1].tokens
    assert found[0].scores == pytest.approx(found[1].scores, abs=1e-5)
    found = [
        beam_search(d, src, lengths, bos=2, eos=3, beam=3, nbest=2, max_len=limit, min_len=2)
        for d in (stepper, model)
    ]
    assert found[0].tokens == found[1].tokens
    for mine, theirs in zip(found[0].scores, found[1].scores):
        assert mine == pytest.approx(theirs, abs=1e-5)


def test_search_over_a_shortlist_chooses_only_its_pieces_normalised_over_them():
    model = sharp_model(6)
    src, lengths = sources()
    limit = max_lengths(lengths, 2.0)
    full = greedy(model, src, lengths, bos=2, eos=3, max_len=limit)
    common = {t for tokens in full.tokens for t in tokens}
    banned = max(common, key=lambda t: sum(tokens.count(t) for tokens in full.tokens))
    allowed = [t for t in range(2, V) if t != banned]  # EOS (3) in column 1
    table = torch.tensor(allowed, dtype=torch.int32).repeat(V, 1)
    shortlist = Shortlist(table, torch.tensor([2, 3]), V)
    stepper = ShortlistStepper(model, model.decoder.output, shortlist, torch.float32)
    short = greedy(stepper, src, lengths, bos=2, eos=3, max_len=limit)
    assert all(banned not in tokens for tokens in short.tokens)
    assert short.tokens != full.tokens
    # the first step's log-probabilities: the model's own, renormalised without `banned`
    enc = stepper.encode(src, lengths)
    out = stepper.step(torch.full((6,), 2), stepper.init_state(enc), enc)
    values, ids = ranking.step_top_log_probs(out, 3, blocked=3)
    logp = torch.log_softmax(model.decoder.output(out.features)[:, allowed], -1)
    best = torch.tensor(allowed)[logp.argmax(-1)]
    logp[:, allowed.index(3)] = float("-inf")  # EOS blocked, at its column
    want_values, want_cols = logp.topk(3, -1)
    assert torch.equal(ids, torch.tensor(allowed)[want_cols])
    assert torch.allclose(values, want_values, atol=1e-5)
    assert torch.equal(ranking.step_argmax(out), best)


def test_step_output_without_a_shortlist_keeps_the_vocabulary_ids():
    features, weight = torch.randn(3, 4), torch.randn(9, 4)
    out = StepOutput(features, lambda x: x @ weight.T, state=None, attention=None)
    values, ids = ranking.step_top_log_probs(out, 2)
    want = torch.log_softmax(features @ weight.T, -1).topk(2, -1)
    assert torch.equal(ids, want.indices) and torch.allclose(values, want.values)


def test_shortlist_and_translate_commands(tmp_path, tiny_corpus, capsys):
    run = train_tiny(tmp_path, "run", tiny_corpus)
    ckpt, sl = str(run / "last.pt"), str(tmp_path / "sl")
    assert main(["shortlist", ckpt, "--out", sl, "--top", "3", "--frequent", "2"]) == 0
    made = Shortlist.load(sl)
    assert made.table.shape[1] == 3 and len(made.frequent) == 6
    src = tmp_path / "in.en"
    src.write_text("".join(s + "\n" for s, _ in SENTENCES), encoding="utf-8")
    assert main(["translate", ckpt, "--input", str(src), "--output", str(tmp_path / "a")]) == 0
    args = ["translate", ckpt, "--input", str(src), "--shortlist", sl, "--beam", "2"]
    assert main([*args, "--output", str(tmp_path / "b")]) == 0
    assert len((tmp_path / "b").read_text(encoding="utf-8").splitlines()) == len(SENTENCES)
    # from other parallel text; the two sides go together
    other = write_corpus(tmp_path / "other", "pairs", SENTENCES[:2])
    assert (
        main(["shortlist", ckpt, "--out", sl, "--src", other + ".en", "--tgt", other + ".de"]) == 0
    )
    capsys.readouterr()
    assert main(["shortlist", ckpt, "--out", sl, "--src", other + ".en"]) == 2
    assert "--src and --tgt go together" in capsys.readouterr().err
    # a shortlist for other vocabularies is refused by name, before any output
    build([[4]], [[5]], src_vocab=7, tgt_vocab=9).save(tmp_path / "wrong")
    assert main([*args[:4], "--shortlist", str(tmp_path / "wrong")]) == 2
    assert "7 source and 9 target pieces" in capsys.readouterr().err
    # ... and one of another model whose vocabularies have the same sizes
    same_sizes = Shortlist.load(sl)
    same_sizes.digest = "0" * 40
    same_sizes.save(tmp_path / "other-model")
    assert main([*args[:4], "--shortlist", str(tmp_path / "other-model")]) == 2
    assert "another model's vocabulary" in capsys.readouterr().err
    # never written over the checkpoint it is for, nor into a folder that is not there
    before = (run / "last.pt").read_bytes()
    assert main(["shortlist", ckpt, "--out", ckpt]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == before
    assert main(["shortlist", ckpt, "--out", str(tmp_path / "nowhere" / "sl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # ... nor over another checkpoint or file of the run (it could no longer resume),
    # nor over the parallel text it counts
    tokenizer = next(run.glob("tokenizer.*")).name
    for name in ("best.pt", "step-8.pt", "config.yaml", tokenizer, "metrics.jsonl"):
        before = (run / name).read_bytes() if (run / name).exists() else None
        assert main(["shortlist", ckpt, "--out", str(run / name)]) == 2
        assert "is one of its run's own" in capsys.readouterr().err
        assert ((run / name).read_bytes() if (run / name).exists() else None) == before
    pair = ["--src", other + ".en", "--tgt", other + ".de"]
    assert main(["shortlist", ckpt, *pair, "--out", other + ".en"]) == 2
    assert "is one of the inputs" in capsys.readouterr().err


def test_a_damaged_shortlist_is_named_and_top_is_at_most_the_vocabulary(tmp_path, capsys):
    made = build([[4, 5], [6]], [[5, 6], [7]], src_vocab=8, tgt_vocab=9, top=10**9)
    assert made.table.shape == (8, 9)  # not a billion columns of padding
    for damage in ("ids", "frequent", "float"):
        state = made.state()
        if damage == "ids":
            state["table"] = state["table"].clone().fill_(9999)
        elif damage == "frequent":
            state["frequent"] = torch.cat([state["frequent"], torch.tensor([70000])])
        else:
            state["table"] = state["table"].float()
        with pytest.raises(CheckpointError, match="damaged"):
            Shortlist.from_state(state)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_translate_over_a_whole_vocabulary_shortlist_as_without_one(
    tmp_path, tiny_corpus, precision
):
    """``translate`` with a shortlist holding every piece gives the outputs without one,
    in float32 and from the bf16 copy (whose output layer may be packed, with no weight
    to take rows from: the shortlist takes the float32 model's rows, cast to bf16)."""
    from s2s.decoding.translate import translate_lines
    from s2s.translation import checkpoint

    loaded = checkpoint.load_for_translation(train_tiny(tmp_path, "run", tiny_corpus) / "last.pt")
    n_src, n_tgt = loaded.src_tok.vocab_size, loaded.tgt_tok.vocab_size
    table = torch.arange(n_tgt, dtype=torch.int32).repeat(n_src, 1)
    whole = Shortlist(table, torch.arange(4), n_tgt)
    lines = [s for s, _ in SENTENCES]
    options = dict(reverse_source=False, precision=precision, beam=2)
    args = (loaded.model, loaded.src_tok, loaded.tgt_tok, lines)
    assert translate_lines(*args, shortlist=whole, **options) == translate_lines(*args, **options)
