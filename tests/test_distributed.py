"""Data-parallel training with torchrun (Gloo on CPU): N processes compute the update one
process computes with N times the accumulation; only rank 0 writes; resume is exact."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import tiny_config_dict

from s2s import config
from s2s.errors import ConfigError
from s2s.training import distributed
from s2s.translation import Trainer, checkpoint


def torchrun(tmp_path, cfg: dict, out, processes=2, code=0):
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if os.path.exists("/sys/class/net/lo"):  # Gloo on loopback: no hostname lookup needed
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={processes}", "-m", "s2s", "train", str(path), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert (done.returncode == 0) == (code == 0), done.stdout[-2000:] + done.stderr[-3000:]
    return done


def records(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_compute_the_update_of_one_accumulating_two(tmp_path, tiny_corpus):
    options = dict(max_steps=6, threads=1, seed=3)
    one = tmp_path / "one"
    Trainer(config.from_dict(tiny_config_dict(tiny_corpus, accumulate=2, **options)), one).run()
    two = tmp_path / "two"
    torchrun(tmp_path, tiny_config_dict(tiny_corpus, **options), two)
    a, b = checkpoint.load(one / "last.pt"), checkpoint.load(two / "last.pt")
    assert a["progress"]["step"] == b["progress"]["step"] == 6
    assert a["progress"]["batch_in_epoch"] == b["progress"]["batch_in_epoch"]
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], rtol=1e-5, atol=1e-6), key
    # only rank 0 wrote: one TensorBoard file, each record once, the same losses and BLEU
    assert len(list(two.glob("events.out.tfevents.*"))) == 1
    ra, rb = records(one), records(two)
    assert [(r["kind"], r["step"]) for r in ra] == [(r["kind"], r["step"]) for r in rb]
    for x, y in zip(ra, rb):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        if x["kind"] == "valid":
            assert x["bleu"] == pytest.approx(y["bleu"])
    assert len(b["rng"]["ranks"]) == 2  # each rank's RNG state, for exact resume


COUNT_ALLREDUCES = """
import os
import sys
from pathlib import Path
import torch.distributed as dist
from s2s import config
from s2s.translation import Trainer

trainer = Trainer(config.load(sys.argv[1]), Path(sys.argv[2]))
calls = []

def hook(state, bucket):  # DDP's own all-reduce (an average), counted
    calls.append(1)
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0] / dist.get_world_size())

trainer.updater.ddp.register_comm_hook(None, hook)
trainer.run()
Path(sys.argv[2], f"allreduces-{os.environ['RANK']}.txt").write_text(str(len(calls)))
"""


def run_counting(tmp_path, cfg: dict, out: str) -> int:
    script = tmp_path / "count.py"
    script.write_text(COUNT_ALLREDUCES)
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if os.path.exists("/sys/class/net/lo"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", str(script), str(path), str(tmp_path / out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = {int((tmp_path / out / f"allreduces-{r}.txt").read_text()) for r in (0, 1)}
    assert len(counts) == 1, counts
    return counts.pop()


def test_ddp_accumulates_without_syncing_and_equals_one_process(tmp_path, tiny_corpus):
    """Two processes accumulating two batches each compute the update of one process
    accumulating four, and DistributedDataParallel all-reduces once per update
    (no_sync for the first micro-batch), not once per batch."""
    options = dict(max_steps=3, threads=1, seed=5)
    one = tmp_path / "one"
    Trainer(config.from_dict(tiny_config_dict(tiny_corpus, accumulate=4, **options)), one).run()
    per_update = run_counting(tmp_path, tiny_config_dict(tiny_corpus, **options), "acc1")
    accumulating = run_counting(
        tmp_path, tiny_config_dict(tiny_corpus, accumulate=2, **options), "acc2"
    )
    assert per_update > 0 and accumulating == per_update
    a, b = checkpoint.load(one / "last.pt"), checkpoint.load(tmp_path / "acc2" / "last.pt")
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], rtol=1e-5, atol=1e-6), key


def test_a_rank_without_a_batch_runs_one_at_weight_zero(tmp_path, tiny_corpus):
    """Four batches an epoch over three processes: the second update of each epoch has
    one batch, so ranks 1 and 2 run a borrowed one at weight zero (they must still join
    the all-reduce) and the update equals one process accumulating three."""
    options = dict(max_steps=4, threads=1, seed=7)
    one = tmp_path / "one"
    Trainer(config.from_dict(tiny_config_dict(tiny_corpus, accumulate=3, **options)), one).run()
    three = tmp_path / "three"
    torchrun(tmp_path, tiny_config_dict(tiny_corpus, **options), three, processes=3)
    a, b = checkpoint.load(one / "last.pt"), checkpoint.load(three / "last.pt")
    assert a["progress"]["epoch"] == b["progress"]["epoch"] == 2  # two epochs of 4 batches
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], rtol=1e-5, atol=1e-6), key


def test_a_data_parallel_run_resumes_exactly(tmp_path, tiny_corpus):
    cfg = tiny_config_dict(tiny_corpus, max_steps=6, threads=1)
    cfg["model"].update(dropout=0.3, embedding_dropout=0.2)  # per-rank random masks
    torchrun(tmp_path, cfg, tmp_path / "straight")
    cfg["train"]["max_steps"] = 3
    torchrun(tmp_path, cfg, tmp_path / "split")
    cfg["train"]["max_steps"] = 6
    torchrun(tmp_path, cfg, tmp_path / "split")
    a = checkpoint.load(tmp_path / "straight" / "last.pt")
    b = checkpoint.load(tmp_path / "split" / "last.pt")
    assert b["progress"]["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


LEFT_THREADS = """
import os, sys
from pathlib import Path
from s2s import config
from s2s.translation import Trainer

