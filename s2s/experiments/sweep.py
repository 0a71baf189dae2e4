"""Sweep files of ``s2s compare``: what to train (variants x seeds) and how to decode it.

A sweep file names a base config, the variants to compare (named variants, a grid, or
a random search over config keys), the seeds to run each with, and the decoding of the
evaluation split: one beam for all (``beam``), or a decoding-only axis (``decode``:
named beam widths and length penalties, each applied to every trained run)::

    base: multi30k_en_de.yaml      # config path, relative to the sweep file
    set: {train.max_steps: 800}    # overrides for every variant (optional)
    seeds: [1, 2, 3]               # default [1]
    baseline: lstm                 # a row of the report; default: the first
    variants:                      # exactly one of variants, grid, random
      lstm: {}
      gru: {model.encoder.cell: gru, model.decoder.cell: gru}
    # grid: {model.attention: [additive, multiplicative], data.reverse_source: [false, true]}
    # random: {trials: 8, seed: 0, space: {train.lr: {log_uniform: [1e-4, 1e-2]},
    #          model.dropout: {uniform: [0.1, 0.5]}, model.encoder.cell: {choice: [lstm, gru]}}}
    split: test                    # test or valid (default test)
    beam: 1                        # 1 = greedy; or instead:
    # decode: {beam1: {beam: 1}, beam10-lp1: {beam: 10, length_penalty: 1.0}}
    significance: ar               # per-seed test: ar (approximate randomization) or bs
    samples: 0                     # trials / resamples (0 = sacrebleu's defaults)

The report's rows are the variants, or with ``decode`` the decodings (one variant) or
``VARIANT/DECODING`` (several).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2s import config as config_mod
from s2s.config import Config
from s2s.config.fields import SEED_MAX
from s2s.config.loading import NUMBER
from s2s.errors import ConfigError

SWEEP_KEYS = ("base", "set", "seeds", "baseline", "variants", "grid", "random")
SWEEP_KEYS += ("split", "beam", "decode", "significance", "samples")
SPACES = ("choice", "uniform", "log_uniform", "int")


@dataclass(frozen=True)
class Decoding:
    """How every run decodes the evaluation split. The unnamed one is a sweep's single
    ``beam`` (files SPLIT.hyp and result.json); a named one of ``decode`` writes
    SPLIT.NAME.hyp and result.NAME.json. ``length_penalty``: GNMT's alpha (0 = off)."""

    name: str = ""
    beam: int = 1
    length_penalty: float = 0.0

    def hyp_file(self, split: str) -> str:
        return f"{split}.{self.name}.hyp" if self.name else f"{split}.hyp"

    @property
    def result_file(self) -> str:
        return f"result.{self.name}.json" if self.name else "result.json"


@dataclass(frozen=True)
class Sweep:
    base: Path
    variants: dict[str, dict[str, Any]]  # name -> {dotted key: value}
    settings: dict[str, Any] = field(default_factory=dict)  # for every variant
    seeds: tuple[int, ...] = (1,)
    baseline: str = ""  # a row name
    split: str = "test"
    decodings: tuple[Decoding, ...] = (Decoding(),)
    significance: str = "ar"
    samples: int = 0  # trials / resamples of the paired test (0 = sacrebleu's default)

    @property
    def rows(self) -> list[tuple[str, str, Decoding]]:
        """The report's rows: (name, variant, decoding)."""
        return row_names(self.variants, self.decodings)


def row_names(variants: dict, decodings: tuple[Decoding, ...]) -> list[tuple[str, str, Decoding]]:
    rows = []
    for variant in variants:
        for dec in decodings:
            if not dec.name:
                name = variant
            else:
                name = dec.name if len(variants) == 1 else f"{variant}/{dec.name}"
            rows.append((name, variant, dec))
    return rows


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    cfg: Config
    folder: Path


# --------------------------------------------------------------------------- the sweep


def _mapping(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping of config keys to values")
    return value


def folder_name(text: str) -> str:
    """A variant name usable as a folder name."""
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text) or "_"


