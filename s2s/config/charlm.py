"""The char-LM config: ``s2s charlm``'s own small tree, and loading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from s2s.config.fields import (
    ACTIVATIONS,
    CELLS,
    DEVICES,
    LM_SCHEDULES,
    LM_UNITS,
    OPTIMIZERS,
    PRECISIONS,
    SEED_MAX,
    STACKINGS,
    InitConfig,
    at_least_one,
    bounded,
    choice,
    fraction,
    non_negative,
    positive,
    shrink_factor,
    text_encoding,
)
from s2s.config.loading import (
    apply_overrides,
    build_tree,
    expand_env,
    read_yaml,
    refuse_other_kind,
)
from s2s.errors import ConfigError


@dataclass(frozen=True)
class LMModelConfig:
    # byte: the 256 byte values, whatever the file's encoding (Latin-1 text included);
    # char: the characters of the training text (decoded with data.encoding)
    unit: str = choice("byte", LM_UNITS)
    embedding_size: int = positive(64)
    cell: str = choice("lstm", CELLS)  # mlstm: Krause et al. 2016
    activation: str = choice("tanh", ACTIVATIONS)
    layers: int = at_least_one(1)
    hidden_size: int = positive(512)
    stacking: str = choice("none", STACKINGS)
    dropout: float = fraction(0.0)  # on embeddings, between layers and before the output layer
    recurrent_dropout: float = fraction(0.0)
    init: InitConfig = field(default_factory=InitConfig)
    # Start the embedding from another char LM's (a checkpoint of s2s charlm train, on a
    # text with the same units; the same embedding size). With train.lr_multipliers
    # {embedding: 0} it stays that LM's: a backward LM that reads a forward one's
    # embedding, so that both fit one encoder (Peters et al. 2018 share it; the
    # translation model's model.charlm_backward)
    embedding_from: str = ""


@dataclass(frozen=True)
class LMDataConfig:
    # text files (plain or .gz; one, or a list read one after the other); ${VAR} expanded
    text: tuple[str, ...] = ()
    # stream: the files as one text; lines: every non-empty line is a document, and the
    # documents are shuffled (train.seed) before the last valid_fraction is held out
    documents: str = choice("stream", ("stream", "lines"))
    encoding: str = text_encoding("utf-8")  # model.unit char: how to decode it
    valid_fraction: float = bounded(
        0.1, 0.0, 1.0, low_open=True, high_open=True
    )  # the last part of the text validates
    limit: int = non_negative(0)  # the first N bytes only (0 = all)
    # backward: the text read from its end to its start (the held-out part the same as
    # forward's), a backward LM as in Peters et al. 2018; its features of a text are read
    # the same way (s2s charlm probe FWD BWD sets both directions side by side)
    direction: str = choice("forward", ("forward", "backward"))


@dataclass(frozen=True)
class LMTrainConfig:
    seed: int = bounded(1, 0, SEED_MAX)  # torch's generators take 64 bits
    device: str = choice("auto", DEVICES)
    threads: int = non_negative(0)
    # bf16: autocast (recurrent layers too where the CPU/GPU has bf16 kernels); auto:
    # bf16 where the hardware has it, else fp32; fp16: for GPUs, with loss scaling
    precision: str = choice("fp32", PRECISIONS)
    max_steps: int = positive(2000)
    max_minutes: float = non_negative(0.0)
    batch_size: int = positive(32)  # parallel streams through the text
    bptt: int = positive(100)  # truncated backpropagation through time: units per update
    optimizer: str = choice("adam", OPTIMIZERS)
    lr: float = positive(2e-3)
    betas: tuple[float, float] = fraction((0.9, 0.999))
    momentum: float = fraction(0.9)
    nesterov: bool = False
    weight_decay: float = non_negative(0.0)
    clip_grad_norm: float = non_negative(5.0)
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    lr_schedule: str = choice("constant", LM_SCHEDULES)
    warmup_steps: int = non_negative(0)
    decay_start: int = non_negative(0)
    decay_steps: int = non_negative(0)  # linear: 0 = until max_steps
    lr_gamma: float = shrink_factor(0.9999)
    lr_step_size: int = positive(1000)
    lr_decay: float = shrink_factor(0.5)
    min_lr: float = non_negative(1e-5)
    log_every: int = positive(100)
    valid_every: int = positive(500)
    save_every: int = positive(500)


@dataclass(frozen=True)
class LMConfig:
    model: LMModelConfig = field(default_factory=LMModelConfig)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    train: LMTrainConfig = field(default_factory=LMTrainConfig)


def _check_lm(cfg: LMConfig) -> None:
    d, t = cfg.data, cfg.train
    if not d.text or not all(d.text):
        raise ConfigError("config key 'data.text' is not set (a text file, or a list of them)")
    if t.min_lr > t.lr:
        raise ConfigError(f"train.min_lr ({t.min_lr}) is above train.lr ({t.lr})")


def lm_from_dict(data: dict) -> LMConfig:
    translation = "a translation config: train it with `s2s train`"
    refuse_other_kind(data, ("model.encoder", "model.decoder", "data.train"), translation)
    cfg = build_tree(LMConfig, data, "")
    _check_lm(cfg)
    return cfg


def load_lm(
    path: str | Path, overrides: list[str] | None = None, *, text: list[str] | None = None
) -> LMConfig:
    """A char-LM config from YAML, with overrides and ${VAR} in data.text expanded;
    ``text``: files that replace data.text (``s2s charlm train --text``)."""
    data = apply_overrides(read_yaml(path), overrides or [])
    if text:
        data.setdefault("data", {})["text"] = list(text)
    section = data.get("data")
    if isinstance(section, dict) and isinstance(section.get("text"), str):
        section["text"] = expand_env(section["text"])
    elif isinstance(section, dict) and isinstance(section.get("text"), list):
        section["text"] = [expand_env(t) if isinstance(t, str) else t for t in section["text"]]
    return lm_from_dict(data)
