"""Beam search, ensembles and checkpoint averaging on real (tiny) models."""

import importlib.util
import platform
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, SENTENCES, tiny_config_dict, write_corpus
from test_model import V, model_cfg

from s2s import config
from s2s.cli import main
from s2s.decoding.ensemble import Ensemble
from s2s.decoding.search import beam_search, greedy, max_lengths
from s2s.decoding.translate import decoding_model, translate, translate_lines
from s2s.nn.seq2seq import build_model
from s2s.training.runfolder import step_checkpoints
from s2s.translation import checkpoint, train


def sources(batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7 - (i % 5) for i in range(batch)])
    src = torch.randint(4, V, (batch, int(lengths.max())), generator=g)
    for i, n in enumerate(lengths):
        src[i, n:] = 0
    return src, lengths


@torch.inference_mode()
def first_step_logits(stepper, src, lengths):
    """The logits of a stepper's first search step (BOS = 2) on a batch."""
    enc = stepper.encode(src, lengths)
    prev = torch.full((src.shape[0],), 2)
    return stepper.step(prev, stepper.init_state(enc), enc).logits


def sharp_model(seed, **kw):
    """A random model with a peaked output distribution, so that outputs end early."""
    torch.manual_seed(seed)
    model = build_model(model_cfg(**kw), src_vocab=V, tgt_vocab=V).eval()
    with torch.no_grad():
        model.decoder.output.bias.normal_(0, 3)
        model.decoder.output.bias[3] += 2.0  # EOS
    return model


