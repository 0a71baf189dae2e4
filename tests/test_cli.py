"""End-to-end: the ``s2s`` command trains, resumes, translates, scores, and answers bad
input with one line."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from conftest import ROOT, tiny_config_dict, write_corpus

from s2s.cli import main
from s2s.training.runfolder import step_checkpoints


def run_cli(*args, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2s", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("s2s: error:")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- happy path


def test_smoke_config_trains_writes_run_folder_and_translates(tmp_path, multi30k_slice):
    out = tmp_path / "run"
    result = run_cli("train", "configs/smoke.yaml", "--out", str(out))
    assert result.returncode == 0, result.stderr
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.jsonl", "tokenizer.joint.model"):
        assert (out / name).is_file(), name
    assert list(out.glob("events.out.tfevents.*")), "TensorBoard event file"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in records}
    assert kinds == {"train", "valid"}
    assert max(r["step"] for r in records) == 60
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_steps"] == 60

    lines = ["A man is riding a bike.", "", "Two dogs play in the snow.", "   "]
    tr = run_cli("translate", str(out / "best.pt"), stdin="\n".join(lines) + "\n")
    assert tr.returncode == 0, tr.stderr
    produced = tr.stdout.split("\n")
    assert produced[-1] == "" and len(produced) - 1 == len(lines)
    assert produced[1] == "" and produced[3] == ""
    assert produced[0].strip() and produced[2].strip()

    hyp = tmp_path / "hyp.txt"
    tr = run_cli(
        "translate",
        str(out / "best.pt"),
        "--input",
        str(multi30k_slice / "multi30k" / "val.en.gz"),
        "--output",
        str(hyp),
    )
    assert tr.returncode == 0, tr.stderr
    assert len(hyp.read_text().split("\n")) - 1 == 100  # the slice's val set
    sc = run_cli(
        "score", "--ref", str(multi30k_slice / "multi30k" / "val.de.gz"), "--hyp", str(hyp)
    )
    assert sc.returncode == 0, sc.stderr
    assert "BLEU = " in sc.stdout and "nrefs:1|case:mixed|eff:no|tok:13a" in sc.stdout
    assert "chrF = " in sc.stdout


def test_the_executable_skips_the_teardown_after_translate_and_score_only(tmp_path, monkeypatch):
    """``s2s translate`` and ``score`` leave by os._exit with main's status once their
    output is flushed; other commands exit as usual. Through a pipe, with stdout
    block-buffered, none of the output is lost."""
    import pytest

    import s2s.cli as cli

    exits = []
    monkeypatch.setattr(cli.os, "_exit", lambda code: exits.append(code))
    missing = str(tmp_path / "missing")
    for argv in (["score", "--ref", missing, "--hyp", missing], ["train", missing]):
        monkeypatch.setattr(sys, "argv", ["s2s", *argv])
        with pytest.raises(SystemExit) as stop:
            cli.command()
        assert stop.value.code == 2
    assert exits == [2]  # score's, not train's
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("a dog runs in the snow .\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    scored = subprocess.run(
        [sys.executable, "-m", "s2s", "score", "--ref", str(hyp), "--hyp", str(hyp)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert scored.returncode == 0 and "BLEU = 100.00" in scored.stdout, scored


def test_kill_and_rerun_resumes_from_last_checkpoint(tmp_path, tiny_corpus):
    """SIGKILL mid-run, rerun the same command: it continues from last.pt, not step 0."""
    from s2s.translation import checkpoint

    cfg = write_config(
        tmp_path / "c.yaml",
        tiny_config_dict(
            tiny_corpus, max_steps=100000, valid_every=100000, save_every=20, log_every=10
        ),
    )
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "s2s", "train", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "last.pt").is_file() and time.time() < deadline:
            time.sleep(0.1)
        assert (out / "last.pt").is_file()
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved_step = checkpoint.load(out / "last.pt")["progress"]["step"]
    assert saved_step >= 20

    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in proc.stdout:  # wait until the resumed run logs a step past the checkpoint
        lines.append(line)
        found = re.search(r"step (\d+) loss", line)
        if found and int(found.group(1)) > saved_step:
            break
    proc.send_signal(signal.SIGTERM)  # SIGTERM: save after this step, then exit
    rest, _ = proc.communicate(timeout=120)
    text = "".join(lines) + rest
    assert f"resumed from {out / 'last.pt'} at step {saved_step} " in text, text
    first_logged = int(re.findall(r"step (\d+) loss", text)[0])
    assert first_logged == (saved_step // 10 + 1) * 10, "counting continues from the checkpoint"
    assert proc.returncode == 130 and "interrupted at step" in text
    assert checkpoint.load(out / "last.pt")["progress"]["step"] > saved_step


def test_resume_continues_identically(tmp_path, tiny_corpus):
    """6 steps straight equal 3 steps plus a rerun with the limit raised to 6."""
    from s2s.translation import checkpoint

    def cfg(steps):
        return str(
            write_config(
                tmp_path / f"c{steps}.yaml",
                tiny_config_dict(tiny_corpus, max_steps=steps, save_every=3),
            )
        )

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["-q", "train", cfg(6), "--out", str(straight)]) == 0
    assert main(["-q", "train", cfg(3), "--out", str(split)]) == 0
    assert checkpoint.load(split / "last.pt")["progress"]["step"] == 3
    assert main(["-q", "train", cfg(6), "--out", str(split)]) == 0
    a = checkpoint.load(straight / "last.pt")
    b = checkpoint.load(split / "last.pt")
    assert b["progress"]["step"] == 6
    for key in a["model"]:
        assert a["model"][key].equal(b["model"][key]), key
    valid_a = [
        r
        for r in map(json.loads, (straight / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "valid" and r["step"] == 6
    ]
    valid_b = [
        r
        for r in map(json.loads, (split / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "valid" and r["step"] == 6
    ]
    assert valid_a[0]["loss"] == valid_b[0]["loss"]


# --------------------------------------------------------------------------- bad input


def test_missing_data_file(tmp_path, capsys, tiny_corpus):
    data = tiny_config_dict(tiny_corpus)
    data["data"]["train"] = str(tmp_path / "nowhere" / "train")
    line = one_line_error(
        capsys,
        ["train", str(write_config(tmp_path / "c.yaml", data)), "--out", str(tmp_path / "run")],
    )
    assert "file not found" in line and "nowhere/train.en" in line


def test_line_count_mismatch(tmp_path, capsys, tiny_corpus):
    with open(tiny_corpus["train"] + ".de", "a", encoding="utf-8") as handle:
        handle.write("noch eine zeile\n")
    line = one_line_error(
        capsys,
        [
            "train",
            str(write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus))),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert "train.en has 32 lines" in line and "train.de has 33" in line


def test_unknown_config_key(tmp_path, capsys, tiny_corpus):
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus))
    line = one_line_error(capsys, ["train", str(cfg), "model.encoder.celll=gru"])
    assert "unknown config key 'model.encoder.celll'" in line


def test_bad_choice(tmp_path, capsys, tiny_corpus):
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus))
    line = one_line_error(capsys, ["train", str(cfg), "model.attention=luong"])
    assert "valid values: none, additive, multiplicative" in line


def test_empty_training_set(tmp_path, capsys, tiny_corpus):
    empty = write_corpus(tmp_path / "empty", "train", [])
    data = tiny_config_dict(tiny_corpus)
    data["data"]["train"] = empty
    line = one_line_error(
        capsys,
        ["train", str(write_config(tmp_path / "c.yaml", data)), "--out", str(tmp_path / "run")],
    )
    assert "train.en is empty" in line


def test_not_a_checkpoint(tmp_path, capsys):
    fake = tmp_path / "model.pt"
    fake.write_text("this is not a checkpoint\n")
    line = one_line_error(capsys, ["translate", str(fake)])
    assert "is not an s2s checkpoint" in line
    line = one_line_error(capsys, ["translate", str(tmp_path / "missing.pt")])
    assert "checkpoint not found" in line
    assert "(not a file torch.save wrote, or cut short)" in one_line_error(
        capsys, ["translate", str(fake)]
    )


def test_a_cut_short_checkpoint_or_a_run_folder_is_named_as_such(tmp_path, capsys, tiny_corpus):
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=2))
    assert main(["-q", "train", str(cfg), "--out", str(run)]) == 0
    cut = tmp_path / "cut.pt"
    cut.write_bytes((run / "best.pt").read_bytes()[:5000])
    line = one_line_error(capsys, ["translate", str(cut)])
    assert f"{cut} is not an s2s checkpoint (not a file torch.save wrote, or cut short)" in line
    line = one_line_error(capsys, ["translate", str(run)])
    assert f"{run} is a folder, not a checkpoint file (e.g. best.pt in it)" in line


def test_run_folder_of_another_config_is_not_overwritten(tmp_path, capsys, tiny_corpus):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=3))
    assert main(["-q", "train", str(cfg), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    line = one_line_error(capsys, ["train", str(cfg), "model.decoder.cell=gru", "--out", str(out)])
    assert "different config" in line and "model.decoder.cell" in line
    assert "model.decoder.cell was 'lstm', now 'gru'" in line
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert before == after


def test_a_start_that_saved_no_checkpoint_does_not_block_the_fixed_command(
    tmp_path, capsys, tiny_corpus
):
    out = tmp_path / "run"
    broken = tiny_config_dict(tiny_corpus, max_steps=2)
    broken["data"]["train"] = str(tmp_path / "nothere")
    line = one_line_error(
        capsys, ["train", str(write_config(tmp_path / "b.yaml", broken)), "--out", str(out)]
    )
    assert "nothere" in line
    fixed = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=2))
    assert main(["-q", "train", str(fixed), "--out", str(out)]) == 0  # no --force needed
    assert (out / "last.pt").is_file() and not list(out.glob("replaced-*"))


def test_force_moves_the_earlier_run_aside_and_starts_clean(tmp_path, tiny_corpus):
    out = tmp_path / "run"
    first = tiny_config_dict(tiny_corpus, max_steps=3, keep_checkpoints=3, save_every=1)
    assert (
        main(["-q", "train", str(write_config(tmp_path / "a.yaml", first)), "--out", str(out)]) == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    assert {"step-2.pt", "step-3.pt", "last.pt"} <= set(before)
    second = tiny_config_dict(tiny_corpus, max_steps=1, keep_checkpoints=3, save_every=1)
    second["model"]["encoder"]["hidden_size"] = 8
    again = ["-q", "train", str(write_config(tmp_path / "b.yaml", second)), "--out", str(out)]
    assert main([*again, "--force"]) == 0
    assert [p.name for p in step_checkpoints(out)] == ["step-1.pt"]  # none of the old run's
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    (kept,) = out.glob("replaced-*")
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before  # nothing lost


def test_a_limit_lowered_below_a_trained_run_is_refused(tmp_path, capsys, tiny_corpus):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=4))
    assert main(["-q", "train", str(cfg), "--out", str(out)]) == 0
    written = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    line = one_line_error(capsys, ["train", str(cfg), "train.max_steps=2", "--out", str(out)])
    assert "last.pt is at step 4, past train.max_steps 2" in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == written
    assert main(["-q", "train", str(cfg), "--out", str(out)]) == 0  # the same limit: done
    assert main(["-q", "train", str(cfg), "train.max_steps=6", "--out", str(out)]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["progress"]["step"] == 6
    shorter = ["-q", "train", str(cfg), "train.max_steps=2", "--out", str(out), "--force"]
    assert main(shorter) == 0
    assert torch.load(out / "last.pt", weights_only=True)["progress"]["step"] == 2
    (kept,) = out.glob("replaced-*")
    assert torch.load(kept / "last.pt", weights_only=True)["progress"]["step"] == 6


def test_a_broken_config_in_the_run_folder_is_named(tmp_path, capsys, tiny_corpus):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=2))
    assert main(["-q", "train", str(cfg), "--out", str(out)]) == 0
    (out / "config.yaml").write_text((out / "config.yaml").read_text() + "\nextra: 1\n")
    line = one_line_error(capsys, ["train", str(cfg), "--out", str(out)])
    assert f"{out / 'config.yaml'} (the run in this folder)" in line and "extra" in line


def test_a_run_resumes_with_its_data_named_by_another_path(tmp_path, monkeypatch, tiny_corpus):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    absolute = tiny_config_dict(tiny_corpus, max_steps=2)
    first = write_config(tmp_path / "a.yaml", absolute)
    assert main(["-q", "train", str(first), "--out", "run"]) == 0
    relative = tiny_config_dict(tiny_corpus, max_steps=4)
    for split in ("train", "valid"):  # data/train as ./data/../data/train
        relative["data"][split] = os.path.join("data", "..", os.path.relpath(tiny_corpus[split]))
    again = write_config(tmp_path / "r.yaml", relative)
    assert main(["-q", "train", str(again), "--out", "run"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 4 and min(steps) > 0


def test_foreign_non_empty_folder_is_refused(tmp_path, capsys, tiny_corpus):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=3))
    line = one_line_error(capsys, ["train", str(cfg), "--out", str(out)])
    assert "not empty" in line
    assert (out / "notes.txt").read_text() == "precious"


def test_unreadable_output_folder(tmp_path, capsys, tiny_corpus):
    if os.geteuid() == 0:
        target = Path("/proc/s2s-run")  # not creatable even for root
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=3))
    line = one_line_error(capsys, ["train", str(cfg), "--out", str(target)])
    assert "cannot write to output folder" in line


def test_score_line_count_mismatch(tmp_path, capsys):
    ref = tmp_path / "ref.txt"
    hyp = tmp_path / "hyp.txt"
    ref.write_text("a\nb\n")
    hyp.write_text("a\n")
    line = one_line_error(capsys, ["score", "--ref", str(ref), "--hyp", str(hyp)])
    assert "1 lines but references have 2" in line


def test_published_scoring_option(tmp_path, capsys):
    ref = tmp_path / "ref.txt"
    hyp = tmp_path / "hyp.txt"
    ref.write_text("Ein Mann fährt Rad .\n")
    hyp.write_text("ein mann fährt rad .\n")
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--published"]) == 0
    out = capsys.readouterr().out
    assert "BLEU = 100.00" in out and "case:lc" in out and "tok:none" in out
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp)]) == 0
    assert "BLEU = 100.00" not in capsys.readouterr().out


def test_score_takes_several_references_and_sacrebleus_options(tmp_path, capsys, caplog):
    import sacrebleu

    from s2s.cli.translation import TOKENIZERS

    assert set(TOKENIZERS) <= set(sacrebleu.BLEU.TOKENIZERS)
    files = {}
    for name, text in (
        ("ref1", "Ein Mann fährt Rad .\nZwei Hunde spielen .\n"),
        ("ref2", "Ein Mann fährt Fahrrad .\nZwei Hunde toben .\n"),
        ("hyp", "Ein Mann fährt Fahrrad .\nZwei Hunde spielen .\n"),
        ("zh_ref", "我们今天去公园散步了。\n"),
        ("zh_hyp", "我们今天去公园散步了。\n"),
    ):
        files[name] = tmp_path / name
        files[name].write_text(text, encoding="utf-8")
    ref1, ref2, hyp = (str(files[n]) for n in ("ref1", "ref2", "hyp"))

    def bleu(*argv) -> float:
        assert main(["score", *argv]) == 0
        out = capsys.readouterr().out
        return float(out.split("BLEU = ")[1].split()[0]), out

    one, _ = bleu("--ref", ref1, "--hyp", hyp)
    both, out = bleu("--ref", ref1, ref2, "--hyp", hyp)  # each sentence matches one of them
    assert both == 100.0 > one and "nrefs:2" in out
    assert bleu("--ref", ref1, "--ref", ref2, "--hyp", hyp)[0] == both  # repeated: all kept
    assert (
        "tok:zh"
        in bleu("--ref", str(files["zh_ref"]), "--hyp", str(files["zh_hyp"]), "--tokenize", "zh")[1]
    )
    assert "case:lc" in bleu("--ref", ref1, "--hyp", hyp, "--lowercase")[1]
    assert "nw:2" in bleu("--ref", ref1, "--hyp", hyp, "--chrf-plus")[1]
    # text tokenized on purpose is not taken for a forgotten detokenization (sacrebleu
    # warns from 100 lines that end in " .")
    tokenized = tmp_path / "tok"
    tokenized.write_text("ein mann fährt rad .\n" * 100, encoding="utf-8")
    with caplog.at_level("WARNING"):
        bleu("--ref", str(tokenized), "--hyp", str(tokenized), "--published")
    assert "detokenize" not in caplog.text + capsys.readouterr().err
    with caplog.at_level("WARNING"):  # where it is right, it stays
        bleu("--ref", str(tokenized), "--hyp", str(tokenized))
    assert "detokenize" in caplog.text + capsys.readouterr().err
    assert main(["score", "--ref", ref1, "--hyp", hyp, "--published", "--lowercase"]) == 2


def test_utf8_text_read_as_latin1_is_warned(tmp_path, caplog):
    """latin-1 reads any bytes: UTF-8 text read that way garbles its accents silently."""
    from s2s.data.files import read_lines

    path = tmp_path / "ref.de"
    path.write_text("Ein Mädchen läuft .\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        assert read_lines(path, "latin-1") == ["Ein MÃ¤dchen lÃ¤uft ."]
    assert "is valid UTF-8 holding non-ASCII text" in caplog.text
    caplog.clear()
    path.write_text("Ein Mädchen läuft .\n", encoding="latin-1")
    with caplog.at_level("WARNING"):
        assert read_lines(path, "latin-1") == ["Ein Mädchen läuft ."]
    assert "UTF-8" not in caplog.text


# --------------------------------------------------------------------------- papercuts


def test_overrides_may_follow_options(tmp_path, tiny_corpus):
    from s2s.translation import checkpoint

    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=6))
    out = tmp_path / "run"
    args = ["-q", "train", str(cfg), "train.max_steps=3", "--out", str(out), "train.seed=4"]
    assert main(args) == 0
    written = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert (written["max_steps"], written["seed"]) == (3, 4)
    assert checkpoint.load(out / "last.pt")["progress"]["step"] == 3


def test_unknown_arguments_are_still_refused(tmp_path, tiny_corpus, capsys):
    import pytest

    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus))
    with pytest.raises(SystemExit) as stop:
        main(["train", str(cfg), "--out", str(tmp_path / "run"), "--bogus"])
    assert stop.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_translate_defaults_to_any_device_and_says_when_it_cuts_a_line(
    tmp_path, tiny_corpus, capsys, caplog
):
    import logging

    from s2s.cli import build_parser

    assert build_parser().parse_args(["translate", "x.pt"]).device == "auto"
    defaults = build_parser().parse_args(["translate", "x.pt"])
    assert (defaults.precision, defaults.batch_size, defaults.batch_unit) == (
        "auto",
        256,
        "sentences",
    )
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=2))
    assert main(["-q", "train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    (tmp_path / "in.txt").write_text("a dog runs . " * 20 + "\na dog runs .\n")
    command = ["translate", str(tmp_path / "run" / "last.pt"), "--input", str(tmp_path / "in.txt")]
    with caplog.at_level(logging.WARNING):
        assert main([*command, "--max-source-length", "10"]) == 0
    assert "1 source line(s) longer than 10 tokens cut to that length" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main([*command, "--max-source-length", "0"]) == 0
    assert "cut" not in caplog.text
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_a_run_folder_in_use_is_refused_and_a_stale_lock_taken_over(
    tmp_path, tiny_corpus, capsys, caplog
):
    import logging
    import socket

    from s2s.translation import checkpoint

    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=2))
    out = tmp_path / "run"
    assert main(["-q", "train", str(cfg), "--out", str(out)]) == 0
    assert not (out / ".lock").exists()  # released at the end
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # another live process of this host trains in the folder
        (out / ".lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        line = one_line_error(capsys, ["train", str(cfg), "--out", str(out), "train.max_steps=4"])
        assert f"run folder {out} is in use by process {holder.pid}" in line
        after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        assert {k: v for k, v in after.items() if k != ".lock"} == before  # nothing written
    finally:
        holder.kill()
        holder.wait()
    with caplog.at_level(logging.WARNING):  # its owner is gone now
        assert main(["train", str(cfg), "--out", str(out), "train.max_steps=4"]) == 0
    assert f"from process {holder.pid}, which is gone" in caplog.text
    assert checkpoint.load(out / "last.pt")["progress"]["step"] == 4
    assert not (out / ".lock").exists()


def test_a_live_run_before_its_first_checkpoint_keeps_its_files(tmp_path, tiny_corpus, capsys):
    import socket

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("written by the live run\n")
    (out / "metrics.jsonl").write_text("{}\n")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        for extra in ([], ["--force"]):
            cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus, max_steps=2))
            line = one_line_error(capsys, ["train", str(cfg), "--out", str(out), *extra])
            assert "is in use by process" in line
            assert (out / "config.yaml").read_text() == "written by the live run\n"
            assert (out / "metrics.jsonl").is_file() and not list(out.glob("replaced-*"))
    finally:
        holder.kill()
        holder.wait()


def test_a_target_vocabulary_of_the_target_side_trains_and_translates(tmp_path):
    """``data.tokenizer.target_vocab=train``: the decoder covers the German side's pieces
    only; the checkpoint translates, and the run folder lists those pieces."""
    out = tmp_path / "run"
    overrides = ["data.tokenizer.target_vocab=train", "train.max_steps=4", "train.valid_every=4"]
    result = run_cli("train", "configs/smoke.yaml", "--out", str(out), *overrides)
    assert result.returncode == 0, result.stderr
    pieces = (out / "tokenizer.tgt.pieces").read_text().split("\n")[:-1]
    weights = torch.load(out / "best.pt", weights_only=True)["model"]
    assert weights["decoder.output.weight"].shape[0] == len(pieces) < 500
    assert weights["encoder.embedding.weight"].shape[0] == 500
    tr = run_cli("translate", str(out / "best.pt"), stdin="A man is riding a bike.\n")
    assert tr.returncode == 0, tr.stderr
    assert len(tr.stdout.split("\n")) == 2
