"""The training engine with a task that is neither translation nor a char LM: a toy
regression, y = 2x + 1, through the documented task interface only. What the engine
promises every task (a loss that falls, best.pt by the task's own direction, exact
resume, accumulation that equals a larger batch, checkpoints that name their task,
old progress records that still load) is shown here once."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field

import pytest
import torch

from s2s.config import LMTrainConfig, TrainConfig
from s2s.config.loading import build_tree
from s2s.errors import S2SError
from s2s.training.engine import Engine
from s2s.training.progress import Progress, Settings, unbounded
from s2s.training.task import Run


@dataclass(frozen=True)
class ToyConfig:
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class Pairs:
    x: torch.Tensor
    y: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return self.y.numel()

    @property
    def n_sequences(self) -> int:
        return self.y.shape[0]


class Regression:
    """Fit y = 2x + 1 with one linear unit; validation: mean squared error."""

    kind = "toy"
    metric, metric_key, higher_is_better = "MSE", "mse", False
    unit = "points"
    parse = staticmethod(lambda data: build_tree(ToyConfig, data, ""))

    def __init__(self, cfg: ToyConfig):
        self.cfg = cfg
        x = torch.linspace(-1, 1, 64).unsqueeze(1)
        self.x, self.y = x, 2 * x + 1
        self.seen: list[int] = []

    def prepare(self, run: Run, payload: dict | None) -> torch.nn.Module:
        self.model = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(1, 1))
        return self.model

    def epoch(self, epoch: int) -> list[list[int]]:
        order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch)).tolist()
        return [order[i : i + 8] for i in range(0, 64, 8)]

    def batch(self, rows: list[int]) -> Pairs:
        self.seen.append(len(rows))
        return Pairs(self.x[rows], self.y[rows])

    def loss(self, batch: Pairs, step: int) -> torch.Tensor:
        return ((self.model(batch.x) - batch.y) ** 2).sum()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict]:
        mse = float(((self.model(self.x) - self.y) ** 2).mean())
        return mse, {"mse": mse}

    def state(self) -> dict:
        return {"toy": 1}

    def restore(self, payload: dict) -> None:
        assert payload["toy"] == 1

    def after_update(self, applied: bool) -> None:
        pass

    def end_epoch(self) -> None:
        pass

    def train_fields(self, step: int, loss: float) -> dict:
        return {"mse": loss}

    def describe(self, fields: dict) -> str:
        return f"MSE {fields['mse']:.4f}"

    def row_normed(self) -> list[torch.Tensor]:
        return [self.model[1].weight]


def toy(**train) -> ToyConfig:
    base = dict(threads=1, max_steps=40, lr=0.05, log_every=5, valid_every=10, save_every=10)
    return ToyConfig(train=dataclasses.replace(TrainConfig(), **(base | train)))


def records(folder, kind):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_the_engine_trains_a_task_it_knows_nothing_about(tmp_path):
    engine = Engine(Regression(toy()), tmp_path / "run")
    result = engine.run()
    valid = records(tmp_path / "run", "valid")
    assert result["step"] == 40 and result["best_mse"] == min(r["mse"] for r in valid)
    assert valid[-1]["mse"] < 0.1 * valid[0]["mse"]  # it learned
    train = records(tmp_path / "run", "train")
    assert train[0]["points_per_s"] > 0
    if sys.platform.startswith("linux"):  # the process's peak RSS, never falling
        peaks = [r["peak_rss_mb"] for r in train]
        assert peaks[0] > 50 and peaks == sorted(peaks)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["kind"] == "toy" and best["toy"] == 1
    assert best["progress"]["best"] == result["best_mse"]  # lower is better: the minimum


class Scripted(Regression):
    """Validation scores as given, in turn: the best is not the last."""

    def __init__(self, cfg: ToyConfig, scores: list[float]):
        super().__init__(cfg)
        self.scores = list(scores)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict]:
        mse = self.scores.pop(0)
        return mse, {"mse": mse}


def test_best_pt_holds_the_best_validations_weights_not_the_last(tmp_path):
    engine = Engine(Scripted(toy(max_steps=30), [1.0, 0.5, 2.0]), tmp_path / "run")
    weights = {}
    engine.on_step = lambda r: weights.__setitem__(
        engine.progress.step, engine.model[1].weight.detach().clone()
    )
    engine.run()
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert best["progress"]["step"] == 20 and best["progress"]["best"] == 0.5
    assert torch.equal(best["model"]["1.weight"], weights[20])
    assert not torch.equal(best["model"]["1.weight"], last["model"]["1.weight"])


def test_resume_continues_exactly(tmp_path, caplog):
    Engine(Regression(toy()), tmp_path / "straight").run()
    Engine(Regression(toy(max_steps=15)), tmp_path / "split").run()
    with caplog.at_level("INFO"):
        resumed = Regression(toy())
        Engine(resumed, tmp_path / "split").run()  # max_steps may rise on resume
    assert "at step 15" in caplog.text and "resumed from" in caplog.text
    assert len(resumed.seen) == 40 - 15  # it did not start over
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["progress"]["batch_in_epoch"] == b["progress"]["batch_in_epoch"]


def test_accumulation_reads_that_many_items_per_update(tmp_path):
    progress = {}
    for name, accumulate in (("one", 1), ("two", 2)):
        task = Regression(toy(max_steps=6, accumulate=accumulate))
        Engine(task, tmp_path / name).run()
        assert task.seen == [8] * 6 * accumulate  # items of 8 points, `accumulate` an update
        progress[name] = torch.load(tmp_path / name / "last.pt", weights_only=True)["progress"]
    assert (progress["one"]["epoch"], progress["one"]["batch_in_epoch"]) == (0, 6)
    assert (progress["two"]["epoch"], progress["two"]["batch_in_epoch"]) == (1, 4)  # 12 of 8


def test_settings_a_section_lacks_are_off():
    s = Settings.of(LMTrainConfig())
    assert s.precision == "fp32" and s.ema_decay == 0.0 and s.max_epochs == 0
    assert s.lr == LMTrainConfig().lr and s.clip_grad_norm == LMTrainConfig().clip_grad_norm


@pytest.mark.parametrize(
    "old, best",
    [({"best_bleu": -1.0}, None), ({"best_bleu": 23.5}, 23.5), ({"best_bits": 2.5}, 2.5)],
)
def test_progress_written_before_the_engine_still_loads(old, best):
    state = {"step": 7, "epoch": 1, "elapsed": 3.0, "last_valid_step": 5} | old
    progress = Progress.from_state(state)
    assert progress.best == best and progress.step == 7 and progress.epoch == 1


class StopsAfterThree(Regression):
    """Asks the engine to stop after its third update, as Ctrl-C would."""

    def after_update(self, applied: bool) -> None:
        if len(self.seen) == 3:
            self.engine.stop_requested = True


def test_a_run_that_only_an_interrupt_stops_is_warned_about(tmp_path, caplog):
    task = StopsAfterThree(toy(max_steps=0, lr_schedule="constant"))
    task.engine = Engine(task, tmp_path / "endless")
    with pytest.raises(S2SError, match="interrupted at step 3"):
        task.engine.run()
    assert "no stopping limit" in caplog.text
    caplog.clear()
    Engine(Regression(toy(max_steps=5, lr_schedule="constant")), tmp_path / "bounded").run()
    assert "no stopping limit" not in caplog.text


@pytest.mark.parametrize(
    "train, warned",
    [
        ({}, True),
        ({"max_epochs": 2}, False),
        ({"max_minutes": 0.5}, False),
        ({"early_stopping": 3}, False),
        ({"lr_schedule": "plateau", "min_lr": 1e-5}, False),  # stops at min_lr
        ({"lr_schedule": "plateau", "min_lr": 0.0}, True),  # halves for ever
        ({"lr_schedule": "plateau", "min_lr": 1e-5, "stop_at_min_lr": False}, True),
    ],
)
def test_which_settings_bound_a_run(train, warned):
    settings = Settings(**({"max_steps": 0, "lr_schedule": "constant"} | train))
    assert (unbounded(settings) is not None) == warned


class StopsAtTheFirstEpochsEnd(Regression):
    """A stop signal that arrives after an epoch's last update, while the epoch ends."""

    def end_epoch(self) -> None:
        self.engine.stop_requested = True


def test_an_interrupt_at_an_epochs_end_saves_and_resumes_exactly(tmp_path):
    Engine(Regression(toy(max_steps=20, save_every=1000)), tmp_path / "straight").run()
    task = StopsAtTheFirstEpochsEnd(toy(max_steps=20, save_every=1000))
    task.engine = Engine(task, tmp_path / "split")
    with pytest.raises(S2SError, match="interrupted at step 8"):  # 64 points, 8 an item
        task.engine.run()
    saved = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["progress"]
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == (8, 1, 0)
    Engine(Regression(toy(max_steps=20, save_every=1000)), tmp_path / "split").run()
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert b["progress"]["step"] == 20
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
