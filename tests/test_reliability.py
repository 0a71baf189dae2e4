"""Faults and bad input: nothing lost, nothing silent (docs/reliability.md)."""

import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import ROOT, SENTENCES, tiny_config_dict, write_corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import one_line_error, write_config

from s2s import config
from s2s.cli import main
from s2s.errors import CheckpointError, ConfigError
from s2s.training import checkpoint as files
from s2s.translation import Trainer, checkpoint

COMPARED = ("kind", "step", "epoch", "loss", "lr", "teacher_prob", "bleu", "ppl")


def records(folder):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: r[k] for k in COMPARED if k in r} for r in map(json.loads, lines)]


# --------------------------------------------------------------------------- exact resume


def test_sigkill_and_rerun_is_bitwise_identical_to_a_straight_run(tmp_path, tiny_corpus):
    """Dropout masks, scheduled-sampling coins (sampled tokens), data order and Adam
    state all come back: the weights after resuming equal those of a straight run."""
    data = tiny_config_dict(
        tiny_corpus, max_steps=300, save_every=20, valid_every=100, log_every=10
    )
    data["model"].update({"dropout": 0.3, "embedding_dropout": 0.2})
    data["train"]["scheduled_sampling"] = {"decay": "linear", "k": 1.0, "c": 0.002, "sample": True}
    cfg = write_config(tmp_path / "c.yaml", data)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    cmd = [sys.executable, "-m", "s2s", "-q", "train", str(cfg), "--out", str(killed)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (killed / "last.pt").is_file() and time.time() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    at = checkpoint.load(killed / "last.pt")["progress"]["step"]
    assert 0 < at < 300, "the kill came mid-run"
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    assert main(["-q", "train", str(cfg), "--out", str(straight)]) == 0
    a, b = checkpoint.load(killed / "last.pt"), checkpoint.load(straight / "last.pt")
    assert a["progress"]["step"] == b["progress"]["step"] == 300
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert records(killed) == records(straight)


def test_sigint_saves_a_checkpoint_before_exiting(tmp_path, tiny_corpus):
    cfg = write_config(
        tmp_path / "c.yaml",
        tiny_config_dict(tiny_corpus, max_steps=10**6, save_every=10**6, log_every=5),
    )
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "s2s", "train", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = 0
    for line in proc.stdout:
        found = re.search(r"step (\d+) loss", line)
        if found:
            seen = int(found.group(1))
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted at step" in rest
    assert checkpoint.load(out / "last.pt")["progress"]["step"] >= seen > 0


# --------------------------------------------------------------------------- atomic saves

SAVER = """
import sys, torch
from pathlib import Path
from s2s.training import checkpoint as files
path = Path(sys.argv[1])
i = 0
while True:
    files.save(path, {"i": i, "big": torch.full((3_000_000,), float(i))})
    i += 1
"""


def test_sigkill_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    rng = random.Random(0)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], cwd=ROOT)
        try:
            deadline = time.time() + 60
            while not path.is_file() and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        payload = files.load(path)  # never a torn file
        assert torch.all(payload["big"] == payload["i"])


