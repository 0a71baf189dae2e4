"""Compare variants by BLEU: ``s2s compare SWEEP.yaml``.

A sweep file names a base config, the variants to compare (named variants, a grid, or
a random search over config keys) and the seeds to run each with. Every run is an
ordinary run folder, ``OUT/VARIANT/seed-S``. After training, its ``best.pt``
translates the evaluation split into ``SPLIT.hyp`` and ``result.json`` records the
scores, so rerunning the command skips finished runs and resumes a cut-off one. The
report gives per variant the mean ± sample std (max) of BLEU over seeds, as Britz et
al. 2017 report it, and sacrebleu's paired significance test against the baseline run
of the same seed (approximate randomization by default, Riezler & Maxwell 2005), in
``report.md``, ``report.json`` and ``compare.png``.

Sweep file::

    base: multi30k_en_de.yaml      # config path, relative to the sweep file
    set: {train.max_steps: 800}    # overrides for every variant (optional)
    seeds: [1, 2, 3]               # default [1]
    baseline: lstm                 # default: the first variant
    variants:                      # exactly one of variants, grid, random
      lstm: {}
      gru: {model.encoder.cell: gru, model.decoder.cell: gru}
    # grid: {model.attention: [additive, multiplicative], data.reverse_source: [false, true]}
    # random: {trials: 8, seed: 0, space: {train.lr: {log_uniform: [1e-4, 1e-2]},
    #          model.dropout: {uniform: [0.1, 0.5]}, model.encoder.cell: {choice: [lstm, gru]}}}
    split: test                    # test or valid (default test)
    beam: 1                        # 1 = greedy
    significance: ar               # ar (approximate randomization) or bs (paired bootstrap)
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from s2s import config as config_mod
from s2s.config import Config
from s2s.data.corpus import load_split
from s2s.decoding.translate import translate_lines
from s2s.errors import ConfigError
from s2s.experiments.report import markdown, paired_p_value, plot, variant_row
from s2s.training.checkpoint import atomic_write
from s2s.training.progress import Progress
from s2s.translation import checkpoint
from s2s.translation.scores import score

log = logging.getLogger(__name__)

SWEEP_KEYS = ("base", "set", "seeds", "baseline", "variants", "grid", "random")
SWEEP_KEYS += ("split", "beam", "significance", "samples")
SPACES = ("choice", "uniform", "log_uniform", "int")


@dataclass(frozen=True)
class Sweep:
    base: Path
    variants: dict[str, dict[str, Any]]  # name -> {dotted key: value}
    settings: dict[str, Any] = field(default_factory=dict)  # for every variant
    seeds: tuple[int, ...] = (1,)
    baseline: str = ""
    split: str = "test"
    beam: int = 1
    significance: str = "ar"
    samples: int = 0  # trials / resamples of the paired test (0 = sacrebleu's default)


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
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep grid key '{key}' needs a non-empty list of values")
    keys = list(grid)
    last = [k.split(".")[-1] for k in keys]
    short = [s if last.count(s) == 1 else k for s, k in zip(last, keys)]
    variants = {}
    for combo in itertools.product(*(grid[k] for k in keys)):
        name = ",".join(f"{s}={_text(v)}" for s, v in zip(short, combo))
        variants[folder_name(name)] = dict(zip(keys, combo))
    return variants


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
    if not isinstance(trials, int) or trials < 1 or not space:
        raise ConfigError("sweep random needs trials (a positive integer) and a space")
    rng = random.Random(spec.get("seed", 0))
    # unpadded names: more trials later keep the earlier trials' folders (and draws)
    return {
        f"trial-{i + 1}": {key: _draw(rng, key, space[key]) for key in space} for i in range(trials)
    }


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
        raw = _mapping(data["variants"], "sweep variants")
        variants = {
            folder_name(str(name)): _mapping(value, f"sweep variant '{name}'")
            for name, value in raw.items()
        }
    elif kinds[0] == "grid":
        variants = grid_variants(_mapping(data["grid"], "sweep grid"))
    else:
        variants = random_variants(_mapping(data["random"], "sweep random"))
    if not variants:
        raise ConfigError(f"sweep {path} has no variants")
    seeds = data.get("seeds", [1])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise ConfigError(f"sweep {path}: seeds must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"sweep {path}: seeds repeat")
    baseline = folder_name(str(data.get("baseline", next(iter(variants)))))
    if baseline not in variants:
        raise ConfigError(f"sweep {path}: baseline '{baseline}' is not one of its variants")
    split, beam = data.get("split", "test"), data.get("beam", 1)
    significance, samples = data.get("significance", "ar"), data.get("samples", 0)
    if split not in ("test", "valid"):
        raise ConfigError(f"sweep {path}: split must be test or valid, got {split!r}")
    if not isinstance(beam, int) or beam < 1:
        raise ConfigError(f"sweep {path}: beam must be a positive integer")
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
        beam=beam,
        significance=significance,
        samples=samples,
    )


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


# --------------------------------------------------------------------------- one run


def evaluate_run(run: Run, split: str, beam: int) -> dict:
    """Translate the split with the run's best checkpoint; write SPLIT.hyp; return scores."""
    from s2s.training.runfolder import resolve_device

    loaded = checkpoint.load_for_translation(run.folder / "best.pt")
    device = resolve_device(run.cfg.train.device)
    ds = load_split(run.cfg.data, split)
    hyps = translate_lines(
        loaded.model.to(device),
        loaded.src_tok,
        loaded.tgt_tok,
        list(ds["src"]),
        reverse_source=loaded.config.data.reverse_source,
        max_output_ratio=loaded.config.train.max_output_ratio,
        beam=beam if beam > 1 else None,
        device=device,
    )
    text = "".join(h + "\n" for h in hyps).encode("utf-8")
    atomic_write(run.folder / f"{split}.hyp", lambda handle: handle.write(text))
    scores = score(hyps, list(ds["tgt"]))
    progress = Progress.from_state(checkpoint.load(run.folder / "last.pt")["progress"])
    return {
        "variant": run.variant,
        "seed": run.seed,
        "split": split,
        "beam": beam,
        "bleu": scores.bleu,
        "chrf": scores.chrf,
        "signature": scores.bleu_signature,
        "valid_bleu": progress.best,
        "steps": progress.step,
        "train_seconds": progress.elapsed,
    }


