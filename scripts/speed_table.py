#!/usr/bin/env python3
"""The table scripts/bench_speed.sh prints, from the files it leaves in OUT: training logs
(each under /usr/bin/time -v), s2s run folders, OpenNMT-py logs, OUT/decode and OUT/inproc.

Target tokens/s is counted the same way for both toolkits: non-pad target tokens (EOS
included) of all updates, over training seconds without validation. s2s: the sum over log
windows of tokens/s x window seconds, over the last record's ``elapsed``; OpenNMT-py: the
sum over report windows of its mean target tokens per batch x batches, over the seconds
its last report gives.

Usage: scripts/speed_table.py OUT [--in-process]   (--in-process: only OUT/inproc's lines)
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

SENTENCES = 1000  # test_2016_flickr


def time_v(log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) from /usr/bin/time -v output in ``log``."""
    text = log.read_text(errors="replace")
    clock = re.findall(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)[-1]
    seconds = 0.0
    for part in clock.split(":"):
        seconds = 60 * seconds + float(part)
    rss = int(re.findall(r"Maximum resident set size \(kbytes\): (\d+)", text)[-1])
    return seconds, rss / 2**20


def s2s_training(run: Path) -> tuple[int, float, float]:
    """Updates, target tokens, training seconds (validation excluded)."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    if not train:  # fewer updates than one log window
        return 0, 0.0, 0.0
    tokens, before = 0.0, 0.0
    for r in train:
        tokens += r["tokens_per_s"] * (r["elapsed"] - before)
        before = r["elapsed"]
    return train[-1]["step"], tokens, train[-1]["elapsed"]


ONMT_REPORT = re.compile(
    r"Step\s+(\d+)/\s*\d+;.*?bsz:\s*[\d.]+/\s*([\d.]+)/\s*[\d.]+;.*?;\s*([\d.]+) sec;"
)


def onmt_training(log: Path) -> tuple[int, float, float]:
    tokens, before, step, seconds = 0.0, 0, 0, 0.0
    for match in ONMT_REPORT.finditer(log.read_text(errors="replace")):
        step, per_batch, seconds = int(match[1]), float(match[2]), float(match[3])
        tokens += per_batch * (step - before)
        before = step
    return step, tokens, seconds


def decoding(out: Path, name: str, search: str) -> tuple[float, float, float, str] | None:
    """Seconds, peak RSS (GiB), BLEU and batch size of the fastest decoding command of
    one side and search (NAME.SEARCH.bBATCH[.rRUN].time: per batch size and run), if any
    ran."""
    runs = []
    for timing in sorted((out / "decode").glob(f"{name}.{search}.b*.time")):
        seconds, rss = timing.read_text().split()[-2:]
        bleu = float(timing.with_suffix(".bleu").read_text().split()[0])
        batch = timing.stem.rsplit(".b", 1)[1].split(".r")[0]
        runs.append((float(seconds), int(rss) / 2**20, bleu, batch))
    return min(runs, default=None)


def best_of(paths: list[Path]) -> float | None:
    return min((float(p.read_text().split()[-2]) for p in paths), default=None)


def startup_times(out: Path, name: str) -> list[float]:
    return [
        float(p.read_text().split()[-2])
        for p in sorted((out / "decode").glob(f"{name}.startup*.time"))
    ]


def startup(out: Path, name: str) -> float | None:
    return min(startup_times(out, name), default=None)


def spread(out: Path, name: str) -> float:
    """How far the start-up commands of one side differ (seconds, largest - smallest)."""
    times = startup_times(out, name)
    return max(times) - min(times) if times else 0.0


def rate(seconds: float, up: float, noise: float, batch: str) -> str:
    """Sentences/s with start-up taken off; none where the decoding time left is within
    the start-up's own spread (a number from that would be noise, not speed)."""
    left = seconds - up
    if left <= noise:
        return f"n/a: {seconds:.2f} s command, {up:.2f} s start-up (+- {noise:.2f})"
    return f"{SENTENCES / left:,.0f} ({batch})"


