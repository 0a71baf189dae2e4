"""Every config key reaches where it acts.

The test walks every key of both config trees (translation: ``s2s.config.Config``; char
LM: ``s2s.config.LMConfig``) and, for each, sets it away from the value of a small base
config and shows that what it should change changed: the built module's structure,
initial weights or forward output, the data read, the vocabulary, the batches, the
losses, learning rates or weights of a few training steps, the stopping point, the
files and records written, or the options passed to the code that acts on it. A probe
may set other keys on both sides first (``context``: e.g. an activation acts on the
vanilla RNN cell only). A key that cannot show an effect in a tiny setting goes in
``LISTED`` with its reason; a key with neither fails ``test_every_key_has_a_probe``, so
a key added later must come with its check.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import inspect
import json
import logging
import os
import typing
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from conftest import SENTENCES, tiny_config_dict, write_corpus
from test_model import V, toy_batch

import s2s.translation.task as train_mod
from s2s import config
from s2s.charlm import LMTrainer, train_lm
from s2s.data.corpus import epoch_batches
from s2s.data.files import load_split
from s2s.data.tokenize import train_tokenizers
from s2s.errors import S2SError
from s2s.nn.seq2seq import build_model
from s2s.translation import Trainer, checkpoint

UNSET = "S2S_PROBE_UNSET_VARIABLE"

# Keys that cannot show an effect in a tiny setting, with the reason. (None today.)
LISTED: dict[str, str] = {}


def keys_of(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += keys_of(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


@dataclasses.dataclass(frozen=True)
class Probe:
    value: Any  # the value the key is set to
    observe: Callable  # (config, env) -> what the key should change
    context: dict = dataclasses.field(default_factory=dict)  # set on both sides


def P(value, observe, **context) -> Probe:
    """A probe; context keys are written with '__' for '.'."""
    return Probe(value, observe, {k.replace("__", "."): v for k, v in context.items()})


# --------------------------------------------------------------------------- environment


class Env:
    """Files every probe may use, made once: corpora (a second one, a French side, a
    Latin-1 one, a hub-style dataset folder), texts, a teacher and two char LMs (forward
    and backward)."""

    def __init__(self, root: Path):
        self.root = root
        self.count = 0
        pairs = SENTENCES * 4
        data = root / "data"
        self.corpus = {
            "train": write_corpus(data, "train", pairs),
            "valid": write_corpus(data, "valid", SENTENCES[:4]),
            "test": write_corpus(data, "test", SENTENCES[4:]),
        }
        for name, rows in (("train", pairs), ("valid", SENTENCES[:4])):
            (data / f"{name}.fr").write_text("".join(f"fr {s}\n" for s, _ in rows))
        other = [(s.upper(), t.upper()) for s, t in SENTENCES]
        self.other = {
            split: write_corpus(root / "other", split, other)
            for split in ("train", "valid", "test")
        }
        latin = root / "latin"
        latin.mkdir()
        (latin / "train.en").write_bytes("café crème\nthé\n".encode("latin-1"))
        (latin / "train.de").write_bytes("kaffee\ntee\n".encode("latin-1"))
        self.latin = str(latin / "train")
        self.hub = root / "hub"
        self.hub.mkdir()
        for split, rows in (
            ("train", SENTENCES),
            ("validation", SENTENCES[:3]),
            ("test", SENTENCES[3:]),
        ):
            lines = [json.dumps({"en": s, "de": t}) for s, t in rows]
            (self.hub / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        self.text = root / "text.txt"
        self.text.write_text(("".join(s + "\n" for s, _ in SENTENCES)) * 12, encoding="utf-8")
        self.text2 = root / "text2.txt"
        self.text2.write_text("abcd efgh\n" * 120, encoding="utf-8")
        self.latin_text = root / "latin.txt"
        self.latin_text.write_bytes(("café au lait, thé noir.\n" * 60).encode("latin-1"))
        teacher = tiny_config_dict(self.corpus, max_steps=3)
        Trainer(config.from_dict(teacher), root / "teacher").run()
        self.teacher = str(root / "teacher" / "last.pt")
        lm = {
            "model": {"unit": "char", "embedding_size": 16, "hidden_size": 16},
            "data": {"text": str(self.text), "valid_fraction": 0.2},
            "train": {"batch_size": 4, "bptt": 8, "max_steps": 2, "valid_every": 2},
        }
        train_lm(config.lm_from_dict(lm), root / "lm")
        self.lm = str(root / "lm" / "best.pt")
        lm["data"]["direction"] = "backward"
        train_lm(config.lm_from_dict(lm), root / "lm_backward")
        self.lm_backward = str(root / "lm_backward" / "best.pt")
        self.baselines: dict = {}

    def folder(self) -> Path:
        self.count += 1
        return self.root / "runs" / str(self.count)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    os.environ.pop(UNSET, None)
    return Env(tmp_path_factory.mktemp("keys"))


def translation_base(env: Env) -> dict:
    base = tiny_config_dict(env.corpus, max_steps=3, valid_every=3, save_every=3, log_every=1)
    base["data"]["test"] = env.corpus["test"]
    return base


def lm_base(env: Env) -> dict:
    return {
        "model": {"embedding_size": 8, "hidden_size": 32},
        "data": {"text": str(env.text), "valid_fraction": 0.2},
        "train": {
            "batch_size": 4,
            "bptt": 8,
            "lr": 0.01,
            "max_steps": 3,
            "log_every": 1,
            "valid_every": 3,
            "save_every": 3,
        },
    }


# --------------------------------------------------------------------------- observers


def fixed_weights(model: torch.nn.Module) -> None:
    """Weights that depend on a parameter's name and shape only, so two models that
    differ in wiring, not in parameters, get the same ones."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            p.copy_(torch.rand(p.shape, generator=g) - 0.5)


