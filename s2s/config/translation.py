"""The translation config: model, data and train sections, their checks of
settings that are valid alone but not together, and loading them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from s2s.config.fields import (
    ACTIVATIONS,
    ATTENTIONAL_VECTORS,
    ATTENTIONS,
    BATCH_UNITS,
    BRIDGE_TYPES,
    CELLS,
    COMPILE_MODES,
    DEVICES,
    LOSS_NORMS,
    LR_SCHEDULES,
    MULTIPLICATIVE_FORMS,
    OPTIMIZERS,
    PRECISIONS,
    SAMPLING_DECAYS,
    SEED_MAX,
    SPM_MODELS,
    STACKINGS,
    TOKENIZERS,
    InitConfig,
    at_least_one,
    bounded,
    choice,
    fraction,
    non_negative,
    positive,
    probability,
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
    # The attentional vector h~ from the decoder state h and the context c: tanh(W [h; c]
    # + b) (Luong et al. 2015, eq. 5), or linear: W [h; c] + b (OpenNMT-py's mlp attention)
    attentional_vector: str = choice("tanh", ATTENTIONAL_VECTORS)
    bridge: bool = True  # decoder state from the encoder's final state (else zeros)
    # ... through a tanh layer (Joey NMT's bridge), or copied as it is, layer by layer
    # (OpenNMT-py's default, Joey NMT's "last"; needs equal state sizes)
    bridge_type: str = choice("dense", BRIDGE_TYPES)
    dropout: float = fraction(0.3)  # between layers and on the attentional vector
    embedding_dropout: float = fraction(0.3)
    # Variational dropout on the recurrent state h: one mask per sequence (Gal &
    # Ghahramani 2016). Above 0, recurrent layers run as step loops (slower).
    recurrent_dropout: float = fraction(0.0)
    # Word dropout (Bowman et al. 2016): while training, each decoder input token after
    # BOS becomes <unk> with this probability, so that the decoder cannot lean on the
    # target prefix alone and must use the source (a decoder started from a char LM
    # otherwise ignores it: BENCHMARKS.md, issue 14, item 4). Search is unchanged.
    word_dropout: float = fraction(0.0)
    tie_target_embeddings: bool = True  # Press & Wolf 2017
    init: InitConfig = field(default_factory=InitConfig)
    # Start from a character language model (a checkpoint of s2s charlm train): its
    # recurrent stack goes into the encoder (its forward direction) and/or the decoder,
    # its embedding rows into the rows of the characters both vocabularies hold. Needs
    # data.tokenizer.kind char and matching sizes; applies when a run starts.
    charlm: str = ""
    charlm_into: str = choice("encoder", ("encoder", "decoder", "both"))
    # A second char LM, of the target language, for the decoder: set, model.charlm (if
    # any) goes into the encoder only (charlm_into encoder)
    charlm_decoder: str = ""
    # A backward char LM (data.direction backward) of the source language, for the
    # encoder's backward direction, which reads the source from its end as the LM read
    # its text (Peters et al. 2018 pair the two). Its embedding rows go in only where no
    # forward LM goes into the encoder.
    charlm_backward: str = ""


@dataclass(frozen=True)
class TokenizerConfig:
    kind: str = choice("spm", TOKENIZERS)
    spm_model: str = choice("unigram", SPM_MODELS)
    vocab_size: int = at_least_one(8000)
    joint: bool = True  # one model / vocabulary for both sides
    # With joint: "all" gives the decoder the whole joint vocabulary; "train" only the
    # pieces the target side of the training data uses (a smaller, faster output layer).
    target_vocab: str = choice("all", ("all", "train"))
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
    encoding: str = text_encoding("utf-8")
    train_limit: int = non_negative(0)  # keep the first N training pairs (0 = all)
    valid_limit: int = non_negative(0)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    reverse_source: bool = False  # Sutskever et al. 2014
    max_len: int = positive(100)  # training pairs longer than this (in tokens) are ...
    long_pairs: str = choice("drop", ("drop", "truncate"))  # ... dropped or truncated
    batch_size: int = positive(4096)
    batch_unit: str = choice("tokens", BATCH_UNITS)
    bucket_pool: int = positive(50)  # batches sorted together by length before shuffling
    # Training batches: lengths padded and sentences per batch rounded down to multiples
    # of this (fairseq's pad_to_multiple / required_batch_size_multiple): a few tensor
    # shapes instead of one per batch, so oneDNN reuses its kernels (faster) and the
    # allocator its blocks (less memory); docs/speed.md. 1 = off.
    shape_multiple: int = positive(1)


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
    seed: int = bounded(1, 0, SEED_MAX)  # torch's generators take 64 bits
    device: str = choice("auto", DEVICES)
    threads: int = non_negative(0)  # CPU threads (0 = torch default)
    # Mixed precision: forward and backward passes under torch.autocast in bfloat16 or
    # float16; weights, optimizer state and checkpoints stay float32, the softmax and
    # loss are float32. fp16 adds dynamic loss scaling: a step whose gradients overflow
    # is skipped and the scale halved; meant for GPUs (on a CPU it runs, with a warning).
    # Validation runs in float32; s2s translate decodes with a bf16 copy of the model
    # where the hardware has bf16 (its --precision auto).
    # auto: bf16 where the hardware has it (a GPU with bf16, a CPU listing avx512_bf16
    # or AMX), else fp32; read at run time, so one config runs best on either.
    precision: str = choice("fp32", PRECISIONS)
    # torch.compile for the token loss (s2s/nn/fused.py) and the input-feeding decoder step
    # (s2s/nn/feeding.py): never, always, or auto (when a C++ compiler or Triton is at
    # hand). Same values up to rounding, less time; seconds to compile (cached on disk).
    compile: str = choice("never", COMPILE_MODES)
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
    # Sampled softmax (Jean et al. 2015; s2s/nn/sampled.py): in training, the output layer
    # and loss over this many columns, the batch's target pieces and others drawn at
    # random, corrected for the draw; validation and decoding use them all. 0 = off.
    # sampled_softmax_until: from this update on, the whole output layer (0 = never).
    sampled_softmax: int = non_negative(0)
    sampled_softmax_until: int = non_negative(0)
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


def _check(cfg: Config) -> None:
    """Settings that are valid alone but not together (ranges are on the fields)."""
    m, d, t = cfg.model, cfg.data, cfg.train
    if t.lr_schedule == "linear" and t.decay_steps <= 0 and t.max_steps <= 0:
        raise ConfigError(
            "train.lr_schedule 'linear' needs train.decay_steps or train.max_steps (its "
            "decay runs from train.decay_start until one of them)"
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
    if t.sampled_softmax and t.distill.teacher and t.distill.weight > 0:
        raise ConfigError(
            "train.sampled_softmax and train.distill.teacher together: distillation needs "
            "the teacher's whole distribution; set one of them to off"
        )
    if t.sampled_softmax_until and not t.sampled_softmax:
        raise ConfigError("train.sampled_softmax_until is set but train.sampled_softmax is 0")
    low, high = t.update_ratio_band
    if low > high:
        raise ConfigError(f"train.update_ratio_band: {low} is above {high}")
    _check_model(m, d)


def _check_model(m, d) -> None:
    """The model's settings against each other and the data's."""
    for side in ("encoder", "decoder"):
        rnn = getattr(m, side)
        if rnn.activation != "tanh" and rnn.cell != "rnn":
            raise ConfigError(
                f"model.{side}.activation '{rnn.activation}' applies to cell rnn only; "
                f"model.{side}.cell is '{rnn.cell}'"
            )
    enc_size = m.encoder.hidden_size * (2 if m.encoder.bidirectional else 1)
    if m.bridge_type == "copy" and not m.bridge:
        raise ConfigError("model.bridge_type 'copy' needs model.bridge true (false: zeros)")
    if m.bridge and m.bridge_type == "copy" and enc_size != m.decoder.hidden_size:
        raise ConfigError(
            f"model.bridge_type 'copy' needs the encoder's state size ({enc_size}: "
            "model.encoder.hidden_size, doubled when bidirectional) equal to "
            f"model.decoder.hidden_size ({m.decoder.hidden_size}); use 'dense'"
        )
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
        raise ConfigError(
            "config key 'data.tokenizer.vocab_size' is too small for spm (at least 8)"
        )
    if not d.train:
        raise ConfigError("config key 'data.train' is not set (a path prefix)")
    if d.tokenizer.target_vocab != "all" and not d.tokenizer.joint:
        raise ConfigError(
            "data.tokenizer.target_vocab 'train' needs data.tokenizer.joint true (a separate "
            "target tokenizer already holds only the target side's pieces)"
        )
    for key in ("charlm", "charlm_decoder", "charlm_backward"):
        if getattr(m, key) and d.tokenizer.kind != "char":
            raise ConfigError(f"model.{key} needs data.tokenizer.kind char (a character model)")
    if m.charlm_decoder and m.charlm and m.charlm_into != "encoder":
        raise ConfigError(
            f"model.charlm_decoder is set, so model.charlm goes into the encoder only; "
            f"model.charlm_into is '{m.charlm_into}' (set it to encoder)"
        )
    if m.charlm_backward and not m.encoder.bidirectional:
        raise ConfigError(
            "model.charlm_backward goes into the encoder's backward direction, but "
            "model.encoder.bidirectional is false"
        )


def from_dict(data: dict) -> Config:
    lm = "a char-LM config: train it with `s2s charlm train`"
    refuse_other_kind(data, ("model.unit", "data.text", "data.documents"), lm)
    cfg = build_tree(Config, data, "")
    _check(cfg)
    return cfg


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
