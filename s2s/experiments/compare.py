"""Compare variants by BLEU: ``s2s compare SWEEP.yaml`` (the file: ``sweep.py``).

Every run is an ordinary run folder, ``OUT/VARIANT/seed-S``. After training, its
``best.pt`` translates the evaluation split with each of the sweep's decodings into
``SPLIT[.DECODING].hyp`` and ``result[.DECODING].json`` records the scores, so
rerunning the command skips finished runs and resumes a cut-off one. With ``reuse``
folders (other sweeps' OUT), a run whose config a finished run there already trained
is linked to that run folder instead of trained again: a study whose questions share
a baseline trains it once.

The report gives per row (variant, or decoding) the mean ± sample std (max) of BLEU
over seeds, as Britz et al. 2017 report it, and sacrebleu's paired tests against the
baseline: per seed (against the baseline run with the same seed) and on the seeds'
outputs concatenated, with a Bonferroni threshold for the number of rows compared, in
``report.md``, ``report.json``, ``compare.png`` (bars) and ``curves.png`` (validation
BLEU against updates).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from s2s import config as config_mod
from s2s.config import Config
from s2s.data.files import lines_sha1, load_split
from s2s.decoding.translate import translate_lines
from s2s.errors import ConfigError, Interrupted, S2SError
from s2s.experiments.plots import plot_bars, plot_curves
from s2s.experiments.report import markdown, paired_p_value, pooled_p_values, variant_row
from s2s.experiments.sweep import (  # noqa: F401  (the sweep file's API, re-exported)
    Decoding,
    Run,
    Sweep,
    folder_name,
    grid_variants,
    plan,
    random_variants,
    read_sweep,
    variant_config,
)
from s2s.training.checkpoint import atomic_write
from s2s.training.progress import Progress
from s2s.translation import checkpoint
from s2s.translation.scores import score

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- one run


def evaluate_run(run: Run, split: str, decodings: tuple[Decoding, ...]) -> dict[str, dict]:
    """Translate the split with the run's best checkpoint, once per decoding; write each
    hyp file and then its result file; return the results by decoding name."""
    from s2s.training.runfolder import resolve_device

    loaded = checkpoint.load_for_translation(run.folder / "best.pt")
    device = resolve_device(run.cfg.train.device)
    ds = load_split(run.cfg.data, split)
    progress = Progress.from_state(checkpoint.load(run.folder / "last.pt")["progress"])
    data_sha1 = _data_sha1(ds)
    results = {}
    for dec in decodings:
        hyps = translate_lines(
            loaded.model.to(device),
            loaded.src_tok,
            loaded.tgt_tok,
            list(ds["src"]),
            reverse_source=loaded.config.data.reverse_source,
            max_output_ratio=loaded.config.train.max_output_ratio,
            beam=dec.beam if dec.beam > 1 else None,
            alpha=dec.length_penalty,
            device=device,
        )
        text = "".join(h + "\n" for h in hyps).encode("utf-8")
        atomic_write(run.folder / dec.hyp_file(split), lambda handle, t=text: handle.write(t))
        scores = score(hyps, list(ds["tgt"]))
        results[dec.name] = {
            "variant": run.variant,
            "seed": run.seed,
            "split": split,
            "beam": dec.beam,
            "length_penalty": dec.length_penalty,
            "bleu": scores.bleu,
            "chrf": scores.chrf,
            "signature": scores.bleu_signature,
            "valid_bleu": progress.best,
            "steps": progress.step,
            "train_seconds": progress.elapsed,
            "hyp_sha1": hashlib.sha1(text).hexdigest(),
            "data_sha1": data_sha1,
        }
        _write_json(run.folder / dec.result_file, results[dec.name])
    return results


# What the report reads of a result file
RESULT_KEYS = frozenset({"split", "beam", "bleu", "chrf", "signature", "valid_bleu"})


def _trained_config(folder: Path) -> Config | None:
    try:
        return config_mod.from_data(config_mod.read_yaml(folder / "config.yaml"))
    except Exception:  # a folder that is not (yet) a run of this config
        return None


def _data_sha1(ds) -> str:
    return lines_sha1(ds["src"], ds["tgt"])


def _finished_result(run: Run, split: str, dec: Decoding) -> dict | None:
    try:
        result = json.loads((run.folder / dec.result_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or not RESULT_KEYS <= result.keys():
        return None  # not a result file as evaluate_run writes it: decoded again
    try:  # the result of this very hyp file (older results carry no hash)
        hyp = (run.folder / dec.hyp_file(split)).read_bytes()
    except OSError:
        return None
    digest = hashlib.sha1(hyp).hexdigest()
    same = result.get("split") == split and result.get("beam") == dec.beam
    same = same and result.get("length_penalty", 0.0) == dec.length_penalty
    same = same and result.get("hyp_sha1", digest) == digest
    if same and "data_sha1" in result:  # the split's sources and references as scored
        same = result["data_sha1"] == _data_sha1(load_split(run.cfg.data, split))
        if not same:
            log.info(
                "%s: the %s data changed since it was scored; decoding again", run.folder, split
            )
    return result if same and trained(run.folder, run.cfg) else None


def trained(folder: Path, cfg: Config) -> bool:
    """Whether ``folder`` holds a finished training of ``cfg``: its best.pt, a result
    file (written after training), and the same config."""
    if not ((folder / "best.pt").is_file() and any(folder.glob("result*.json"))):
        return False
    done = _trained_config(folder)
    return done is not None and not config_mod.diff(done, cfg)


def find_trained(cfg: Config, reuse: list[Path]) -> Path | None:
    """A finished run of ``cfg`` under one of the ``reuse`` sweep folders."""
    for root in reuse:
        for folder in sorted(Path(root).glob("*/seed-*")):
            if trained(folder, cfg):
                return folder
    return None


def _link_trained(run: Run, reuse: list[Path]) -> None:
    """Point a run not trained here at a finished run of the same config. A link whose
    target is gone or is no longer a finished run of this config is dropped first:
    training never runs through a link into another sweep's run."""
    if run.folder.is_symlink() and not trained(run.folder, run.cfg):
        log.info(
            "%s seed %d: %s no longer holds this run; unlinked", run.variant, run.seed, run.folder
        )
        run.folder.unlink()
    if run.folder.exists() or run.folder.is_symlink() or not reuse:
        return
    found = find_trained(run.cfg, reuse)
    if found is not None:
        run.folder.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(found.resolve(), run.folder.parent.resolve()), run.folder)
        log.info("%s seed %d: trained already in %s", run.variant, run.seed, found)