def structure(cfg, env):
    model = build_model(cfg.model, src_vocab=V, tgt_vocab=V)
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def initial_weights(cfg, env):
    torch.manual_seed(0)
    return build_model(cfg.model, src_vocab=V, tgt_vocab=V).state_dict()


def forward(cfg, env):
    model = build_model(cfg.model, src_vocab=V, tgt_vocab=V).eval()
    fixed_weights(model)
    batch = toy_batch()
    with torch.no_grad():
        return model(batch.src, batch.src_lengths, batch.tgt_in)


def training_noise(cfg, env):
    """Whether two training-mode forward passes differ (dropout acting)."""
    torch.manual_seed(0)
    model = build_model(cfg.model, src_vocab=V, tgt_vocab=V).train()
    batch = toy_batch()
    with torch.no_grad():
        a, b = (model(batch.src, batch.src_lengths, batch.tgt_in) for _ in range(2))
    return not torch.equal(a, b)


def rows(split: str):
    def observe(cfg, env):
        try:
            ds = load_split(cfg.data, split)
        except S2SError as err:
            return f"error: {err}"
        return list(zip(ds["src"], ds["tgt"]))

    observe.__name__ = f"rows_{split}"
    return observe


def vocabulary(cfg, env):
    ds = load_split(cfg.data, "train")
    src, tgt = train_tokenizers(cfg.data.tokenizer, list(ds["src"]), list(ds["tgt"]))
    return src.vocabulary(), tgt.vocabulary(), src is tgt


def trainer(cfg, env) -> Trainer | LMTrainer:
    """The trainer of the config's tree, set up in a new folder (not run)."""
    return trainer_class(cfg)(cfg, env.folder())


def trainer_class(cfg) -> type:
    return LMTrainer if isinstance(cfg, config.LMConfig) else Trainer


def corpus(cfg, env):
    t = trainer(cfg, env)
    return [x.tolist() for x in t.task.train_corpus.src], [
        x.tolist() for x in t.task.train_corpus.tgt
    ]


def batches(cfg, env):
    t = trainer(cfg, env)
    return epoch_batches(t.task.train_corpus, cfg.data, cfg.train.seed, 0)


def batch_shapes(cfg, env):
    t = trainer(cfg, env)
    items = epoch_batches(t.task.train_corpus, cfg.data, cfg.train.seed, 0)
    return [tuple(t.task.batch(b).tgt_in.shape) for b in items]


def device(cfg, env):
    try:
        return str(trainer(cfg, env).device)
    except S2SError as err:
        return f"error: {err}"


def threads(cfg, env):
    before = torch.get_num_threads()
    try:
        trainer(cfg, env)
        return torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def bad_step(cfg, env):
    t = trainer(cfg, env)
    message = t._bad_step("a probe")
    return t.progress.plateau_lr, message


def recurrent_weights(cfg, env):
    t = trainer(cfg, env)
    return {n: p.detach().clone() for n, p in t.model.named_parameters() if ".rnn." in n}