def test_an_error_during_a_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    files.save(path, {"i": 1})

    def broken(handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        files.atomic_write(path, broken)
    assert files.load(path)["i"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left


# --------------------------------------------------------------------------- safe loading


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loading_runs_no_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "s2s-checkpoint", "version": 1, "x": Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="is not an s2s checkpoint"):
        files.load(path)
    assert not marker.exists()


def test_yaml_is_loaded_safely(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "c.yaml"
    path.write_text(f'train: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import write_corpus as wc

    base = tmp_path_factory.mktemp("trained")
    corpus = {
        "train": wc(base / "data", "train", SENTENCES * 4),
        "valid": wc(base / "data", "valid", SENTENCES[:4]),
    }
    cfg = config.from_dict(tiny_config_dict(corpus, max_steps=20))
    Trainer(cfg, base / "run").run()
    return base / "run" / "last.pt"


def test_incompatible_version_and_different_model_are_clear_errors(tmp_path, trained, capsys):
    payload = checkpoint.load(trained)
    payload["version"] = 999
    torch.save(payload, tmp_path / "future.pt")
    line = one_line_error(capsys, ["translate", str(tmp_path / "future.pt")])
    assert "checkpoint version 999" in line
    payload = checkpoint.load(trained)
    payload["config"]["model"]["decoder"]["hidden_size"] = 64
    checkpoint.save(
        tmp_path / "other.pt", {k: v for k, v in payload.items() if k not in ("format", "version")}
    )
    line = one_line_error(capsys, ["translate", str(tmp_path / "other.pt")])
    assert "checkpoint weights do not fit its model" in line


# --------------------------------------------------------------------------- bad input


def test_non_utf8_training_data_names_file_and_line(tmp_path, capsys, tiny_corpus):
    pairs = SENTENCES * 2
    prefix = write_corpus(tmp_path / "latin", "train", pairs)
    raw = (
        (tmp_path / "latin" / "train.de")
        .read_bytes()
        .replace("mädchen".encode(), "m\xe4dchen".encode("latin-1"))
    )
    (tmp_path / "latin" / "train.de").write_bytes(raw)
    data = tiny_config_dict(tiny_corpus, max_steps=2)
    data["data"]["train"] = prefix
    cfg = write_config(tmp_path / "c.yaml", data)
    line = one_line_error(capsys, ["train", str(cfg), "--out", str(tmp_path / "run")])
    assert "train.de line 3: bytes that are not valid utf-8" in line
    # the same file reads with the right encoding (source is ASCII, so latin-1 works)
    assert (
        main(["-q", "train", str(cfg), "data.encoding=latin-1", "--out", str(tmp_path / "run2")])
        == 0
    )


def test_translate_encoding_option(tmp_path, trained, capsys):
    src = tmp_path / "in.txt"
    src.write_bytes("ein m\xe4dchen .\n".encode("latin-1"))
    line = one_line_error(capsys, ["translate", str(trained), "--input", str(src)])
    assert "in.txt line 1: bytes that are not valid utf-8" in line
    assert main(["translate", str(trained), "--input", str(src), "--encoding", "latin-1"]) == 0
    assert len(capsys.readouterr().out.split("\n")) == 2


def test_empty_lines_in_training_data_are_dropped_and_counted(tmp_path, tiny_corpus, caplog):
    pairs = SENTENCES * 2 + [("", "leer"), ("nur quelle", "")]
    data = tiny_config_dict(tiny_corpus, max_steps=2)
    data["data"]["train"] = write_corpus(tmp_path / "d", "train", pairs)
    with caplog.at_level(logging.INFO):
        trainer = Trainer(config.from_dict(data), tmp_path / "run")
    assert len(trainer.task.train_corpus) == len(SENTENCES) * 2
    assert "dropped 2 empty pairs" in caplog.text
    assert trainer.run()["step"] == 2


@pytest.mark.parametrize("policy", ["drop", "truncate"])
def test_over_long_pairs_are_dropped_or_truncated_and_counted(
    tmp_path, tiny_corpus, caplog, policy
):
    long_pair = (" ".join(["a"] * 30), " ".join(["b"] * 30))
    data = tiny_config_dict(tiny_corpus, max_steps=1)
    data["data"].update(
        {
            "train": write_corpus(tmp_path / "d", "train", SENTENCES + [long_pair]),
            "max_len": 10,
            "long_pairs": policy,
        }
    )
    with caplog.at_level(logging.INFO):
        trainer = Trainer(config.from_dict(data), tmp_path / "run")
    assert f"{'truncated' if policy == 'truncate' else 'dropped'} 1 over-long" in caplog.text
    corpus = trainer.task.train_corpus
    assert len(corpus) == len(SENTENCES) + (policy == "truncate")
    assert max(len(s) - 1 for s in corpus.src) <= 10 and max(len(t) for t in corpus.tgt) <= 10


def test_pairs_longer_than_a_token_batch_are_named(tmp_path, tiny_corpus, caplog):
    from s2s.data.corpus import epoch_batches

    data = tiny_config_dict(tiny_corpus, max_steps=1)
    data["data"].update({"batch_unit": "tokens", "batch_size": 6, "shape_multiple": 1})
    with caplog.at_level(logging.INFO):
        trainer = Trainer(config.from_dict(data), tmp_path / "run")
    corpus = trainer.task.train_corpus
    over = [i for i, c in enumerate(corpus.costs()) if c > 6]
    assert over and f"{len(over)} training pair(s) longer than data.batch_size (6" in caplog.text
    alone = [b for b in epoch_batches(corpus, trainer.task.cfg.data, 1, 0) if set(b) & set(over)]
    assert all(len(b) == 1 for b in alone)  # as the warning says: each a batch of its own
    caplog.clear()
    data["data"]["batch_size"] = 1000
    with caplog.at_level(logging.INFO):
        Trainer(config.from_dict(data), tmp_path / "run2")
    assert "longer than data.batch_size" not in caplog.text


def test_a_blank_validation_set_or_a_vocabulary_of_specials_is_an_error(
    tmp_path, capsys, tiny_corpus
):
    data = tiny_config_dict(tiny_corpus)
    data["data"]["valid"] = write_corpus(tmp_path / "e", "valid", [("  ", "\t"), (" ", "  ")])
    cfg = write_config(tmp_path / "c.yaml", data)
    line = one_line_error(capsys, ["train", str(cfg), "--out", str(tmp_path / "run")])
    assert "validation set has only empty or blank lines" in line
    data = tiny_config_dict(tiny_corpus)
    data["data"]["tokenizer"]["min_freq"] = 1000  # no word is that common
    cfg = write_config(tmp_path / "v.yaml", data)
    line = one_line_error(capsys, ["train", str(cfg), "--out", str(tmp_path / "run2")])
    assert "source vocabulary holds only the 4 special symbols" in line


def test_an_empty_validation_file_is_an_error(tmp_path, capsys, tiny_corpus):
    data = tiny_config_dict(tiny_corpus)
    data["data"]["valid"] = write_corpus(tmp_path / "e", "valid", [])
    cfg = write_config(tmp_path / "c.yaml", data)
    line = one_line_error(capsys, ["train", str(cfg), "--out", str(tmp_path / "run")])
    assert "valid.en is empty" in line


def test_disk_full_is_refused_before_training(tmp_path, capsys, tiny_corpus, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1000))
    cfg = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_corpus))
    line = one_line_error(capsys, ["train", str(cfg), "--out", str(tmp_path / "run")])
    assert "not enough disk space" in line
    assert not (tmp_path / "run" / "last.pt").exists()