def clear_results(folder: Path, cfg: Config) -> None:
    """Before a run (re)trains: its old hyp and result files no longer describe it, and
    a cut in the training or the decoding must not leave them to be read back. A folder
    of a different config (not only new limits) keeps them: training refuses it."""
    from s2s.training.runfolder import LIMIT_KEYS

    old = _trained_config(folder)
    if old is not None and any(k not in LIMIT_KEYS for k in config_mod.diff(old, cfg)):
        return
    if folder.is_dir():
        for path in [*folder.glob("result*.json"), *folder.glob("*.hyp")]:
            path.unlink()


# --------------------------------------------------------------------------- report


def _read_hyps(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def valid_curve(folder: Path) -> list[list[float]]:
    """[[step, validation BLEU], ...] of a run, from its metrics.jsonl (a resumed run's
    repeated step counts once: its last record)."""
    points = {}
    path = folder / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a kill (resuming trims it)
                continue
            if not isinstance(record, dict):
                continue
            if record.get("kind") == "valid" and record.get("bleu") is not None:
                points[record["step"]] = record["bleu"]
    return [[step, bleu] for step, bleu in sorted(points.items())]


def summarise(sweep: Sweep, runs: list[Run], results: dict[tuple, dict]) -> dict:
    """Per row: BLEU mean, sample std, max, chrF and validation BLEU means, and the
    paired tests against the baseline row: per seed and on the seeds concatenated."""
    refs = list(load_split(runs[0].cfg.data, sweep.split)["tgt"])
    folders = {(r.variant, r.seed): r.folder for r in runs}
    hyps = {
        (name, s): _read_hyps(folders[(variant, s)] / dec.hyp_file(sweep.split))
        for name, variant, dec in sweep.rows
        for s in sweep.seeds
    }
    base = [hyps[(sweep.baseline, s)] for s in sweep.seeds]
    rows = []
    for name, variant, dec in sweep.rows:
        p_values, pooled = [], {}
        if name != sweep.baseline:
            mine = [hyps[(name, s)] for s in sweep.seeds]
            for b, m in zip(base, mine):
                p_values.append(paired_p_value(b, m, refs, sweep.significance, sweep.samples))
            pooled = pooled_p_values(base, mine, refs, sweep.samples)
        row = variant_row(
            name,
            sweep.variants[variant],
            [results[(variant, s, dec.name)] for s in sweep.seeds],
            p_values,
        )
        row.update(train_variant=variant, beam=dec.beam, length_penalty=dec.length_penalty)
        row["pooled_p"] = pooled
        rows.append(row)
    base_mean = next(r["bleu_mean"] for r in rows if r["variant"] == sweep.baseline)
    for row in rows:
        row["delta"] = row["bleu_mean"] - base_mean
    first = results[(runs[0].variant, runs[0].seed, sweep.decodings[0].name)]
    return {
        "baseline": sweep.baseline,
        "split": sweep.split,
        "beam": sweep.decodings[0].beam if len(sweep.decodings) == 1 else None,
        "length_penalty": sweep.decodings[0].length_penalty if len(sweep.decodings) == 1 else None,
        "seeds": list(sweep.seeds),
        "significance": sweep.significance,
        "alpha": 0.05,
        "comparisons": len(rows) - 1,
        "signature": first["signature"],
        "variants": rows,
        "curves": {
            v: {str(s): valid_curve(folders[(v, s)]) for s in sweep.seeds} for v in sweep.variants
        },
    }


# --------------------------------------------------------------------------- all


def check_evaluation_data(sweep: Sweep, runs: list[Run]) -> None:
    """Before anything trains: every run's evaluation split loads, and every run is
    scored on the same lines (BLEU on different test sets can be neither compared nor
    paired)."""
    digests: dict[str, str] = {}  # per distinct data section
    first = None
    for run in runs:
        key = repr(run.cfg.data)
        if key not in digests:
            try:
                digests[key] = _data_sha1(load_split(run.cfg.data, sweep.split))
            except S2SError as err:
                raise ConfigError(
                    f"sweep variant '{run.variant}': its {sweep.split} data: {err}"
                ) from None
        if first is None:
            first = (run.variant, digests[key])
        elif digests[key] != first[1]:
            raise ConfigError(
                f"sweep variants '{first[0]}' and '{run.variant}' are scored on different "
                f"{sweep.split} data: their BLEU can be neither compared nor paired"
            )


def _run_one(run: Run, sweep: Sweep, count: str, train_run, reuse: list[Path]) -> dict:
    """One run's results by decoding name: trained and decoded where not done yet."""
    _link_trained(run, reuse)
    done = {}
    if trained(run.folder, run.cfg):
        done = {d.name: _finished_result(run, sweep.split, d) for d in sweep.decodings}
    else:
        log.info("run %s: %s seed %d -> %s", count, run.variant, run.seed, run.folder)
        clear_results(run.folder, run.cfg)
        train_run(run.cfg, run.folder)
    todo = tuple(d for d in sweep.decodings if done.get(d.name) is None)
    if todo:
        done.update(evaluate_run(run, sweep.split, todo))
    return done


def _write_json(path: Path, value: Any) -> None:
    data = json.dumps(value, indent=1).encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))


