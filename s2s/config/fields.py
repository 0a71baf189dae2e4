"""Config fields: the closed sets of choices, ranged numbers, and the
initialisation section both config trees share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from s2s.errors import ConfigError

LR_SCHEDULES = ("plateau", "constant", "exponential", "linear", "step", "cyclic")
SAMPLING_DECAYS = ("constant", "linear", "exponential", "inverse_sigmoid")
CELLS = ("lstm", "gru", "rnn", "peephole_lstm", "layernorm_lstm", "layernorm_gru", "mlstm")
ACTIVATIONS = ("tanh", "relu")
STACKINGS = ("none", "residual", "dense", "skip")
ATTENTIONS = ("none", "additive", "multiplicative")
BRIDGE_TYPES = ("dense", "copy")
ATTENTIONAL_VECTORS = ("tanh", "linear")
MULTIPLICATIVE_FORMS = ("general", "dot")
INIT_SCHEMES = (
    "fan_in_uniform",
    "xavier_uniform",
    "xavier_normal",
    "variance_scaling",
    "normal",
    "scaled",
    "uniform",
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
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
COMPILE_MODES = ("never", "always", "auto")
LM_UNITS = ("byte", "char")
LM_SCHEDULES = ("constant", "exponential", "linear", "step", "cyclic")
SEED_MAX = 2**63 - 1  # seeds are also mixed into others modulo 2 ** 63


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


def text_encoding(default: str) -> Any:
    """A string field naming a text encoding Python knows (``codecs.lookup``)."""
    return field(default=default, metadata={"encoding": True})


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
    # N(0, (scale / sqrt(fan_in))^2); uniform: U(+-range) for weights and embeddings alike
    # (OpenNMT-py's param_init, Joey NMT's uniform initializer). Recurrent kernels are
    # initialised per gate.
    scheme: str = choice("fan_in_uniform", INIT_SCHEMES)
    mode: str = choice("fan_in", FAN_MODES)
    distribution: str = choice("normal", DISTRIBUTIONS)
    scale: float = positive(2.0)
    std: float = positive(0.02)
    range: float = positive(0.1)  # of the uniform scheme
    # Recurrent (hidden-to-hidden) matrices: as the scheme, orthogonal per gate (Saxe et
    # al. 2014), or identity with zero biases (IRNN, Le et al. 2015; for ReLU RNNs).
    recurrent: str = choice("same", RECURRENT_INITS)
    # Jozefowicz et al. 2015: a forget-gate bias of 1 lets gradients flow early on.
    forget_bias: float = 1.0