# --------------------------------------------------------------------------- translate


ODD = [
    "",
    "   ",
    "\x00\x01\x02 control \x1b[31m",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ☃ 日本語 עברית",
    " ".join(["long"] * 2000),
    "\u200b\u2028\u2029",
    "\t\t",
]


def test_translate_survives_odd_lines(trained, capsys, monkeypatch, caplog):
    import io

    from s2s.decoding import translate as translate_module

    data = ("\n".join(ODD) + "\n").encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    widths = []
    real = translate_module._search
    monkeypatch.setattr(
        translate_module,
        "_search",
        lambda m, src, *a, **k: widths.append(src.shape[1]) or real(m, src, *a, **k),
    )
    assert main(["-q", "translate", str(trained)]) == 0
    assert max(widths) <= 251  # the 2,000-token line cut to 250 tokens and its EOS
    assert "1 source line(s) longer than 250 tokens cut" in caplog.text
    out = capsys.readouterr().out
    assert out.count("\n") == len(ODD)
    lines = out.split("\n")
    assert lines[0] == "" and lines[1] == ""


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.text(max_size=60), min_size=1, max_size=8))
def test_translate_fuzz_random_unicode(trained_model, lines):
    from s2s.decoding.translate import translate_lines

    model, src_tok, tgt_tok = trained_model
    clean = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    out = translate_lines(model, src_tok, tgt_tok, clean, reverse_source=False, beam=None)
    assert len(out) == len(clean)
    assert all("\n" not in o for o in out)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=300))