def trained(cfg, env):
    """A run of the config in a new folder: (trainer, folder, result, saves)."""
    folder = env.folder()
    t = trainer_class(cfg)(cfg, folder)
    saves, real = [], t.save
    t.save = lambda name: (saves.append((name, t.progress.step)), real(name))
    return t, folder, t.run(), saves


def records(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def weights(cfg, env):
    return trained(cfg, env)[0].model.state_dict()


def losses(cfg, env):
    return [r["loss"] for r in records(trained(cfg, env)[1]) if r["kind"] == "train"]


def loss_kernel(cfg, env):
    return trained(cfg, env)[0].task.token_loss.compiled


def lrs(cfg, env):
    return [r["lr"] for r in records(trained(cfg, env)[1]) if r["kind"] == "train"]


def stop(cfg, env):
    result = trained(cfg, env)[2]
    return result["step"], result["reason"]


def kinds(cfg, env):
    return collections.Counter(r["kind"] for r in records(trained(cfg, env)[1]))


def progress(cfg, env):
    p = trained(cfg, env)[0].progress
    return p.step, p.epoch, p.batch_in_epoch


def saved_weights(cfg, env):
    return checkpoint.load(trained(cfg, env)[1] / "last.pt")["model"]


def saves(cfg, env):
    return trained(cfg, env)[3]


def files(cfg, env):
    return sorted(p.name for p in trained(cfg, env)[1].iterdir())


def event_bytes(cfg, env):
    return sum(p.stat().st_size for p in trained(cfg, env)[1].glob("events.out.tfevents.*"))


def warnings(cfg, env):
    seen = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("s2s.training.update")
    logger.addHandler(handler)
    try:
        trained(cfg, env)
    finally:
        logger.removeHandler(handler)
    return [m for m in seen if "update/weight ratio" in m]


@contextmanager
def spying(owner, name: str, calls: list):
    """Record the keyword arguments of calls to ``owner.name`` (a module function or a
    static method), then put the original back as it was."""
    stored, real = inspect.getattr_static(owner, name), getattr(owner, name)

    def spy(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    setattr(owner, name, staticmethod(spy) if isinstance(stored, staticmethod) else spy)
    try:
        yield
    finally:
        setattr(owner, name, stored)


def validation_options(cfg, env):
    calls = []
    with spying(train_mod, "translate_lines", calls):
        trained(cfg, env)
    return [(c["batch_size"], c["max_output_ratio"], c["beam"]) for c in calls]


def spm_options(cfg, env):
    import sentencepiece

    calls = []
    with spying(sentencepiece.SentencePieceTrainer, "train", calls):
        vocabulary(cfg, env)
    return [
        {k: v for k, v in c.items() if k not in ("sentence_iterator", "model_writer")}
        for c in calls
    ]


# char LM


def lm_structure(cfg, env):
    return [(n, tuple(p.shape)) for n, p in trainer(cfg, env).model.named_parameters()]


def lm_initial_weights(cfg, env):
    return trainer(cfg, env).model.state_dict()


def lm_forward(cfg, env):
    model = trainer(cfg, env).model.eval()
    fixed_weights(model)
    ids = torch.arange(40).view(4, 10) % 30 + 60
    with torch.no_grad():
        return model(ids)[0]


def lm_noise(cfg, env):
    model = trainer(cfg, env).model.train()
    ids = torch.arange(40).view(4, 10) % 30 + 60
    with torch.no_grad():
        return not torch.equal(model(ids)[0], model(ids)[0])


def lm_data(cfg, env):
    try:
        t = trainer(cfg, env)
    except S2SError as err:
        return f"error: {err}"
    return t.task.train_data, t.task.valid_data


# --------------------------------------------------------------------------- the probes

INIT = {
    "scheme": P("xavier_uniform", None),
    "mode": P("fan_out", None, scheme="variance_scaling"),
    "distribution": P("uniform", None, scheme="variance_scaling"),
    "scale": P(1.0, None, scheme="variance_scaling"),
    "std": P(0.1, None, scheme="normal"),
    "range": P(0.05, None, scheme="uniform"),
    "recurrent": P("orthogonal", None),
    "forget_bias": P(0.0, None),
}


def init_probes(prefix: str, observe: Callable) -> dict[str, Probe]:
    return {
        f"{prefix}{k}": Probe(p.value, observe, {f"{prefix}{c}": v for c, v in p.context.items()})
        for k, p in INIT.items()
    }


def common_train_probes(lr: float, min_lr: float) -> dict[str, Probe]:
    """Keys both trainers share: seeding, devices, stopping, the optimizer, the
    learning-rate schedule, logging and saving. ``lr`` and ``min_lr``: values away
    from the tree's base."""
    sgd = {"train.optimizer": "sgd"}
    exponential = {"train.lr_schedule": "exponential", "train.lr_gamma": 0.5}
    return {
        "train.seed": P(2, weights),
        "train.device": P("cuda", device),
        "train.threads": P(7, threads),
        "train.max_steps": P(2, stop),
        "train.max_minutes": P(1e-6, stop),
        "train.optimizer": P("sgd", weights),
        "train.lr": P(lr, weights),
        "train.betas": P([0.5, 0.6], weights),
        "train.momentum": Probe(0.5, weights, sgd),
        "train.nesterov": Probe(True, weights, sgd),
        "train.weight_decay": P(0.1, weights),
        "train.clip_grad_norm": P(0.01, weights),
        "train.lr_schedule": P("exponential", lrs, train__lr_gamma=0.5),
        "train.warmup_steps": P(2, lrs),
        "train.decay_start": Probe(1, lrs, exponential),
        "train.decay_steps": P(2, lrs, train__lr_schedule="linear", train__min_lr=0.0),
        "train.lr_gamma": P(0.5, lrs, train__lr_schedule="exponential"),
        "train.lr_step_size": P(1, lrs, train__lr_schedule="step"),
        "train.lr_decay": P(0.1, lrs, train__lr_schedule="step", train__lr_step_size=1),
        "train.min_lr": Probe(min_lr, lrs, exponential | {"train.lr_gamma": 0.1}),
        "train.log_every": P(2, kinds),
        "train.valid_every": P(1, kinds),
        "train.save_every": P(1, saves),
    }


def translation_probes(env: Env) -> dict[str, Probe]:
    hub = {"data.hub": str(env.hub)}
    teacher = {"train.distill.teacher": env.teacher}
    charlm = {"model.charlm": env.lm, "data.tokenizer.kind": "char"}
    sgd = {"train.optimizer": "sgd"}
    quiet = {"train.valid_every": 1, "train.lr": 1e-9, "train.min_lr": 0.0}
    probes = {
        "model.embedding_size": P(24, structure),
        "model.encoder.cell": P("gru", structure),
        "model.encoder.activation": P("relu", forward, model__encoder__cell="rnn"),
        "model.encoder.bidirectional": P(False, structure),
        "model.encoder.layers": P(2, structure),
        "model.encoder.hidden_size": P(8, structure),
        "model.encoder.stacking": P("residual", forward, model__encoder__layers=2),
        "model.decoder.cell": P("gru", structure),
        "model.decoder.activation": P("relu", forward, model__decoder__cell="rnn"),
        "model.decoder.layers": P(2, structure),
        "model.decoder.hidden_size": P(24, structure),
        "model.decoder.stacking": P("residual", forward, model__decoder__layers=2),
        "model.decoder.input_feeding": P(True, structure),
        "model.attention": P("additive", structure),
        "model.multiplicative_form": P("dot", structure),
        "model.attention_size": P(12, structure, model__attention="additive"),
        "model.attentional_vector": P("linear", forward),
        "model.bridge": P(False, structure),
        "model.bridge_type": P("copy", forward),
        "model.dropout": P(0.3, training_noise),
        "model.embedding_dropout": P(0.3, training_noise),
        "model.recurrent_dropout": P(0.3, training_noise),
        "model.word_dropout": P(0.3, training_noise),
        "model.tie_target_embeddings": P(False, structure),
        "model.charlm": Probe(env.lm, recurrent_weights, {"data.tokenizer.kind": "char"}),
        "model.charlm_into": Probe(
            "decoder", recurrent_weights, charlm | {"model.decoder.hidden_size": 16}
        ),
        "model.charlm_decoder": Probe(
            env.lm,
            recurrent_weights,
            {"data.tokenizer.kind": "char", "model.decoder.hidden_size": 16},
        ),
        "model.charlm_backward": Probe(
            env.lm_backward, recurrent_weights, {"data.tokenizer.kind": "char"}
        ),
        "data.src_lang": P("fr", rows("train")),
        "data.tgt_lang": P("fr", rows("train")),
        "data.train": P(env.other["train"], rows("train")),
        "data.valid": P(env.other["valid"], rows("valid")),
        "data.test": P(env.other["test"], rows("test")),
        "data.hub": Probe(str(env.hub), rows("train"), {"data.train": f"${{{UNSET}}}/train"}),
        "data.hub_train": Probe(
            "validation", rows("train"), hub | {"data.train": f"${{{UNSET}}}/train"}
        ),
        "data.hub_valid": Probe("train", rows("valid"), hub | {"data.valid": f"${{{UNSET}}}/v"}),
        "data.hub_test": Probe("validation", rows("test"), hub | {"data.test": f"${{{UNSET}}}/t"}),
        "data.encoding": P("latin-1", rows("train"), data__train=env.latin),
        "data.train_limit": P(3, rows("train")),
        "data.valid_limit": P(2, rows("valid")),
        "data.tokenizer.kind": P("char", vocabulary),
        "data.tokenizer.spm_model": P(
            "bpe", vocabulary, data__tokenizer__kind="spm", data__tokenizer__vocab_size=60
        ),
        "data.tokenizer.vocab_size": P(12, vocabulary),
        "data.tokenizer.joint": P(False, vocabulary),
        "data.tokenizer.target_vocab": P("train", vocabulary),
        "data.tokenizer.character_coverage": P(
            0.98, vocabulary, data__tokenizer__kind="spm", data__tokenizer__vocab_size=60
        ),
        "data.tokenizer.min_freq": P(5, vocabulary),
        "data.reverse_source": P(True, corpus),
        "data.max_len": P(4, corpus),
        "data.long_pairs": P("truncate", corpus, data__max_len=4),
        "data.batch_size": P(4, batches),
        "data.batch_unit": P("tokens", batches, data__batch_size=40),
        "data.bucket_pool": P(1, batches),
        "data.shape_multiple": P(4, batch_shapes, data__batch_unit="tokens", data__batch_size=60),
        "train.precision": P("bf16", losses),
        "train.compile": P("always", loss_kernel),
        "train.max_epochs": P(1, stop, train__max_steps=10),
        "train.clip_grad_value": P(1e-4, weights),
        "train.loss_norm": Probe("sentences", weights, sgd),
        "train.accumulate": P(2, progress),
        "train.lr_multipliers": P({"decoder.combine": 3.0}, weights),
        "train.ema_decay": P(0.5, saved_weights),
        "train.l1": P(0.01, weights),
        "train.max_norm": P(0.5, weights),
        "train.bad_step_lr_factor": P(0.1, bad_step),
        "train.max_bad_steps": P(1, bad_step),
        "train.diagnostics_every": P(1, kinds),
        "train.update_ratio_band": P([1e-9, 1e-8], warnings, train__diagnostics_every=1),
        "train.histograms_every": P(1, event_bytes),
        "train.label_smoothing": P(0.1, losses),
        "train.sampled_softmax": P(4, losses),
        "train.sampled_softmax_until": P(1, losses, train__sampled_softmax=4),
        "train.scheduled_sampling.decay": P(
            "exponential", losses, train__scheduled_sampling__k=0.5
        ),
        "train.scheduled_sampling.k": P(0.5, losses),
        "train.scheduled_sampling.c": P(0.3, losses, train__scheduled_sampling__decay="linear"),
        "train.scheduled_sampling.minimum": P(
            0.5, losses, train__scheduled_sampling__decay="linear", train__scheduled_sampling__c=1.0
        ),
        "train.scheduled_sampling.sample": P(True, losses, train__scheduled_sampling__k=0.0),
        "train.scheduled_sampling.mode": P("parallel", losses, train__scheduled_sampling__k=0.5),
        "train.distill.teacher": P(env.teacher, losses),
        "train.distill.temperature": Probe(2.0, losses, teacher),
        "train.distill.weight": Probe(0.9, losses, teacher),
        "train.keep_checkpoints": P(2, files, train__save_every=1),
        "train.patience": Probe(1, lrs, quiet | {"train.max_steps": 4}),
        "train.stop_at_min_lr": Probe(
            False,
            stop,
            {"train.lr": 1e-5, "train.valid_every": 1, "train.patience": 1, "train.max_steps": 6},
        ),
        "train.early_stopping": Probe(1, stop, quiet),
        "train.valid_batch_size": P(2, validation_options),
        "train.max_output_ratio": P(0.5, validation_options),
        "train.valid_beam": P(2, validation_options),
        "data.tokenizer.threads": P(
            1, spm_options, data__tokenizer__kind="spm", data__tokenizer__vocab_size=60
        ),
    }
    probes.update(init_probes("model.init.", initial_weights))
    probes.update(common_train_probes(lr=0.01, min_lr=5e-4))
    return probes


def lm_probes(env: Env) -> dict[str, Probe]:
    probes = {
        "model.unit": P("char", lm_structure),
        "model.embedding_size": P(16, lm_structure),
        "model.cell": P("gru", lm_structure),
        "model.activation": P("relu", lm_forward, model__cell="rnn"),
        "model.layers": P(2, lm_structure),
        "model.hidden_size": P(16, lm_structure),
        "model.stacking": P("residual", lm_forward, model__layers=2),
        "model.dropout": P(0.3, lm_noise),
        "model.recurrent_dropout": P(0.3, lm_noise),
        "model.embedding_from": P(
            env.lm, lm_initial_weights, model__unit="char", model__embedding_size=16
        ),
        "data.text": P(str(env.text2), lm_data),
        "data.encoding": P("latin-1", lm_data, model__unit="char", data__text=str(env.latin_text)),
        "data.valid_fraction": P(0.5, lm_data),
        "data.documents": P("lines", lm_data),
        "data.limit": P(600, lm_data),
        "data.direction": P("backward", lm_data),
        "train.batch_size": P(2, lm_data),
        "train.bptt": P(4, weights),
        "train.lr_multipliers": P({"output": 3.0}, weights),
        "train.precision": P("bf16", weights),
    }
    probes.update(init_probes("model.init.", lm_initial_weights))
    probes.update(common_train_probes(lr=0.05, min_lr=5e-3))
    return probes


# --------------------------------------------------------------------------- the test

TREES = {
    "translation": (config.Config, translation_probes, translation_base, config.from_dict),
    "charlm": (config.LMConfig, lm_probes, lm_base, config.lm_from_dict),
}


def differ(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return not (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() != b.keys() or any(differ(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(differ(x, y) for x, y in zip(a, b))
    return a != b


def with_keys(base: dict, keys: dict) -> dict:
    data = copy.deepcopy(base)
    for key, value in keys.items():
        config.set_key(data, key.split("."), copy.deepcopy(value), f"probe key '{key}'")
    return data


def get_key(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def observe(tree: str, env: Env, probe: Probe, keys: dict):
    cls, _, base, parse = TREES[tree]
    cfg = parse(with_keys(base(env), keys))
    torch.manual_seed(0)
    return probe.observe(cfg, env)


def all_keys(tree: str) -> list[str]:
    return keys_of(TREES[tree][0])


CASES = [(tree, key) for tree in TREES for key in all_keys(tree)]


@pytest.mark.parametrize("tree", list(TREES))
def test_every_key_has_a_probe(tree, env):
    probes = TREES[tree][1](env)
    keys = set(all_keys(tree))
    listed = {k.split(":", 1)[1] for k in LISTED if k.startswith(tree + ":")}
    assert not probes.keys() & listed
    missing = sorted(keys - probes.keys() - listed)
    assert not missing, (
        f"{tree} keys without a probe (add one, or list it with a reason): {missing}"
    )
    assert not probes.keys() - keys, f"probes of keys that do not exist: {probes.keys() - keys}"
    assert all(reason.strip() for reason in LISTED.values())


@pytest.mark.parametrize("tree, key", CASES, ids=[f"{t}:{k}" for t, k in CASES])
def test_setting_a_key_changes_what_it_acts_on(tree, key, env):
    if f"{tree}:{key}" in LISTED:
        pytest.fail(f"{key} is listed ({LISTED[f'{tree}:{key}']}): remove it from CASES")
    probe = TREES[tree][1](env)[key]
    base = with_keys(TREES[tree][2](env), probe.context)
    default = get_key(base, key)
    if default is None:  # not in the base file: the dataclass default
        cfg = TREES[tree][3](base)
        default = config.to_dict(cfg)
        for part in key.split("."):
            default = default[part]
    assert differ(probe.value, default), f"the probe must move {key} away from {default!r}"
    cache_key = (tree, probe.observe.__name__, json.dumps(probe.context, sort_keys=True))
    if cache_key not in env.baselines:
        env.baselines[cache_key] = observe(tree, env, probe, probe.context)
    before = env.baselines[cache_key]
    after = observe(tree, env, probe, probe.context | {key: probe.value})
    assert differ(before, after), f"setting {key}={probe.value!r} changed nothing it acts on"