def compare(
    sweep: Sweep,
    out: str | Path,
    *,
    train_run: Callable[[Config, Path], Any] | None = None,
    reuse: list[str | Path] = (),
    force: bool = False,
) -> dict:
    """Train and evaluate every run not finished yet, then write the report. ``force``:
    a run folder holding another config's run starts over (its files set aside, as
    ``s2s train --force`` does) instead of stopping the sweep."""
    from s2s.translation import train

    out = Path(out)
    reuse = [Path(r) for r in reuse if Path(r).resolve() != out.resolve()]
    runs = plan(sweep, out)
    check_evaluation_data(sweep, runs)
    train_run = train_run or (lambda cfg, folder: train(cfg, folder, force=force))
    results, failed = {}, []
    for i, run in enumerate(runs, 1):
        try:
            done = _run_one(run, sweep, f"{i}/{len(runs)}", train_run, reuse)
        except (Interrupted, ConfigError):  # stopped, or the sweep's own settings are wrong
            raise
        except S2SError as err:  # the other runs go on; the failures are listed at the end
            log.error("%s seed %d failed: %s", run.variant, run.seed, err)
            failed.append(f"{run.variant} seed {run.seed}: {err}")
            continue
        for dec in sweep.decodings:
            result = results[(run.variant, run.seed, dec.name)] = done[dec.name]
            name = f" {dec.name}" if dec.name else ""
            log.info(
                "%s seed %d%s: %s BLEU %.2f",
                run.variant,
                run.seed,
                name,
                sweep.split,
                result["bleu"],
            )
    if failed:
        raise S2SError(
            f"{len(failed)} of {len(runs)} runs failed (the others are kept; rerun the "
            "command to retry these): " + "; ".join(failed)
        )
    report = summarise(sweep, runs, results)
    _write_json(out / "report.json", report)
    page = markdown(report).encode("utf-8")
    atomic_write(out / "report.md", lambda h: h.write(page))
    plot_bars(report, out / "compare.png")
    plot_curves(report, out / "curves.png")
    return report