def test_translate_fuzz_random_bytes(trained, raw, capsys, monkeypatch):
    import io

    for encoding in ("utf-8", "latin-1"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="latin-1"))
        code = main(["-q", "translate", str(trained), "--encoding", encoding])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        if code == 0:
            expected = raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
            assert captured.out.count("\n") == expected
        else:
            assert code == 2 and captured.err.startswith("s2s: error:")
            # latin-1 reads any bytes, but not what looks like UTF-16 or UTF-32 text
            named = ("looks like utf-", "alone (old Mac style)")  # wide text, \r line ends
            assert encoding == "utf-8" or any(text in captured.err for text in named)


@pytest.fixture(scope="module")
def trained_model(trained):
    loaded = checkpoint.load_for_translation(trained)
    return loaded.model, loaded.src_tok, loaded.tgt_tok


def test_config_yaml_round_trips(tmp_path, trained):
    cfg = yaml.safe_load((trained.parent / "config.yaml").read_text())
    assert config.from_dict(cfg) == checkpoint.config_of(checkpoint.load(trained))


def test_resuming_on_changed_training_data_is_said(tmp_path, caplog, tiny_corpus):
    from test_charlm import lm_config

    from s2s.charlm import train_lm
    from s2s.translation import train

    out = tmp_path / "run"
    train(config.from_dict(tiny_config_dict(tiny_corpus, max_steps=2)), out)
    with caplog.at_level(logging.WARNING):
        train(config.from_dict(tiny_config_dict(tiny_corpus, max_steps=3)), out)
    assert "training data differ" not in caplog.text  # the same data: resumed quietly
    write_corpus(tiny_corpus["dir"], "train", SENTENCES * 3)  # edited in place
    with caplog.at_level(logging.WARNING):
        train(config.from_dict(tiny_config_dict(tiny_corpus, max_steps=4)), out)
    assert f"{out}: the training data differ from those its checkpoint" in caplog.text
    text = tmp_path / "text.txt"
    text.write_text("abcd" * 400)
    train_lm(lm_config(text, max_steps=2), tmp_path / "lm")
    text.write_text("abdc" * 400)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train_lm(lm_config(text, max_steps=3), tmp_path / "lm")
    assert "the training data differ" in caplog.text


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads Linux's /proc")
def test_a_killed_process_not_yet_collected_holds_no_lock():
    from s2s.training import runlock

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert runlock._alive(child.pid)
        child.kill()  # not waited for: a zombie until its parent collects it
        deadline = time.time() + 10
        while not runlock._zombie(child.pid) and time.time() < deadline:
            time.sleep(0.05)
        assert runlock._zombie(child.pid) and not runlock._alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not runlock._alive(os.getpid() + 10**7)  # no such process


def test_config_metrics_and_translations_are_written_atomically(tmp_path, tiny_corpus, monkeypatch):
    """config.yaml (new and rewritten on resume), a trimmed metrics.jsonl and
    translate --output go through atomic_write, as checkpoints do: a kill mid-write
    leaves the old file, never half of one."""
    from test_cli import write_config

    from s2s.training import checkpoint as checkpoint_module
    from s2s.training import runfolder

    written = []
    real = checkpoint_module.atomic_write

    def spy(path, write):
        written.append(os.path.basename(path))
        return real(path, write)

    monkeypatch.setattr(runfolder, "atomic_write", spy)
    monkeypatch.setattr(checkpoint_module, "atomic_write", spy)
    cfg = tiny_config_dict(tiny_corpus, max_steps=2, save_every=2, valid_every=2)
    out = tmp_path / "run"
    assert (
        main(["-q", "train", str(write_config(tmp_path / "a.yaml", cfg)), "--out", str(out)]) == 0
    )
    assert {"config.yaml", "last.pt", "best.pt"} <= set(written)
    written.clear()
    cfg["train"]["max_steps"] = 3  # a raised limit: config.yaml rewritten, metrics trimmed
    assert (
        main(["-q", "train", str(write_config(tmp_path / "b.yaml", cfg)), "--out", str(out)]) == 0
    )
    assert {"config.yaml", "metrics.jsonl"} <= set(written)
    src = tmp_path / "in.en"
    src.write_text("a dog runs .\n", encoding="utf-8")
    output = ["--input", str(src), "--output", str(tmp_path / "out.de")]
    assert main(["-q", "translate", str(out / "last.pt"), *output]) == 0
    assert "out.de" in written
