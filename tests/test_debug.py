"""``s2s debug``: overfit, gradcheck, lr-find, source."""

import random

import pytest
from conftest import SENTENCES, tiny_config_dict, write_corpus
from test_cli import write_config

from s2s import config
from s2s.cli import main
from s2s.config import ATTENTIONS, CELLS
from s2s.experiments.debug import gradcheck


def test_overfit_smoke_config(capsys, multi30k_slice):
    code = main(["-q", "debug", "overfit", "configs/smoke.yaml"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "reached 0.05" in out


def test_overfit_reports_failure_when_the_model_cannot_learn(tmp_path, capsys, tiny_corpus):
    cfg = tiny_config_dict(tiny_corpus, lr=1e-9, min_lr=0.0)
    path = write_config(tmp_path / "c.yaml", cfg)
    code = main(["-q", "debug", "overfit", str(path), "--sentences", "8", "--steps", "5"])
    assert code == 1 and "did NOT reach" in capsys.readouterr().out


def test_overfit_reads_the_corpus_as_training_does(tmp_path, capsys, tiny_corpus):
    """It drops or truncates over-long pairs as data.long_pairs says, over the whole
    corpus (it looked at the first 4 x --sentences pairs only, and always dropped)."""
    cfg = tiny_config_dict(tiny_corpus)
    lines = [("a b c d e f g h", "x y z w v u t s")] * 40 + [("a b", "x y")] * 8
    train = write_corpus(tmp_path / "long", "train", lines)
    cfg["data"].update(train=train, max_len=3)
    path = write_config(tmp_path / "c.yaml", cfg)
    argv = ["-q", "debug", "overfit", str(path), "--sentences", "8", "--steps", "2"]
    assert main(argv) in (0, 1), capsys.readouterr().err  # 8 short pairs, after 40 long ones
    cfg["data"].update(max_len=2, long_pairs="truncate")
    path = write_config(tmp_path / "c.yaml", cfg)
    assert main([*argv[:-4], "--sentences", "48", "--steps", "2"]) in (0, 1)
    cfg["data"]["long_pairs"] = "drop"
    path = write_config(tmp_path / "c.yaml", cfg)
    assert main([*argv[:-4], "--sentences", "48", "--steps", "2"]) == 2
    assert "need 48 usable training pairs, found 8" in capsys.readouterr().err


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_gradcheck_every_cell_and_attention(cell, attention):
    cfg = config.from_dict(
        {
            "data": {"train": "x"},
            "model": {
                "attention": attention,
                "encoder": {"cell": cell},
                "decoder": {"cell": cell},
            },
        }
    )
    diffs = gradcheck(cfg)
    assert max(diffs.values()) < 1e-5, {k: v for k, v in diffs.items() if v >= 1e-5}


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    # A deliberately broken backward (a custom op with a scaled gradient) must fail.
    import torch

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return 1.5 * grad

    import s2s.nn.decoder as decoder_mod

    real = decoder_mod.Decoder.attend

    def broken(self, top, enc):
        out, w = real(self, top, enc)
        return Wrong.apply(out), w

    monkeypatch.setattr(decoder_mod.Decoder, "attend", broken)
    cfg = config.from_dict({"data": {"train": "x"}})
    assert max(gradcheck(cfg).values()) > 1e-3


def test_gradcheck_checks_the_chunked_loss_and_label_smoothing(monkeypatch):
    """Training-sized batches take the output layer's hand-written backward (and the
    default config smooths its labels): a toy batch through the plain way alone, with
    no smoothing, passed with that backward broken."""
    from s2s.nn import fused

    real = fused._loss_and_grad

    def too_small(logits, target, label_smoothing, in_place=False):
        loss, grad = real(logits, target, label_smoothing, in_place)
        return loss, 0.1 * grad

    cfg = config.from_dict({"data": {"train": "x"}, "train": {"label_smoothing": 0.1}})
    assert max(gradcheck(cfg).values()) < 1e-5
    monkeypatch.setattr(fused, "_loss_and_grad", too_small)
    assert max(gradcheck(cfg).values()) > 1e-3
    monkeypatch.setattr(fused, "_loss_and_grad", real)

    def smoothing_ignored(logits, target, label_smoothing, in_place=False):
        return real(logits, target, 0.0, in_place)

    monkeypatch.setattr(fused, "_loss_and_grad", smoothing_ignored)
    assert max(gradcheck(cfg).values()) > 1e-3


def test_gradcheck_command(capsys):
    from conftest import ROOT

    code = main(["debug", "gradcheck", str(ROOT / "configs" / "smoke.yaml")])
    out = capsys.readouterr().out
    assert code == 0 and "gradcheck passed" in out
    assert "decoder.output.bias" in out


def test_lr_find_writes_a_plot_and_suggests_a_rate(tmp_path, capsys, tiny_corpus):
    path = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus))
    out = tmp_path / "lr.png"
    code = main(["-q", "debug", "lr-find", str(path), "--steps", "30", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rate = float(text.split("suggested learning rate ")[1].split()[0])
    assert 1e-6 <= rate <= 1.0


def test_lr_find_sweeps_geometrically_and_suggests_the_steepest_descent(tiny_corpus):
    import math

    from s2s.experiments.debug import lr_find

    cfg = tiny_config_dict(tiny_corpus, optimizer="sgd", clip_grad_norm=0.0)
    result = lr_find(config.from_dict(cfg), start=1e-3, end=1e4, steps=40)
    factor = (1e4 / 1e-3) ** (1 / 39)
    assert result.lrs == pytest.approx([1e-3 * factor**i for i in range(len(result.lrs))])
    # the loss explodes at the top of the range: the test stops once it passes 4x its
    # minimum, so the run is cut short
    assert len(result.lrs) < 40
    assert result.losses[-1] > 4 * min(result.losses[:-1])
    slopes = [
        (result.losses[i + 1] - result.losses[i - 1])
        / (math.log(result.lrs[i + 1]) - math.log(result.lrs[i - 1]))
        for i in range(1, len(result.lrs) - 1)
    ]
    steepest = min(range(len(slopes)), key=slopes.__getitem__)
    assert slopes[steepest] < 0
    assert result.suggestion == result.lrs[steepest + 1]
    # the suggestion lies where the loss falls, well below where it blew up
    assert result.suggestion < result.lrs[-1] / 10


def test_source_check_tells_a_model_that_reads_its_source_from_one_that_does_not(tmp_path, capsys):
    """Trained on aligned pairs, the model's loss rises when the sources are shuffled
    (the check passes); trained on pairs whose targets were drawn at random, its loss
    does not depend on the source (the check fails, exit status 1)."""
    rng = random.Random(0)
    targets = [t for _, t in SENTENCES]
    pairs = {
        "aligned": SENTENCES * 4,
        "misaligned": [(s, rng.choice(targets)) for s, _ in SENTENCES * 4],
    }
    lines = {}
    for name, train in pairs.items():
        data = tmp_path / name / "data"
        corpus = {
            "train": write_corpus(data, "train", train),
            "valid": write_corpus(data, "valid", SENTENCES),
        }
        cfg = tiny_config_dict(corpus, max_steps=60, valid_every=60, save_every=60, lr=0.01)
        path = write_config(tmp_path / f"{name}.yaml", cfg)
        run = tmp_path / name / "run"
        assert main(["-q", "train", str(path), "--out", str(run)]) == 0
        capsys.readouterr()
        code = main(["-q", "debug", "source", str(run / "last.pt")])
        lines[name] = (code, capsys.readouterr().out)
    code, out = lines["aligned"]
    assert code == 0 and "on 8 valid pairs" in out and "FAILED" not in out, out
    code, out = lines["misaligned"]
    assert code == 1 and "source check FAILED" in out, out


def test_lr_find_with_too_few_usable_steps_suggests_nothing(tiny_corpus):
    from s2s.errors import S2SError
    from s2s.experiments.debug import lr_find

    with pytest.raises(S2SError, match="2 usable steps.*too few to suggest"):
        lr_find(config.from_dict(tiny_config_dict(tiny_corpus)), steps=2)
