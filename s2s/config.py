"""The configuration: one tree of frozen dataclasses, loaded from YAML and validated once.

Every option of s2s is a field here. Loading rejects unknown keys (naming the dotted
key and the nearest valid one), values of the wrong type, choices outside their closed
set (listing the valid ones) and contradictory settings. ``KEY=VALUE`` overrides from
the command line go through the same validation.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from s2s.errors import ConfigError

LR_SCHEDULES = ("plateau", "constant", "exponential", "linear", "step", "cyclic")
SAMPLING_DECAYS = ("constant", "linear", "exponential", "inverse_sigmoid")
CELLS = ("lstm", "gru", "rnn", "peephole_lstm", "layernorm_lstm", "layernorm_gru", "mlstm")
ACTIVATIONS = ("tanh", "relu")
STACKINGS = ("none", "residual", "dense", "skip")
ATTENTIONS = ("none", "additive", "multiplicative")
MULTIPLICATIVE_FORMS = ("general", "dot")
INIT_SCHEMES = (
    "fan_in_uniform",
    "xavier_uniform",
    "xavier_normal",
    "variance_scaling",
    "normal",
    "scaled",
)
FAN_MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("uniform", "normal")
RECURRENT_INITS = ("same", "orthogonal", "identity")
TOKENIZERS = ("spm", "char", "word")
SPM_MODELS = ("unigram", "bpe")
BATCH_UNITS = ("tokens", "sentences")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adam", "adamw", "sgd")
LOSS_NORMS = ("tokens", "sentences")
PRECISIONS = ("fp32", "bf16", "fp16")
LM_UNITS = ("byte", "char")
LM_SCHEDULES = ("constant", "exponential", "linear", "step", "cyclic")


def choice(default: str, choices: tuple[str, ...]) -> Any:
    """A string field restricted to a closed set of values."""
    return field(default=default, metadata={"choices": choices})


def bounded(
    default: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A number field (or tuple of numbers) restricted to a range; loading names the key
    and the range when a value falls outside it."""
    return field(default=default, metadata={"range": (low, high, low_open, high_open)})


def positive(default: Any) -> Any:
    return bounded(default, 0, low_open=True)


def non_negative(default: Any) -> Any:
    return bounded(default, 0)


def at_least_one(default: int) -> Any:
    return bounded(default, 1)


def fraction(default: Any) -> Any:
    """[0, 1): dropout rates, momentum, averaging decays."""
    return bounded(default, 0.0, 1.0, high_open=True)


def probability(default: float) -> Any:
    return bounded(default, 0.0, 1.0)


def shrink_factor(default: float) -> Any:
    """(0, 1]: multiplicative decays."""
    return bounded(default, 0.0, 1.0, low_open=True)


def _range_text(low, high, low_open, high_open) -> str:
    if high is None:
        return f"> {low:g}" if low_open else f">= {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_range(key: str, value: Any, limits: tuple) -> None:
    low, high, low_open, high_open = limits
    for v in value if isinstance(value, tuple) else (value,):
        below = low is not None and (v <= low if low_open else v < low)
        above = high is not None and (v >= high if high_open else v > high)
        if below or above:
            raise ConfigError(f"config key '{key}' must be {_range_text(*limits)}, got {value!r}")


@dataclass(frozen=True)
class InitConfig:
    # Weight matrices (s2s/nn/init.py): fan_in_uniform U(+-1/sqrt(fan_in)); xavier_* (Glorot
    # & Bengio 2010); variance_scaling: var = scale / fan (mode), uniform or normal
    # (scale 2, fan_in = He et al. 2015); normal: N(0, std); scaled:
    # N(0, (scale / sqrt(fan_in))^2). Recurrent kernels are initialised per gate.
    scheme: str = choice("fan_in_uniform", INIT_SCHEMES)
    mode: str = choice("fan_in", FAN_MODES)
    distribution: str = choice("normal", DISTRIBUTIONS)
    scale: float = positive(2.0)
    std: float = positive(0.02)
    # Recurrent (hidden-to-hidden) matrices: as the scheme, orthogonal per gate (Saxe et
    # al. 2014), or identity with zero biases (IRNN, Le et al. 2015; for ReLU RNNs).
    recurrent: str = choice("same", RECURRENT_INITS)
    # Jozefowicz et al. 2015: a forget-gate bias of 1 lets gradients flow early on.
    forget_bias: float = 1.0


