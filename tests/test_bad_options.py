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
        (["charlm", "sample", "x.pt", "--seed", "99999999999999999999999"], "--seed"),
        (["charlm", "probe", "x.pt", "--pos", "p", "--neg", "n", "--seed", "-1"], "--seed"),
        (["charlm", "probe", "x.pt", "--pos", "p", "--neg", "n", "--seed", "4294967296"], "--seed"),
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


def test_translate_never_writes_over_its_inputs_and_writes_into_streams(
    tmp_path, capsys, tiny_corpus
):
    import os

    run = train_tiny(tmp_path, "run", tiny_corpus, max_steps=2)
    ckpt = str(run / "best.pt")
    src = tmp_path / "in.txt"
    src.write_text("a small test\nanother line\n")
    kept = {p: p.read_bytes() for p in (src, run / "best.pt")}
    args = ["translate", ckpt, "--input", str(src)]
    for extra, message in (
        (["--output", str(src)], "--output"),
        (["--output", ckpt], "--output"),
        (["--output", str(tmp_path / "o.txt"), "--alignments", str(src)], "--alignments"),
    ):
        assert "is one of the inputs" in one_line_error(capsys, [*args, *extra]), message
    both = ["--output", str(tmp_path / "o.txt"), "--alignments", str(tmp_path / "o.txt")]
    assert "--output and --alignments name the same file" in one_line_error(capsys, [*args, *both])
    missing = ["--output", str(tmp_path / "no" / "o.txt")]
    assert "does not exist" in one_line_error(capsys, [*args, *missing])  # before decoding
    assert {p: p.read_bytes() for p in kept} == kept
    target, link = tmp_path / "target.txt", tmp_path / "link.txt"
    target.write_text("old\n")
    link.symlink_to(target)
    assert main([*args, "--output", str(link)]) == 0
    assert link.is_symlink() and len(target.read_text().splitlines()) == 2  # through the link
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waits on the FIFO
    try:
        assert main([*args, "--output", str(fifo)]) == 0
        assert fifo.exists() and not fifo.is_file()  # written into, not replaced
        assert len(os.read(reader, 10000).decode().splitlines()) == 2
    finally:
        os.close(reader)


def test_average_refuses_another_source_side_and_a_runs_own_checkpoint(
    tmp_path, capsys, tiny_corpus
):
    run = train_tiny(tmp_path, "run", tiny_corpus, max_steps=2, keep_checkpoints=2, save_every=1)
    data = tiny_config_dict(tiny_corpus, max_steps=2)
    data["data"]["reverse_source"] = True
    rev = tmp_path / "rev"
    assert (
        main(["-q", "train", str(write_config(tmp_path / "r.yaml", data)), "--out", str(rev)]) == 0
    )
    line = one_line_error(
        capsys,
        ["average", str(run / "best.pt"), str(rev / "best.pt"), "--out", str(tmp_path / "a.pt")],
    )
    assert "one reverses the source" in line
    steps = [str(run / "step-1.pt"), str(run / "step-2.pt")]
    last = run / "last.pt"
    before = last.read_bytes()
    line = one_line_error(capsys, ["average", *steps, "--out", str(last)])
    assert "is one of its run's own checkpoints" in line and last.read_bytes() == before
    assert main(["average", *steps, "--out", str(tmp_path / "avg.pt")]) == 0


def test_a_full_standard_output_is_one_line(monkeypatch):
    import errno

    from s2s.cli.io import write_output
    from s2s.errors import DataError

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sys.stdout", Full())
    with pytest.raises(DataError, match="cannot write standard output: No space left on device"):
        write_output(None, ["a line"])


def test_resuming_names_the_settings_that_changed(tmp_path, tiny_corpus, caplog):
    import logging

    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=2, threads=1))
    out = tmp_path / "run"
    assert main(["-q", "train", str(cfg), "--out", str(out)]) == 0
    with caplog.at_level(logging.INFO):
        assert (
            main(["train", str(cfg), "train.max_steps=3", "train.threads=2", "--out", str(out)])
            == 0
        )
    assert "resuming with train.max_steps 2 -> 3, train.threads 1 -> 2" in caplog.text