def grid_variants(grid: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every combination of the listed values, named ``key=value,...`` by the keys' last
    parts (whole keys where two share a last part)."""
    if not grid:
        raise ConfigError("sweep grid needs at least one key with a list of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep grid key '{key}' needs a non-empty list of values")
    # 1e-3 is text to YAML 1.1 but a number to the config: as a number here too, so that
    # [0.001, 1e-3] is one value listed twice, not two variants of one config
    grid = {k: [_exponent_number(v) for v in values] for k, values in grid.items()}
    keys = list(grid)
    last = [k.split(".")[-1] for k in keys]
    short = [s if last.count(s) == 1 else k for s, k in zip(last, keys)]
    texts = [_texts(key, grid[key]) for key in keys]
    variants = {}
    for combo in itertools.product(*(range(len(grid[k])) for k in keys)):
        name = ",".join(f"{s}={t[i]}" for s, t, i in zip(short, texts, combo))
        variants[folder_name(name)] = {k: grid[k][i] for k, i in zip(keys, combo)}
    return variants


def _texts(key: str, values: list) -> list[str]:
    """How a grid key's values read in run names: short (``_text``), or in full where two
    would read the same; a value listed twice is an error."""
    short = [_text(v) for v in values]
    if len(set(short)) == len(short):
        return short
    full = [repr(v) if isinstance(v, float) else _text(v) for v in values]
    if len(set(full)) < len(full):
        raise ConfigError(f"sweep grid key '{key}' lists a value twice: {values}")
    return full


def _exponent_number(value: Any) -> Any:
    if isinstance(value, str) and "e" in value.lower() and NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _draw(rng: random.Random, key: str, spec: Any) -> Any:
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SPACES:
        raise ConfigError(
            f"sweep random space '{key}' must be one of {{{': ..., '.join(SPACES)}: ...}}"
        )
    kind, arg = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise ConfigError(f"sweep random space '{key}': choice needs a non-empty list")
        return rng.choice(arg)
    numbers = isinstance(arg, list) and all(isinstance(x, (int, float)) for x in arg)
    if not (numbers and len(arg) == 2):
        raise ConfigError(f"sweep random space '{key}': {kind} needs [low, high]")
    low, high = arg
    if low > high or (kind == "log_uniform" and low <= 0):
        raise ConfigError(f"sweep random space '{key}': bad range [{low}, {high}] for {kind}")
    if kind == "uniform":
        return rng.uniform(low, high)
    if kind == "log_uniform":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    return rng.randint(int(low), int(high))


def random_variants(spec: dict) -> dict[str, dict[str, Any]]:
    """``trials`` draws from ``space`` (Bergstra & Bengio 2012), seeded by ``seed``."""
    unknown = set(spec) - {"trials", "seed", "space"}
    if unknown:
        raise ConfigError(f"sweep random: unknown key '{sorted(unknown)[0]}' (trials, seed, space)")
    trials, space = spec.get("trials"), _mapping(spec.get("space"), "sweep random space")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1 or not space:
        raise ConfigError("sweep random needs trials (a positive integer) and a space")
    rng = random.Random(spec.get("seed", 0))
    # unpadded names: more trials later keep the earlier trials' folders (and draws)
    return {
        f"trial-{i + 1}": {key: _draw(rng, key, space[key]) for key in space} for i in range(trials)
    }


def _named_variants(raw: dict) -> dict[str, dict[str, Any]]:
    """A sweep's ``variants`` by folder name; two names that make one folder are an error."""
    variants, written = {}, {}
    for name, value in raw.items():
        safe = folder_name(str(name))
        if safe in variants:
            raise ConfigError(
                f"sweep variants '{written[safe]}' and '{name}' both make the folder "
                f"'{safe}'; rename one"
            )
        variants[safe], written[safe] = _mapping(value, f"sweep variant '{name}'"), name
    return variants


def read_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    data = config_mod.read_yaml(path)
    unknown = [k for k in data if k not in SWEEP_KEYS]
    if unknown:
        valid = ", ".join(SWEEP_KEYS)
        raise ConfigError(f"sweep {path}: unknown key '{unknown[0]}' (valid: {valid})")
    kinds = [k for k in ("variants", "grid", "random") if k in data]
    if len(kinds) != 1:
        raise ConfigError(f"sweep {path} needs exactly one of variants, grid, random")
    if not isinstance(data.get("base"), str):
        raise ConfigError(f"sweep {path} needs base: the path of a config")
    if kinds[0] == "variants":
        variants = _named_variants(_mapping(data["variants"], "sweep variants"))
    elif kinds[0] == "grid":
        variants = grid_variants(_mapping(data["grid"], "sweep grid"))
    else:
        variants = random_variants(_mapping(data["random"], "sweep random"))
    if not variants:
        raise ConfigError(f"sweep {path} has no variants")
    seeds = data.get("seeds", [1])
    if not (isinstance(seeds, list) and seeds and all(_is_seed(s) for s in seeds)):
        raise ConfigError(
            f"sweep {path}: seeds must be a non-empty list of integers from 0 to {SEED_MAX}"
        )
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"sweep {path}: seeds repeat")
    decodings = _decodings(data, path)
    names = [name for name, _, _ in row_names(variants, decodings)]
    baseline = str(data.get("baseline", names[0]))
    if baseline not in names and folder_name(baseline) in names:
        baseline = folder_name(baseline)  # a variant named as written in the file
    if baseline not in names:
        raise ConfigError(
            f"sweep {path}: baseline '{baseline}' is not one of its rows ({', '.join(names)})"
        )
    split = data.get("split", "test")
    significance, samples = data.get("significance", "ar"), data.get("samples", 0)
    if split not in ("test", "valid"):
        raise ConfigError(f"sweep {path}: split must be test or valid, got {split!r}")
    if significance not in ("ar", "bs"):
        raise ConfigError(f"sweep {path}: significance must be ar or bs, got {significance!r}")
    if not isinstance(samples, int) or samples < 0:
        raise ConfigError(f"sweep {path}: samples must be an integer >= 0")
    base = path.parent / data["base"]
    return Sweep(
        base=base,
        variants=variants,
        settings=_mapping(data.get("set"), "sweep set"),
        seeds=tuple(seeds),
        baseline=baseline,
        split=split,
        decodings=decodings,
        significance=significance,
        samples=samples,
    )