@dataclass(frozen=True)
class EncoderConfig:
    cell: str = choice("lstm", CELLS)
    activation: str = choice("tanh", ACTIVATIONS)  # vanilla rnn only
    bidirectional: bool = True
    layers: int = at_least_one(1)
    hidden_size: int = positive(256)  # per direction
    stacking: str = choice("none", STACKINGS)


@dataclass(frozen=True)
class DecoderConfig:
    cell: str = choice("lstm", CELLS)
    activation: str = choice("tanh", ACTIVATIONS)
    layers: int = at_least_one(1)
    hidden_size: int = positive(256)
    stacking: str = choice("none", STACKINGS)
    # Luong et al. 2015 §3.3: feed the previous attentional vector to the next step.
    # Off by default: without it, teacher-forced training runs one fused RNN kernel.
    input_feeding: bool = False


@dataclass(frozen=True)
class ModelConfig:
    embedding_size: int = positive(256)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    attention: str = choice("multiplicative", ATTENTIONS)
    multiplicative_form: str = choice("general", MULTIPLICATIVE_FORMS)
    attention_size: int = positive(256)  # hidden size of the additive scorer
    bridge: bool = True  # decoder state from the encoder's final state
    dropout: float = fraction(0.3)  # between layers and on the attentional vector
    embedding_dropout: float = fraction(0.3)
    # Variational dropout on the recurrent state h: one mask per sequence (Gal &
    # Ghahramani 2016). Above 0, recurrent layers run as step loops (slower).
    recurrent_dropout: float = fraction(0.0)
    tie_target_embeddings: bool = True  # Press & Wolf 2017
    init: InitConfig = field(default_factory=InitConfig)
    # Start from a character language model (a checkpoint of s2s charlm train): its
    # recurrent stack goes into the encoder (its forward direction) and/or the decoder,
    # its embedding rows into the rows of the characters both vocabularies hold. Needs
    # data.tokenizer.kind char and matching sizes; applies when a run starts.
    charlm: str = ""
    charlm_into: str = choice("encoder", ("encoder", "decoder", "both"))


@dataclass(frozen=True)
class TokenizerConfig:
    kind: str = choice("spm", TOKENIZERS)
    spm_model: str = choice("unigram", SPM_MODELS)
    vocab_size: int = at_least_one(8000)
    joint: bool = True  # one model / vocabulary for both sides
    character_coverage: float = bounded(1.0, 0.98, 1.0)  # SentencePiece's range
    min_freq: int = at_least_one(1)  # char and word vocabularies
    threads: int = at_least_one(2)  # SentencePiece training threads


@dataclass(frozen=True)
class DataConfig:
    src_lang: str = "en"
    tgt_lang: str = "de"
    # Path prefixes: files are PREFIX.LANG or PREFIX.LANG.gz. ${VAR} is expanded; a
    # prefix naming an unset variable falls back to the hub dataset below.
    train: str = ""
    valid: str = ""
    test: str = ""
    hub: str = ""  # Hugging Face dataset name, e.g. bentrevett/multi30k
    hub_train: str = "train"
    hub_valid: str = "validation"
    hub_test: str = "test"
    encoding: str = "utf-8"
    train_limit: int = non_negative(0)  # keep the first N training pairs (0 = all)
    valid_limit: int = non_negative(0)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    reverse_source: bool = False  # Sutskever et al. 2014
    max_len: int = positive(100)  # training pairs longer than this (in tokens) are ...
    long_pairs: str = choice("drop", ("drop", "truncate"))  # ... dropped or truncated
    batch_size: int = positive(4096)
    batch_unit: str = choice("tokens", BATCH_UNITS)
    bucket_pool: int = positive(50)  # batches sorted together by length before shuffling