Trainer(config.load(sys.argv[1]), Path(sys.argv[2])).run()
tasks = os.listdir("/proc/self/task")
names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks)
Path(sys.argv[2], f"threads-{os.environ['RANK']}.txt").write_text(" ".join(names))
"""


def test_a_finished_run_leaves_no_process_group_threads(tmp_path, tiny_corpus):
    """The cause of rank 1 aborting at exit now and then: a process group that
    destroy_process_group() could not free (torch._dynamo, imported by the optimizer,
    held it) kept its Gloo threads into interpreter shutdown. After training, none
    may be left on any rank."""
    script = tmp_path / "left_threads.py"
    script.write_text(LEFT_THREADS)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus, max_steps=2, threads=1)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if os.path.exists("/sys/class/net/lo"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", str(script), str(path), str(tmp_path / "run")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        names = (tmp_path / "run" / f"threads-{rank}.txt").read_text().split()
        assert "python" in names and not [n for n in names if "gloo" in n], (rank, names)


def test_context_from_the_environment(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.from_env() == distributed.Context(0, 1, 0)
    assert not distributed.from_env().active
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = distributed.from_env()
    assert (ctx.rank, ctx.world, ctx.local_rank, ctx.main, ctx.active) == (3, 4, 1, False, True)
    assert distributed.shard(list(range(10)), ctx) == [3, 7]
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4 and WORLD_SIZE=4"):
        distributed.from_env()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="RANK='one' is not an integer"):
        distributed.from_env()


def test_bad_input_stops_every_rank_with_one_line_and_a_resume_names_its_batch(
    tmp_path, tiny_corpus, caplog
):
    """Rank 0 alone checks the run folder: its refusal used to leave rank 1 waiting
    until rank 0's exit broke the connection, with a 40-line traceback. Resumed with
    fewer processes, the run said nothing of its halved batch, and train.accumulate,
    which could keep it, was refused as another config."""
    cfg = tiny_config_dict(tiny_corpus, max_steps=2, threads=1)
    torchrun(tmp_path, cfg, tmp_path / "run")
    other = dict(cfg, model=dict(cfg["model"], dropout=0.25))
    done = torchrun(tmp_path, other, tmp_path / "run", code=2)
    # torchrun itself reports failed children with a traceback of its own; none of ours
    assert "/s2s/" not in done.stderr and "closed by peer" not in done.stderr, done.stderr
    assert done.stderr.count("belongs to a different config") == 2  # rank 0's, rank 1's
    assert "rank 0 stopped: run folder" in done.stderr
    cfg["train"].update(max_steps=3, accumulate=2)  # one process, the same batch
    with caplog.at_level("WARNING"):
        Trainer(config.from_dict(cfg), tmp_path / "run").run()
    assert "saved by 2 process(es) accumulating 1 batch(es) an update, this run has 1 " in (
        caplog.text
    )
    assert "the effective batch stays 2 x data.batch_size" in caplog.text


def test_stray_process_variables_without_torchrun_are_one_line(tmp_path, tiny_corpus, monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    cfg = config.from_dict(tiny_config_dict(tiny_corpus, max_steps=1))
    with pytest.raises(ConfigError, match="WORLD_SIZE=2 and RANK=0 are set, but .*torchrun"):
        Trainer(cfg, tmp_path / "run")