@pytest.mark.parametrize("input_feeding", [False, True])
@pytest.mark.parametrize("attention", ["none", "additive", "multiplicative"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_beam_one_equals_greedy_on_a_model(cell, attention, input_feeding):
    model = sharp_model(
        1,
        attention=attention,
        encoder={"cell": cell},
        decoder={"cell": cell, "input_feeding": input_feeding},
    )
    src, lengths = sources()
    limit = max_lengths(lengths, 2.0)
    g = greedy(model, src, lengths, bos=2, eos=3, max_len=limit)
    nb = beam_search(model, src, lengths, bos=2, eos=3, beam=1, max_len=limit)
    assert [t[0] for t in nb.tokens] == g.tokens
    assert [s[0] for s in nb.scores] == pytest.approx(g.scores, abs=1e-5)


def test_batched_beam_equals_one_sentence_at_a_time():
    model = sharp_model(2)
    src, lengths = sources()
    limit = max_lengths(lengths, 2.0)
    batched = beam_search(model, src, lengths, bos=2, eos=3, beam=4, max_len=limit, nbest=2)
    for i in range(src.shape[0]):
        n = int(lengths[i])
        alone = beam_search(
            model,
            src[i : i + 1, :n],
            lengths[i : i + 1],
            bos=2,
            eos=3,
            beam=4,
            max_len=limit[i : i + 1],
            nbest=2,
        )
        assert alone.tokens[0] == batched.tokens[i]
        assert alone.scores[0] == pytest.approx(batched.scores[i], abs=1e-4)


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
@pytest.mark.parametrize("input_feeding", [False, True])
def test_beams_sharing_one_encoder_output_search_as_with_k_copies(
    monkeypatch, attention, input_feeding
):
    """Beam search hands the model one encoder output row per sentence (its K beams
    attend over it together): n-best lists, scores and attention rows equal those of
    the search with K copies, also through an ensemble and while sentences leave."""
    model = sharp_model(5, attention=attention, decoder={"input_feeding": input_feeding})
    src, lengths = sources(batch=7, seed=5)
    limit = max_lengths(lengths, 2.0)
    options = dict(bos=2, eos=3, beam=3, max_len=limit, nbest=2, attention=True, row_step=2)
    runs = []
    for grouped in (True, False):
        monkeypatch.setattr(type(model), "grouped_encoder", grouped)
        assert Ensemble([model]).grouped_encoder is grouped  # the flag reaches the ensemble
        runs += [beam_search(s, src, lengths, **options) for s in (model, Ensemble([model]))]
    shared, shared_ens, copies, copies_ens = runs
    for run in (shared, shared_ens):
        assert run.tokens == copies.tokens
        for mine, theirs in zip(run.scores, copies.scores):
            assert mine == pytest.approx(theirs, abs=1e-5)
        for mine, theirs in zip(run.attention, copies.attention):
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(mine, theirs))


def test_beam_never_scores_below_greedy_under_the_model():
    model = sharp_model(3)
    src, lengths = sources(batch=8, seed=3)
    limit = max_lengths(lengths, 2.0)
    g = greedy(model, src, lengths, bos=2, eos=3, max_len=limit)
    nb = beam_search(model, src, lengths, bos=2, eos=3, beam=5, max_len=limit)
    for greedy_score, beam_scores in zip(g.scores, nb.scores):
        assert beam_scores[0] >= greedy_score - 1e-5


def test_ensemble_of_one_model_and_of_a_model_with_itself_match_the_model():
    model = sharp_model(4)
    src, lengths = sources()
    limit = max_lengths(lengths, 2.0)
    alone = beam_search(model, src, lengths, bos=2, eos=3, beam=3, max_len=limit)
    for members in ([model], [model, model]):
        ens = beam_search(Ensemble(members), src, lengths, bos=2, eos=3, beam=3, max_len=limit)
        assert ens.tokens == alone.tokens
        assert ens.scores == [pytest.approx(s, abs=1e-5) for s in alone.scores]


def test_ensemble_step_averages_log_probabilities_of_different_architectures():
    a = sharp_model(5)
    b = sharp_model(6, attention="additive", decoder={"cell": "gru"})
    src, lengths = sources()
    ens = Ensemble([a, b])
    prev = torch.full((src.shape[0],), 2)
    out = ens.step(prev, ens.init_state(ens.encode(src, lengths)), ens.encode(src, lengths))
    expected = []
    for m in (a, b):
        enc = m.encode(src, lengths)
        expected.append(torch.log_softmax(m.step(prev, m.init_state(enc), enc).logits, -1))
    assert torch.allclose(out.logits, (expected[0] + expected[1]) / 2, atol=1e-6)
    assert torch.allclose(out.attention.sum(-1), torch.ones(src.shape[0]))


# --------------------------------------------------------------------------- checkpoints


def train_tiny(tmp_path, name, corpus, **train_options) -> object:
    cfg = config.from_dict(tiny_config_dict(corpus, **train_options))
    out = tmp_path / name
    train(cfg, out)
    return out


def test_keep_checkpoints_keeps_the_last_n(tmp_path, tiny_corpus):
    out = train_tiny(tmp_path, "run", tiny_corpus, keep_checkpoints=2, save_every=2)
    assert [p.name for p in step_checkpoints(out)] == ["step-4.pt", "step-6.pt"]
    final = checkpoint.load(out / "step-6.pt")
    last = checkpoint.load(out / "last.pt")
    assert final["progress"]["step"] == 6
    assert all(torch.equal(final["model"][k], last["model"][k]) for k in last["model"])


def test_average_is_the_parameter_mean_and_translates(tmp_path, tiny_corpus, capsys):
    out = train_tiny(tmp_path, "run", tiny_corpus, keep_checkpoints=3, save_every=2)
    paths = [str(p) for p in step_checkpoints(out)]
    avg = tmp_path / "avg.pt"
    assert main(["average", *paths, "--out", str(avg)]) == 0
    payload = checkpoint.load(avg)
    states = [checkpoint.load(p)["model"] for p in paths]
    for name, value in payload["model"].items():
        mean = sum(s[name].double() for s in states) / len(states)
        assert torch.allclose(value.double(), mean, atol=1e-6), name
    assert "optimizer" not in payload
    capsys.readouterr()
    (tmp_path / "in.txt").write_text("a dog runs .\n")
    assert main(["translate", str(avg), "--input", str(tmp_path / "in.txt")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_average_refuses_different_models(tmp_path, tiny_corpus, capsys):
    a = train_tiny(tmp_path, "a", tiny_corpus)
    cfg = tiny_config_dict(tiny_corpus)
    cfg["model"]["decoder"]["hidden_size"] = 24
    train(config.from_dict(cfg), tmp_path / "b")
    code = main(
        [
            "average",
            str(a / "last.pt"),
            str(tmp_path / "b" / "last.pt"),
            "--out",
            str(tmp_path / "x.pt"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "different models (model.decoder.hidden_size)" in err
    assert not (tmp_path / "x.pt").exists()


def test_translate_nbest_and_alignment_formats(tmp_path, tiny_corpus, capsys):
    out = train_tiny(tmp_path, "run", tiny_corpus, max_steps=30)
    inp = tmp_path / "in.txt"
    inp.write_text("a dog runs .\n\nthe boy jumps .\n")
    align = tmp_path / "align.txt"
    code = main(
        [
            "translate",
            str(out / "best.pt"),
            "--input",
            str(inp),
            "--beam",
            "4",
            "--nbest",
            "3",
            "--min-length",
            "1",
            "--alignments",
            str(align),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9
    for i in range(3):
        group = [
            re.fullmatch(r"(\d+) \|\|\| (.*) \|\|\| (-?[\d.]+)", line)
            for line in lines[3 * i : 3 * i + 3]
        ]
        assert all(m and int(m.group(1)) == i for m in group), lines
        scores = [float(m.group(3)) for m in group]
        assert scores == sorted(scores, reverse=True)
        if i != 1:
            assert len({m.group(2) for m in group}) == 3
    pairs = align.read_text().split("\n")
    assert len(pairs) == 4 and pairs[1] == "" and pairs[3] == ""
    for text in (pairs[0], pairs[2]):
        assert re.fullmatch(r"(\d+-\d+)( \d+-\d+)*", text), text


def test_ensemble_needs_the_same_target_vocabulary(tmp_path, tiny_corpus, capsys):
    a = train_tiny(tmp_path, "a", tiny_corpus)
    other = write_corpus(tmp_path / "other", "train", [(s, t + " extra") for s, t in SENTENCES])
    cfg = tiny_config_dict({**tiny_corpus, "train": other})
    train(config.from_dict(cfg), tmp_path / "b")
    inp = tmp_path / "in.txt"
    inp.write_text("a dog runs .\n")
    code = main(
        ["translate", str(a / "last.pt"), str(tmp_path / "b" / "last.pt"), "--input", str(inp)]
    )
    assert code == 2
    assert "their target vocabularies differ" in capsys.readouterr().err


def test_ensemble_of_two_runs_translates(tmp_path, tiny_corpus, capsys):
    a = train_tiny(tmp_path, "a", tiny_corpus, max_steps=20)
    cfg = tiny_config_dict(tiny_corpus, max_steps=20, seed=7)
    cfg["model"]["decoder"]["cell"] = "gru"
    train(config.from_dict(cfg), tmp_path / "b")
    inp = tmp_path / "in.txt"
    inp.write_text("a dog runs .\n\nthe boy jumps .\n")
    capsys.readouterr()
    code = main(
        [
            "translate",
            str(a / "last.pt"),
            str(tmp_path / "b" / "last.pt"),
            "--input",
            str(inp),
            "--beam",
            "3",
            "--min-length",
            "1",
            "--precision",
            "fp32",  # as translate_lines below (the CLI's default, auto, may pick bf16)
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[0].strip()
    # the same as decoding the two models as one ensemble
    members = [checkpoint.load_for_translation(p / "last.pt") for p in (a, tmp_path / "b")]
    direct = translate_lines(
        Ensemble([m.model for m in members]),
        members[0].src_tok,
        members[0].tgt_tok,
        ["a dog runs .", "", "the boy jumps ."],
        reverse_source=False,
        beam=3,
        min_len=1,
    )
    assert lines[:3] == direct
    assert (
        yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["model"]["decoder"]["cell"]
        == "gru"
    )


def test_batches_by_tokens_translate_as_batches_by_sentences(
    tmp_path, tiny_corpus, capsys, monkeypatch
):
    """--batch-unit tokens groups sentences by a source-token budget (padded); the
    output is the same as with sentence batches, in the input order."""
    import s2s.decoding.translate as module

    shapes, search = [], module._search
    monkeypatch.setattr(
        module,
        "_search",
        lambda model, src, *a, **k: shapes.append(src.shape) or search(model, src, *a, **k),
    )
    out = train_tiny(tmp_path, "run", tiny_corpus, max_steps=30)
    shapes.clear()  # validation's
    inp = tmp_path / "in.txt"
    inp.write_text(
        "a dog runs .\n\nthe boy jumps .\na cat sleeps on the big red mat .\nthe boy .\n"
    )
    outputs = {}
    for options in (["--batch-size", "2"], ["--batch-unit", "tokens", "--batch-size", "16"]):
        assert main(["translate", str(out / "best.pt"), "--input", str(inp), *options]) == 0
        outputs[options[1]] = capsys.readouterr().out
        rows = [s[0] for s in shapes]
        assert (
            max(rows) == 2
            if options[1] == "2"
            else max(rows) > 2 and all(r * n <= 16 for r, n in shapes)
        ), shapes
        shapes.clear()
    assert outputs["2"] == outputs["tokens"] and len(outputs["2"].splitlines()) == 5


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_decoding_precision_sets_the_dtype_of_the_models_products(precision, dtype):
    # bf16: a bfloat16 copy decodes (the output layer, most of decoding's work, in bf16),
    # the caller's model stays float32; fp32: the model itself, nothing cast. Search's
    # own scores stay float32 either way.
    from s2s.decoding.translate import decoding_model

    model = sharp_model(2)
    decoder = decoding_model(model, precision, torch.device("cpu"))
    assert (decoder is model) == (precision == "fp32")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    seen = []
    decoder.decoder.output.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    src, lengths = sources()
    nb = beam_search(decoder, src, lengths, bos=2, eos=3, beam=3, max_len=max_lengths(lengths, 2.0))
    assert seen and set(seen) == {dtype}
    assert all(isinstance(s, float) for row in nb.scores for s in row)


def test_the_bf16_copy_packs_its_linear_layers_and_decodes_the_same_to_the_bit(monkeypatch):
    """Where oneDNN packs bf16 weights (its build, and a CPU with avx512bw/vl/dq or
    avx_ne_convert: read at run time), decoding's bf16 copy swaps its linear layers
    (output, combination, bridge, attention) for ones with packed weights: the same
    logits to the bit and the same n-best as the plain bf16 copy; an ensemble's members
    too. Elsewhere (an AVX2-only CPU) nothing is swapped and the copy still decodes."""
    from s2s.decoding import packed as packed_module
    from s2s.decoding import translate as module
    from s2s.decoding.packed import PackedLinear

    cpu = torch.device("cpu")
    model = sharp_model(2)
    packed = module.decoding_model(model, "bf16", cpu)
    pair = module.decoding_model(Ensemble([sharp_model(3), sharp_model(4)]), "bf16", cpu)
    monkeypatch.setattr(module, "pack_linears", lambda m: 0)
    plain = module.decoding_model(model, "bf16", cpu)
    count = sum(isinstance(m, PackedLinear) for m in packed.modules())
    assert not any(isinstance(m, PackedLinear) for m in plain.modules())
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and platform.machine() == "x86_64":  # oneDNN's condition, read here
        flags = set(cpuinfo.read_text(errors="replace").split())
        packs = {"avx512bw", "avx512vl", "avx512dq"} <= flags or "avx_ne_convert" in flags
        assert packed_module._works() == packs
    if packed_module._works():
        linears = sum(type(m) is torch.nn.Linear for m in model.modules())
        assert count == linears >= 3
        assert all(any(isinstance(m, PackedLinear) for m in x.modules()) for x in pair.models)
    else:
        assert count == 0
    src, lengths = sources()
    steps = [first_step_logits(d, src, lengths) for d in (packed, plain)]
    assert steps[0].dtype == torch.bfloat16 and torch.equal(steps[0], steps[1])
    limit = max_lengths(lengths, 2.0)
    found = [
        beam_search(d, src, lengths, bos=2, eos=3, beam=3, nbest=2, max_len=limit)
        for d in (packed, plain)
    ]
    assert found[0].tokens == found[1].tokens and found[0].scores == found[1].scores


def test_a_packed_float32_output_layer_decodes_as_the_model(monkeypatch):
    """float32 decoding on the CPU packs the output layer's weight once (``packed_head``,
    where this build packs float32) and runs it a few rows at a time: the logits of a
    step equal the model's up to rounding, and greedy and beam search (rows in blocks
    smaller than the batch) find the same tokens and scores as on the model itself. Not
    wrapped: an ensemble, and the bf16 copy (its own packed layers)."""
    from s2s.decoding import packed as packed_module
    from s2s.decoding import ranking
    from s2s.decoding.packed import PackedHead, packed_head

    monkeypatch.setattr(ranking, "HEAD_ROWS", 4)
    model = sharp_model(5)
    stepper = packed_head(model, model)
    assert packed_module._works(torch.float32) == isinstance(stepper, PackedHead)
    pair = Ensemble([sharp_model(3), sharp_model(4)])
    assert packed_head(pair, pair) is pair
    half = decoding_model(model, "bf16", torch.device("cpu"))
    assert packed_head(half, half) is half
    src, lengths = sources()
    outs = [first_step_logits(d, src, lengths) for d in (stepper, model)]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    limit = max_lengths(lengths, 2.0)
    found = [greedy(d, src, lengths, bos=2, eos=3, max_len=limit) for d in (stepper, model)]
    assert found[0].tokens == found[1].tokens
    assert found[0].scores == pytest.approx(found[1].scores, abs=1e-5)
    found = [
        beam_search(d, src, lengths, bos=2, eos=3, beam=3, nbest=2, max_len=limit)
        for d in (stepper, model)
    ]
    assert found[0].tokens == found[1].tokens
    for mine, theirs in zip(found[0].scores, found[1].scores):
        assert mine == pytest.approx(theirs, abs=1e-5)


def test_validation_during_training_decodes_without_packing_the_output_layer(
    tmp_path, tiny_corpus, monkeypatch
):
    """Validation translates with the model's own float32 output layer: packing it at
    each validation raised a training run's peak memory by about 200 MB (docs/speed.md,
    twenty-second session); ``s2s translate`` still packs it."""
    from s2s.decoding import translate as translate_module

    packs = []
    real = translate_module.packed_head

    def counting(stepper, model):
        packs.append(model)
        return real(stepper, model)

    monkeypatch.setattr(translate_module, "packed_head", counting)
    out = train_tiny(tmp_path, "run", tiny_corpus, precision="fp32")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert sum('"valid"' in line for line in lines) == 2  # two validations ran
    assert packs == []
    payload = checkpoint.load_for_translation(out / "best.pt")
    translate_lines(payload.model, payload.src_tok, payload.tgt_tok, ["a b"], reverse_source=False)
    assert len(packs) == 1


def test_checking_for_packed_weights_draws_no_random_numbers():
    """The first search of a run checks (once) whether this build packs weights; the
    global random state is the same after it, so that a resumed training run, which
    checks again at its first validation, draws the numbers of a straight run."""
    from s2s.decoding import packed

    packed._works.cache_clear()
    before = torch.random.get_rng_state()
    packed._works(torch.float32), packed._works(torch.bfloat16)
    assert torch.equal(before, torch.random.get_rng_state())


def test_an_unknown_decoding_precision_is_refused_by_name():
    from s2s.decoding.translate import decoding_model

    with pytest.raises(ValueError, match="fp16.*valid: auto, fp32, bf16"):
        decoding_model(sharp_model(2), "fp16", torch.device("cpu"))


def test_validation_loss_is_the_same_in_small_token_batches_and_stays_within_them():
    # the loss is batched by padded tokens (the logits of a big batch were a run's
    # memory peak); any budget gives the per-token mean of all sentences at once
    from s2s.data.corpus import Corpus
    from s2s.translation import objective

    gen = torch.Generator().manual_seed(3)
    lengths = [(2 + i % 5, 1 + i % 4) for i in range(12)]
    corpus = Corpus(
        src=[torch.randint(4, V, (s,), generator=gen) for s, _ in lengths],
        tgt=[torch.randint(4, V, (t,), generator=gen) for _, t in lengths],
    )
    model = sharp_model(4)
    shapes = []
    model.decoder.register_forward_pre_hook(lambda m, args: shapes.append(args[0].shape))
    whole = objective.validation_loss(model, corpus, torch.device("cpu"), 10_000)
    assert len(shapes) == 1
    shapes.clear()
    small = objective.validation_loss(model, corpus, torch.device("cpu"), 16)
    assert len(shapes) > 3 and all(rows * cols <= 16 for rows, cols in shapes), shapes
    assert small == pytest.approx(whole, rel=1e-6)


def test_old_checkpoint_spreads_a_target_vocabulary_over_the_joint_one(tmp_path, tiny_corpus):
    """scripts/old_checkpoint.py gives code that knows only joint vocabularies the same
    model: greedy and beam search translate as the target-side vocabulary's checkpoint."""
    cfg = tiny_config_dict(tiny_corpus, max_steps=20)
    cfg["data"]["tokenizer"]["target_vocab"] = "train"
    run = tmp_path / "run"
    train(config.from_dict(cfg), run)
    spec = importlib.util.spec_from_file_location(
        "old_checkpoint", ROOT / "scripts" / "old_checkpoint.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    payload = checkpoint.load(run / "last.pt")
    script.joint_vocabulary(payload)
    torch.save(payload, tmp_path / "joint.pt")
    ours, joint = (
        checkpoint.load_for_translation(p) for p in (run / "last.pt", tmp_path / "joint.pt")
    )
    assert joint.tgt_tok is joint.src_tok and ours.tgt_tok is not ours.src_tok
    assert joint.model.decoder.output.out_features == ours.src_tok.vocab_size
    assert (
        ours.model.decoder.output.out_features == ours.tgt_tok.vocab_size < ours.src_tok.vocab_size
    )
    lines = [s for s, _ in SENTENCES]
    for beam in (None, 3):
        found = [
            translate(m.model, m.src_tok, m.tgt_tok, lines, reverse_source=False, beam=beam)
            for m in (ours, joint)
        ]
        assert [t.texts for t in found[0]] == [t.texts for t in found[1]]
        scores = [torch.tensor([t.scores for t in side]) for side in found]
        torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=1e-5)