def main() -> None:
    out = Path(sys.argv[1])
    if sys.argv[2:] == ["--in-process"]:
        print("\n".join(in_process(out)))
        return
    print(f"{(out / 'machine').read_text().strip()}\n")
    torch_import = best_of(sorted(out.glob("torch_import.*.time")))
    rows, train_time = [], {}
    for name in (
        "s2s-default",
        "s2s-default-fp32",
        "s2s-same",
        "s2s-same-sampled",
        "onmt-default",
        "s2s-rnn",
        "s2s-rnn-sampled",
        "s2s-rnn-fp32",
        "onmt-rnn",
        "old-default",
    ):
        log = out / f"{name}.log"
        cells = [name]
        reader = onmt_training if name.startswith("onmt") else s2s_training
        done = (out / f"{name}.done").exists()
        counted = reader(log if name.startswith("onmt") else out / name) if done else None
        if counted and counted[0] > 0 and counted[2] > 0:
            updates, tokens, seconds = counted
            wall, rss = time_v(log)
            train_time[name] = wall
            cells += [
                f"{updates}",
                f"{wall / 60:.1f} min",
                f"{seconds:.0f} s",
                f"{tokens / updates:,.0f}",
                f"{tokens / seconds:,.0f}",
                f"{rss:.2f} GiB",
            ]
        else:
            cells += [""] * 6
        for search in ("greedy", "beam5"):
            d = decoding(out, name, search)
            up = startup(out, name)
            if d is None or up is None:
                cells += ["", ""]
                continue
            cells += [f"{d[2]:.2f}", rate(d[0], up, spread(out, name), d[3])]
        up = startup(out, name)
        d = decoding(out, name, "beam5")
        cells += [f"{up:.2f} s" if up is not None else "", f"{d[1]:.2f} GiB" if d else ""]
        rows.append(cells)
    head = [
        "run",
        "updates",
        "training wall",
        "training s (no validation)",
        "target tokens per update",
        "target tok/s",
        "training peak RSS",
        "test BLEU greedy",
        "greedy sent/s (batch)",
        "test BLEU beam 5",
        "beam-5 sent/s (batch)",
        "start-up",
        "translate peak RSS (beam 5)",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    if torch_import is not None:
        print(f'\n`python -c "import torch"`: {torch_import:.2f} s (best of 3).')
    print(
        "sent/s exclude start-up: the same command on one empty line (OpenNMT-py, which "
        "fails on one, on the first test sentence), best of 3; each side's fastest "
        "command over the batch sizes (sentences) and runs tried."
    )
    pairs = (
        ("default", "s2s-default", "onmt-default"),
        ("default in OpenNMT-py's dimensions (s2s-same)", "s2s-same", "onmt-default"),
        ("s2s-same, sampled softmax", "s2s-same-sampled", "onmt-default"),
        ("rnn", "s2s-rnn", "onmt-rnn"),
        ("rnn, sampled softmax", "s2s-rnn-sampled", "onmt-rnn"),
    )
    for shape, ours, theirs in pairs:
        s2s, onmt = train_time.get(ours), train_time.get(theirs)
        if s2s and onmt:
            line = f"{shape}: s2s training wall time / OpenNMT-py's = {s2s / onmt:.2f}"
            # s2s's wall holds its tokenizer's training and its vocabulary; OpenNMT-py's
            # vocabulary is built by onmt_build_vocab before onmt_train (its own log)
            vocab = out / theirs / "vocab.log"
            if vocab.exists():
                prep = time_v(vocab)[0]
                line += f" ({s2s / (onmt + prep):.3f} with onmt_build_vocab's {prep:.1f} s)"
            print(line)
    for search in ("greedy", "beam5"):
        new, old = decoding(out, "s2s-default", search), decoding(out, "old-default", search)
        up_new, up_old = startup(out, "s2s-default"), startup(out, "old-default")
        if new and old and up_new is not None and up_old is not None:
            ratio = (old[0] - up_old) / (new[0] - up_new)
            print(
                f"{search}: s2s sent/s / old code's = {ratio:.2f} (BLEU {new[2]:.2f} vs "
                f"{old[2]:.2f})"
            )
    for line in in_process(out):
        print(line)


def in_process(out: Path) -> list[str]:
    """The in-process comparison (OUT/inproc, scripts/decode_ab.py): per search, each
    side's median first-run seconds at its faster batch size, and their ratio; this
    code with a lexical shortlist too, where it ran (decode_vs_old.sh's SHORTLIST)."""
    found: dict[tuple[str, str, str], list[float]] = {}
    bleu: dict[tuple[str, str, str], str] = {}
    for path in sorted((out / "inproc").glob("*.txt")):
        side, search, batch, _ = path.stem.split(".")
        text = path.read_text()
        match = re.search(r"first run ([0-9.]+) s", text)
        if match:
            found.setdefault((side, search, batch), []).append(float(match.group(1)))
            bleu[(side, search, batch)] = re.search(r"BLEU ([0-9.]+)", text).group(1)
    lines = []
    for search in ("greedy", "beam5"):
        best = {}
        for side in ("s2s", "shortlist", "old"):
            mine = {b: t for (s, q, b), t in found.items() if (s, q) == (side, search)}
            medians = {b: statistics.median(t) for b, t in mine.items()}
            if medians:
                batch = min(medians, key=medians.get)
                n = len(found[(side, search, batch)])
                best[side] = (medians[batch], batch[1:], n, bleu[(side, search, batch)])
        if "old" not in best:
            continue
        old, ob, _, old_bleu = best["old"]
        for side, name in (("s2s", "s2s"), ("shortlist", "s2s --shortlist")):
            if side in best:
                new, nb, n, new_bleu = best[side]
                lines.append(
                    f"{search}, in one process (start-up excluded; median first run of {n}, "
                    f"alternating): {name} {SENTENCES / new:,.0f} sent/s (batch {nb}, BLEU "
                    f"{new_bleu}), old code {SENTENCES / old:,.0f} (batch {ob}, BLEU "
                    f"{old_bleu}): {old / new:.2f}x"
                )
    return lines


if __name__ == "__main__":
    main()
