"""Command options out of range and output paths that cannot be written: each is refused
by name before any work, never with a traceback, and overwrites nothing."""

import pytest
from conftest import tiny_config_dict
from test_charlm import lm_config
from test_cli import one_line_error, write_config
from test_decoding import train_tiny

from s2s.charlm import train_lm
from s2s.cli import main


def refused_by_argparse(capsys, argv) -> str:
    """argparse's own refusal: exit status 2 and a message naming the option."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "option, value",
    [
        ("--threads", "-1"),
        ("--batch-size", "0"),
        ("--min-length", "-5"),
        ("--length-penalty", "-3"),
        ("--max-length-ratio", "-1"),
        ("--batch-size", "many"),
        ("--encoding", "bogus"),
    ],
)
def test_translate_options_out_of_range_are_refused_by_name(capsys, option, value):
    err = refused_by_argparse(capsys, ["translate", "any.pt", option, value])
    assert f"argument {option}:" in err


@pytest.mark.parametrize(
    "argv, option",
    [
        (["debug", "overfit", "c.yaml", "--steps", "0"], "--steps"),
        (["debug", "overfit", "c.yaml", "--sentences", "0"], "--sentences"),
        (["debug", "lr-find", "c.yaml", "--steps", "1"], "--steps"),
        (["debug", "source", "x.pt", "--limit", "-1"], "--limit"),
        (["debug", "source", "x.pt", "--margin", "nan"], "--margin"),
        (["debug", "source", "x.pt", "--margin", "-5"], "--margin"),
        (["debug", "source", "x.pt", "--margin", "1.5"], "--margin"),
        (["charlm", "probe", "x.pt", "--pos", "p", "--neg", "n", "--encoding", "no"], "--encoding"),
        (["shortlist", "x.pt", "--out", "sl", "--encoding", "utf-9"], "--encoding"),
        (["charlm", "sample", "x.pt", "--temperature", "-1"], "--temperature"),
        (["shortlist", "x.pt", "--out", "sl", "--top", "0"], "--top"),
        (["shortlist", "x.pt", "--out", "sl", "--frequent", "-1"], "--frequent"),
        (
            ["charlm", "visualize", "x.pt", "--text", "t", "--out", "v.png", "--width", "0"],
            "--width",
        ),
        (
            ["charlm", "visualize", "x.pt", "--text", "t", "--out", "v.png", "--width", "5000"],
            "--width",
        ),
        (
            ["charlm", "visualize", "x.pt", "--text", "t", "--out", "v.png", "--chars", "0"],
            "--chars",
        ),
    ],
)
def test_other_commands_refuse_counts_out_of_range(capsys, argv, option):
    assert f"argument {option}:" in refused_by_argparse(capsys, argv)


def test_score_of_two_empty_files_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").write_text("")
    line = one_line_error(
        capsys, ["score", "--ref", str(tmp_path / "empty"), "--hyp", str(tmp_path / "empty")]
    )
    assert "no lines to score" in line


def test_average_refuses_a_char_lm_and_outputs_it_cannot_write(tmp_path, capsys, tiny_corpus):
    run = train_tiny(tmp_path, "run", tiny_corpus, max_steps=2)
    train_lm(lm_config(_periodic(tmp_path), max_steps=2), tmp_path / "lm")
    lm = str(tmp_path / "lm" / "best.pt")
    line = one_line_error(
        capsys, ["average", lm, str(tmp_path / "lm" / "last.pt"), "--out", "a.pt"]
    )
    assert "is a charlm checkpoint, not a translation model" in line
    inputs = [str(run / "best.pt"), str(run / "last.pt")]
    line = one_line_error(capsys, ["average", *inputs, "--out", str(tmp_path)])
    assert f"--out {tmp_path} is a folder" in line
    line = one_line_error(capsys, ["average", *inputs, "--out", str(tmp_path / "no" / "a.pt")])
    assert "does not exist" in line


def test_output_paths_are_checked_before_the_work(tmp_path, capsys, tiny_corpus):
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus))
    # lr-find: refused at once, not after its sweep
    line = one_line_error(capsys, ["debug", "lr-find", str(cfg), "--out", str(tmp_path / "lr.txt")])
    assert "must end in .png or .pdf or .svg" in line
    line = one_line_error(
        capsys, ["debug", "lr-find", str(cfg), "--out", str(tmp_path / "no" / "lr.png")]
    )
    assert "does not exist" in line
    text = tmp_path / "text.txt"
    text.write_text("abcd" * 10)
    args = ["charlm", "visualize", "missing.pt", "--text", str(text), "--units", "1", "--out"]
    line = one_line_error(capsys, [*args, str(tmp_path / "no" / "v.html")])
    assert "does not exist" in line  # named before the checkpoint is even read


def test_compare_refuses_a_reuse_folder_that_is_not_there(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("base: base.yaml\nvariants: {a: {}}\n")
    line = one_line_error(capsys, ["compare", str(sweep), "--reuse", str(tmp_path / "gone")])
    assert "--reuse" in line and "no such sweep folder" in line


def _periodic(tmp_path):
    path = tmp_path / "periodic.txt"
    path.write_text("abcd" * 400, encoding="utf-8")
    return path


def test_a_missing_gpu_is_named_by_the_option_that_asked_for_it(monkeypatch):
    import torch

    from s2s.errors import ConfigError
    from s2s.training.runfolder import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device is 'cuda' but no CUDA device"):
        resolve_device("cuda", "--device")
    with pytest.raises(ConfigError, match="train.device is 'cuda'"):
        resolve_device("cuda")