def _finished_result(run: Run, split: str, beam: int) -> dict | None:
    path = run.folder / "result.json"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fresh = (run.folder / f"{split}.hyp").is_file() and (run.folder / "best.pt").is_file()
    same = result.get("split") == split and result.get("beam") == beam
    if not (fresh and same):
        return None
    # a sweep file edited since: train() then names the difference
    trained = config_mod.from_data(config_mod.read_yaml(run.folder / "config.yaml"))
    return None if config_mod.diff(trained, run.cfg) else result


# --------------------------------------------------------------------------- report


def _read_hyps(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def summarise(sweep: Sweep, runs: list[Run], results: dict[tuple[str, int], dict]) -> dict:
    """Per variant: BLEU mean, sample std, max, chrF and validation BLEU means, and the
    paired test against the baseline run with the same seed."""
    refs = list(load_split(runs[0].cfg.data, sweep.split)["tgt"])
    hyps = {(r.variant, r.seed): _read_hyps(r.folder / f"{sweep.split}.hyp") for r in runs}
    rows = []
    for variant, overrides in sweep.variants.items():
        p_values = []
        if variant != sweep.baseline:
            for s in sweep.seeds:
                p_values.append(
                    paired_p_value(
                        hyps[(sweep.baseline, s)],
                        hyps[(variant, s)],
                        refs,
                        sweep.significance,
                        sweep.samples,
                    )
                )
        mine = [results[(variant, s)] for s in sweep.seeds]
        rows.append(variant_row(variant, overrides, mine, p_values))
    base_mean = next(r["bleu_mean"] for r in rows if r["variant"] == sweep.baseline)
    for row in rows:
        row["delta"] = row["bleu_mean"] - base_mean
    return {
        "baseline": sweep.baseline,
        "split": sweep.split,
        "beam": sweep.beam,
        "seeds": list(sweep.seeds),
        "significance": sweep.significance,
        "signature": results[(runs[0].variant, runs[0].seed)]["signature"],
        "variants": rows,
    }


# --------------------------------------------------------------------------- all


def _write_json(path: Path, value: Any) -> None:
    data = json.dumps(value, indent=1).encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))


def compare(
    sweep: Sweep,
    out: str | Path,
    *,
    train_run: Callable[[Config, Path], Any] | None = None,
) -> dict:
    """Train and evaluate every run not finished yet, then write the report."""
    from s2s.translation import train

    out = Path(out)
    runs = plan(sweep, out)
    train_run = train_run or (lambda cfg, folder: train(cfg, folder))
    results = {}
    for i, run in enumerate(runs, 1):
        result = _finished_result(run, sweep.split, sweep.beam)
        if result is None:
            log.info("run %d/%d: %s seed %d -> %s", i, len(runs), run.variant, run.seed, run.folder)
            train_run(run.cfg, run.folder)
            result = evaluate_run(run, sweep.split, sweep.beam)
            _write_json(run.folder / "result.json", result)
        log.info("%s seed %d: %s BLEU %.2f", run.variant, run.seed, sweep.split, result["bleu"])
        results[(run.variant, run.seed)] = result
    report = summarise(sweep, runs, results)
    _write_json(out / "report.json", report)
    page = markdown(report).encode("utf-8")
    atomic_write(out / "report.md", lambda h: h.write(page))
    plot(report, out / "compare.png")
    return report