@dataclass(frozen=True)
class SamplingConfig:
    # Scheduled sampling (Bengio et al. 2015): eps_i, the probability of feeding the
    # true previous token at update i. constant: k; linear: max(minimum, k - c*i);
    # exponential: k**i (k < 1); inverse_sigmoid: k / (k + exp(i/k)) (k >= 1).
    # The default (constant 1) is plain teacher forcing.
    decay: str = choice("constant", SAMPLING_DECAYS)
    k: float = non_negative(1.0)
    c: float = non_negative(0.0)
    minimum: float = probability(0.0)
    sample: bool = False  # feed a sample from the model's distribution, not its argmax
    # sequential: Bengio et al.'s step loop (guesses from the model's own mixed prefix);
    # parallel: guesses from one extra teacher-forced pass, fused kernels throughout
    # (Duckworth et al. 2019), about 2x faster on CPU.
    mode: str = choice("sequential", ("sequential", "parallel"))


@dataclass(frozen=True)
class DistillConfig:
    # Word-level knowledge distillation (Hinton et al. 2015; Kim & Rush 2016): the loss
    # is (1 - weight) * CE(gold) + weight * T^2 * CE(teacher's softened distribution).
    teacher: str = ""  # checkpoint of the teacher (same tokenizers); "" = off
    temperature: float = positive(1.0)
    weight: float = probability(0.5)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1
    device: str = choice("auto", DEVICES)
    threads: int = non_negative(0)  # CPU threads (0 = torch default)
    # Mixed precision: forward and backward passes under torch.autocast in bfloat16 or
    # float16; weights, optimizer state and checkpoints stay float32, the softmax and
    # loss are float32. fp16 adds dynamic loss scaling: a step whose gradients overflow
    # is skipped and the scale halved. Validation and translation run in float32.
    precision: str = choice("fp32", PRECISIONS)
    max_steps: int = non_negative(0)  # 0 = no limit
    max_epochs: int = non_negative(0)  # 0 = no limit
    max_minutes: float = non_negative(0.0)  # training time budget (0 = no limit)
    optimizer: str = choice("adam", OPTIMIZERS)
    lr: float = positive(1e-3)
    betas: tuple[float, float] = fraction((0.9, 0.999))  # adam, adamw
    momentum: float = fraction(0.9)  # sgd
    nesterov: bool = False  # sgd (Sutskever et al. 2013)
    weight_decay: float = non_negative(0.0)
    clip_grad_norm: float = non_negative(5.0)  # global gradient-norm clipping (0 = off)
    clip_grad_value: float = non_negative(0.0)  # clip each gradient entry to [-v, v] (0 = off)
    loss_norm: str = choice("tokens", LOSS_NORMS)  # average the loss per token or sentence
    accumulate: int = at_least_one(1)  # batches whose gradients are summed into one update
    # Learning-rate multipliers by parameter-name prefix, e.g. {decoder.output: 2.0}
    # (a higher rate for new layers when fine-tuning); the longest matching prefix wins.
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    # Exponential moving average of the weights (Polyak & Juditsky 1992; OpenNMT-py's
    # average_decay): validation, best.pt and translation use the average. The decay at
    # update t is min(ema_decay, (1 + t) / (10 + t)). 0 = off.
    ema_decay: float = fraction(0.0)
    l1: float = non_negative(0.0)  # L1 penalty coefficient on weight matrices (summed |w|)
    # Max-norm constraint (Srebro & Shraibman 2005; Hinton et al. 2012): rows of the
    # embedding and output matrices are rescaled to at most this L2 norm (0 = off).
    max_norm: float = non_negative(0.0)
    # Non-finite loss or gradients: the update is skipped and the learning rate is
    # multiplied by bad_step_lr_factor; training stops after max_bad_steps in a row.
    bad_step_lr_factor: float = shrink_factor(0.5)
    max_bad_steps: int = at_least_one(5)
    # Diagnostics: per-module ||update|| / ||weight|| every N steps (0 = off), with a
    # warning outside update_ratio_band; histograms of weights, gradients and
    # activations to TensorBoard every N steps (0 = off).
    diagnostics_every: int = non_negative(0)
    update_ratio_band: tuple[float, float] = positive((1e-4, 1e-2))
    histograms_every: int = non_negative(0)
    label_smoothing: float = fraction(0.0)
    scheduled_sampling: SamplingConfig = field(default_factory=SamplingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    log_every: int = positive(100)
    valid_every: int = positive(500)
    save_every: int = positive(500)  # steps between checkpoints
    keep_checkpoints: int = non_negative(
        0
    )  # also keep the last N as step-STEP.pt (for s2s average)
    # Learning-rate schedule (s2s/training/schedules.py). plateau: lr x lr_decay when validation
    # BLEU has not improved for `patience` validations, down to min_lr, and training
    # stops when a plateau comes at min_lr (if stop_at_min_lr). linear: from lr at
    # decay_start down to min_lr over decay_steps (0 = until max_steps). exponential:
    # x lr_gamma per step after decay_start. step: x lr_decay every lr_step_size steps
    # after decay_start. cyclic: triangular between min_lr and lr, half-cycle
    # lr_step_size. warmup_steps of linear warm-up go in front of any of them.
    lr_schedule: str = choice("plateau", LR_SCHEDULES)
    warmup_steps: int = non_negative(0)
    decay_start: int = non_negative(0)
    decay_steps: int = non_negative(0)
    lr_gamma: float = shrink_factor(0.9999)
    lr_step_size: int = positive(1000)
    lr_decay: float = shrink_factor(0.5)
    patience: int = at_least_one(2)
    min_lr: float = non_negative(1e-5)
    stop_at_min_lr: bool = True
    early_stopping: int = non_negative(0)  # stop after N validations without improvement (0 = off)
    valid_batch_size: int = positive(256)  # sentences per decoding batch
    valid_beam: int = at_least_one(1)  # beam width of validation decoding (1 = greedy)
    max_output_ratio: float = positive(2.0)  # decode at most ratio * source length + 10 tokens


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- char LM
# ``s2s charlm``: a character / byte language model, its own small config tree.


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


@dataclass(frozen=True)
class LMDataConfig:
    text: str = ""  # a text file (plain or .gz); ${VAR} expanded
    encoding: str = "utf-8"  # model.unit char: how to decode it
    valid_fraction: float = bounded(
        0.1, 0.0, 1.0, low_open=True, high_open=True
    )  # the last part of the text validates
    limit: int = non_negative(0)  # the first N bytes only (0 = all)


@dataclass(frozen=True)
class LMTrainConfig:
    seed: int = 1
    device: str = choice("auto", DEVICES)
    threads: int = non_negative(0)
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
    if not d.text:
        raise ConfigError("config key 'data.text' is not set (a text file)")
    if t.min_lr > t.lr:
        raise ConfigError(f"train.min_lr ({t.min_lr}) is above train.lr ({t.lr})")


def lm_from_dict(data: dict) -> LMConfig:
    cfg = _build(LMConfig, data, "")
    _check_lm(cfg)
    return cfg


def load_lm(path: str | Path, overrides: list[str] | None = None) -> LMConfig:
    """A char-LM config from YAML, with overrides and ${VAR} in data.text expanded."""
    data = apply_overrides(read_yaml(path), overrides or [])
    section = data.get("data")
    if isinstance(section, dict) and isinstance(section.get("text"), str):
        section["text"] = expand_env(section["text"])
    return lm_from_dict(data)


# --------------------------------------------------------------------------- loading


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Check (and lightly coerce) one leaf value against its type hint."""
    origin = typing.get_origin(hint)
    if origin is dict:
        key_t, value_t = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping")
        return {
            _convert(k, key_t, f"{key}.{k}"): _convert(v, value_t, f"{key}.{k}")
            for k, v in value.items()
        }
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key '{key}' must be a list of {len(args)} values")
        return tuple(_convert(v, a, key) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} for {key}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or 'top level'}' must be a mapping")
    hints = _type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            near = difflib.get_close_matches(str(key), list(names), n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}")
        hint_t = hints[key]
        if dataclasses.is_dataclass(hint_t):
            kwargs[key] = _build(hint_t, value, dotted)
            continue
        value = _convert(value, hint_t, dotted)
        choices = names[key].metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(
                f"config key '{dotted}' is '{value}'; valid values: {', '.join(choices)}"
            )
        limits = names[key].metadata.get("range")
        if limits is not None:
            check_range(dotted, value, limits)
        kwargs[key] = value
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    """Settings that are valid alone but not together (ranges are on the fields)."""
    m, d, t = cfg.model, cfg.data, cfg.train
    if t.lr_schedule == "linear" and t.decay_steps <= 0 and t.max_steps <= t.decay_start:
        raise ConfigError(
            "train.lr_schedule 'linear' needs train.decay_steps, or train.max_steps "
            "beyond train.decay_start"
        )
    ss = t.scheduled_sampling
    if ss.decay == "constant" and not 0.0 <= ss.k <= 1.0:
        raise ConfigError("train.scheduled_sampling.k must be in [0, 1] for decay 'constant'")
    if ss.decay == "exponential" and not 0.0 < ss.k <= 1.0:
        raise ConfigError("train.scheduled_sampling.k must be in (0, 1] for decay 'exponential'")
    if ss.decay == "inverse_sigmoid" and ss.k < 1.0:
        raise ConfigError("train.scheduled_sampling.k must be >= 1 for decay 'inverse_sigmoid'")
    for prefix, value in t.lr_multipliers.items():
        if value < 0:
            raise ConfigError(f"train.lr_multipliers.{prefix} must be >= 0")
    if t.min_lr > t.lr:
        raise ConfigError(f"train.min_lr ({t.min_lr}) is above train.lr ({t.lr})")
    low, high = t.update_ratio_band
    if low > high:
        raise ConfigError(f"train.update_ratio_band: {low} is above {high}")
    enc_size = m.encoder.hidden_size * (2 if m.encoder.bidirectional else 1)
    if (
        m.attention == "multiplicative"
        and m.multiplicative_form == "dot"
        and enc_size != m.decoder.hidden_size
    ):
        raise ConfigError(
            "model.multiplicative_form 'dot' needs encoder output size "
            f"({enc_size}) equal to model.decoder.hidden_size ({m.decoder.hidden_size}); "
            "use 'general'"
        )
    if d.tokenizer.kind == "spm" and d.tokenizer.vocab_size < 8:
        raise ConfigError("config key 'data.tokenizer.vocab_size' is too small for spm")
    if not d.train:
        raise ConfigError("config key 'data.train' is not set (a path prefix)")
    if m.charlm and d.tokenizer.kind != "char":
        raise ConfigError("model.charlm needs data.tokenizer.kind char (a character model)")


def from_dict(data: dict) -> Config:
    cfg = _build(Config, data, "")
    _check(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists), ready for YAML or a checkpoint."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_key(data: dict, path: list[str], value: Any, what: str) -> None:
    """Set a dotted key (as its parts) in a nested dict; ``what`` names it in errors."""
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: '{part}' is not a section")
        node = child
    node[path[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict; validation happens in from_dict."""
    for text in overrides:
        path, value = parse_override(text)
        set_key(data, path, value, f"override '{text}'")
    return data


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(text: str) -> str:
    """Expand ${VAR} where VAR is set and non-empty; leave the others in place (then
    ``data.load_split`` falls back to the hub dataset)."""
    return _ENV.sub(lambda m: os.environ.get(m.group(1)) or m.group(0), text)


def unset_variables(text: str) -> list[str]:
    return _ENV.findall(text)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".splitlines()[0]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides, expand ${VAR} in data paths, validate."""
    return from_data(apply_overrides(read_yaml(path), overrides or []))


def from_data(data: dict) -> Config:
    """A config from a nested dict as read from YAML: ${VAR} in data paths expanded,
    then validated."""
    section = data.get("data")
    if isinstance(section, dict):
        for key in ("train", "valid", "test"):
            if isinstance(section.get(key), str):
                section[key] = expand_env(section[key])
    return from_dict(data)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def diff(a: Any, b: Any) -> list[str]:
    """Dotted keys whose values differ between two configs."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(flat(v, key + "."))
            else:
                out[key] = v
        return out

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