def _decodings(data: dict, path: Path) -> tuple[Decoding, ...]:
    if "decode" not in data:
        beam = data.get("beam", 1)
        if not isinstance(beam, int) or isinstance(beam, bool) or beam < 1:
            raise ConfigError(f"sweep {path}: beam must be a positive integer")
        return (Decoding(beam=beam),)
    if "beam" in data:
        raise ConfigError(f"sweep {path}: give beam or decode, not both")
    raw = _mapping(data["decode"], "sweep decode")
    if not raw:
        raise ConfigError(f"sweep {path}: decode needs at least one named decoding")
    decodings = []
    for name, spec in raw.items():
        spec = _mapping(spec, f"sweep decode '{name}'")
        unknown = set(spec) - {"beam", "length_penalty"}
        if unknown:
            raise ConfigError(
                f"sweep decode '{name}': unknown key '{sorted(unknown)[0]}' (beam, length_penalty)"
            )
        beam, alpha = spec.get("beam", 1), spec.get("length_penalty", 0.0)
        if not isinstance(beam, int) or isinstance(beam, bool) or beam < 1:
            raise ConfigError(f"sweep decode '{name}': beam must be a positive integer")
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha < 0:
            raise ConfigError(f"sweep decode '{name}': length_penalty must be a number >= 0")
        if beam == 1 and alpha > 0:
            raise ConfigError(
                f"sweep decode '{name}': a length penalty changes nothing at beam 1 (greedy)"
            )
        safe = folder_name(str(name))
        if any(d.name == safe for d in decodings):
            raise ConfigError(f"sweep decode '{name}': two decodings named '{safe}' in files")
        decodings.append(Decoding(safe, beam, float(alpha)))
    return tuple(decodings)


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX


def variant_config(sweep: Sweep, variant: str, seed: int) -> Config:
    data = config_mod.read_yaml(sweep.base)
    keys = {**sweep.settings, **sweep.variants[variant], "train.seed": seed}
    try:
        for key, value in keys.items():
            config_mod.set_key(data, str(key).split("."), value, f"key '{key}'")
        return config_mod.from_data(data)
    except ConfigError as err:
        raise ConfigError(f"sweep variant '{variant}': {err}") from None


def plan(sweep: Sweep, out: Path) -> list[Run]:
    """Every run of the sweep, each config built and validated before anything trains."""
    runs = []
    for variant in sweep.variants:
        for seed in sweep.seeds:
            cfg = variant_config(sweep, variant, seed)
            if not getattr(cfg.data, sweep.split):
                raise ConfigError(f"sweep variant '{variant}': data.{sweep.split} is not set")
            runs.append(Run(variant, seed, cfg, out / variant / f"seed-{seed}"))
    return runs
