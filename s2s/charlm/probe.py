"""Probes: how much a char LM's features of labelled texts tell about their labels.

As in Radford et al. 2017 (MR sentiment from a byte LM's state): a logistic regression
(scikit-learn, L2, its strength chosen by cross-validation inside each training part) on
the LM's features, scored by stratified k-fold accuracy. The same folds score two
references, so that a reader sees at once whether pretraining paid: the same
architecture at random initialisation, and a bag of words and word bigrams.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from s2s.data.text import read_labelled
from s2s.errors import DataError, S2SError
from s2s.nn.charlm import CharLM, build_lm, lm_from_payload
from s2s.training.checkpoint import load

FEATURES = ("hidden", "cell", "mean", "layers")
C_GRID = np.logspace(-3, 1, 5)  # inverse L2 strengths tried in each training part
INNER_FOLDS = 3
# Dense features up to this width are fitted by Newton's method with a Cholesky solve
# (a features x features Hessian: 32 MB at 2,048). On MR's standardised LM features
# (2,048) it took 0.6x L-BFGS's time, and L-BFGS still stopped at its iteration limit in
# some fits (BENCHMARKS.md, MR probe, 2026-12-05). Wider features go to L-BFGS, whose
# cost does not grow with the square of the width.
NEWTON_MAX_FEATURES = 4096


@torch.no_grad()
def sequence_features(
    model: CharLM,
    sequences: list[list[int]],
    *,
    kinds: tuple[str, ...] = ("hidden",),
    batch_size: int = 64,
    positions: int = 64 * 512,
) -> torch.Tensor:
    """``CharLM.features`` of each id sequence (an empty one reads id 0), in order. The
    batches take the sequences longest first, so that each batch's steps are about its
    sequences' lengths, not the longest text's; a batch holds at most ``batch_size``
    sequences and (padded) ``positions`` ids, so one very long text goes alone, not with
    63 short ones padded to its length."""
    model.eval()
    device = model.output.weight.device
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    rows, start = [], 0
    while start < len(order):
        size = max(1, min(batch_size, positions // max(1, len(sequences[order[start]]))))
        seqs = [sequences[i] or [0] for i in order[start : start + size]]
        start += size
        lengths = torch.tensor([len(s) for s in seqs])
        ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        rows.append(model.features(ids.to(device), lengths, kinds).float().cpu())
    found = torch.cat(rows)
    return found[torch.argsort(torch.tensor(order))] if order else found


def stratified_folds(labels: list[int], folds: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """(train, test) index arrays of ``folds`` stratified folds, shuffled with ``seed``."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    smallest = int(np.bincount(y).min()) if len(y) else 0
    if folds < 2 or folds > smallest:
        raise S2SError(f"--folds must be between 2 and the size of the smaller class ({smallest})")
    needed = next(n for n in range(folds, 10**6) if n - -(-n // folds) >= INNER_FOLDS)
    if smallest < needed:  # the regression's own search runs in each training part
        raise S2SError(
            f"with --folds {folds}, each class needs at least {needed} texts (the smaller "
            f"has {smallest}): the regression chooses its strength by {INNER_FOLDS}-fold "
            "cross-validation inside each fold's training part"
        )
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def solver(sparse: bool, features: int) -> str:
    """scikit-learn's solver for a probe's regression: liblinear for sparse counts (the
    n-gram baseline), Newton-Cholesky for dense features up to NEWTON_MAX_FEATURES wide,
    L-BFGS beyond. All fit the same L2-regularised model; they differ in speed only."""
    if sparse:
        return "liblinear"
    return "newton-cholesky" if features <= NEWTON_MAX_FEATURES else "lbfgs"


def regression(seed: int, sparse: bool, features: int):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    inner = StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed)
    model = LogisticRegressionCV(
        Cs=C_GRID,
        cv=inner,
        scoring="neg_log_loss",
        solver=solver(sparse, features),
        max_iter=2000,
    )
    return model if sparse else make_pipeline(StandardScaler(), model)


def fit(x, y, *, seed: int = 0):
    """``regression`` fitted on features x (dense or sparse) and labels y."""
    import scipy.sparse

    with warnings.catch_warnings():  # scikit-learn's notes on defaults it will change
        warnings.simplefilter("ignore", FutureWarning)
        return regression(seed, scipy.sparse.issparse(x), x.shape[1]).fit(x, y)


def fold_accuracies(features, labels: list[int], splits, *, seed: int = 0) -> list[float]:
    """Test accuracy on each split of a regression fitted on its training part (dense
    features are standardised on that part; sparse ones are counts, left as they are)."""
    import scipy.sparse

    sparse = scipy.sparse.issparse(features)
    x = features if sparse else np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    scores = []
    for train, test in splits:
        model = fit(x[train], y[train], seed=seed)
        scores.append(float((model.predict(x[test]) == y[test]).mean()))
    return scores


def ngram_features(texts: list[bytes]):
    """Binary bag of words and word bigrams (whitespace tokens). Bytes are read as
    Latin-1, which maps every byte to one character, so the tokens are the same whatever
    the files' real encoding. The vocabulary is read from all texts, labels unseen (as
    the LM read them too)."""
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(
        ngram_range=(1, 2), binary=True, token_pattern=r"\S+", lowercase=False
    )
    return vectorizer.fit_transform([t.decode("latin-1") for t in texts])


@dataclass
class ProbeResult:
    """Fold accuracies of each row (pretrained, random init, n-grams), on one split."""

    rows: dict[str, list[float]]
    texts: int
    features: int
    kinds: tuple[str, ...]

    def table(self) -> str:
        lines = [
            "| features | accuracy % (mean ± std over folds) | vs pretrained |",
            "|---|---|---|",
        ]
        first = self.rows[next(iter(self.rows))]
        for name, scores in self.rows.items():
            a = np.asarray(scores) * 100
            delta = a - np.asarray(first) * 100
            versus = "" if scores is first else f"{delta.mean():+.2f}"
            lines.append(f"| {name} | {a.mean():.2f} ± {a.std(ddof=1):.2f} | {versus} |")
        return "\n".join(lines)


def probe_files(
    paths: str | Path | list[str | Path],
    pos: str | Path,
    neg: str | Path,
    *,
    folds: int = 10,
    seed: int = 0,
    kinds: tuple[str, ...] = ("mean",),
    encoding: str | None = None,
    references: bool = True,
) -> ProbeResult:
    """Probe LM checkpoints on two labelled files (``probe_features``), every row on the
    same ``folds`` stratified folds."""
    texts, labels = read_labelled(pos, neg)
    splits = stratified_folds(labels, folds, seed)
    n_pos = labels.count(1)

    def where(i: int) -> str:  # text i of the two files, as a reader finds it
        path, k = (pos, i) if i < n_pos else (neg, i - n_pos)
        return f"{path}, non-empty line {k + 1}"

    table = probe_features(
        paths, texts, seed=seed, kinds=kinds, encoding=encoding, references=references, where=where
    )
    rows = {name: fold_accuracies(x, labels, splits, seed=seed) for name, x in table.items()}
    return ProbeResult(rows, len(texts), table["pretrained LM"].shape[1], tuple(kinds))


def probe_features(
    paths: str | Path | list[str | Path],
    texts: list[bytes],
    *,
    seed: int = 0,
    kinds: tuple[str, ...] = ("mean",),
    encoding: str | None = None,
    references: bool = True,
    where: Callable[[int], str] = lambda i: f"text {i + 1}",
) -> dict:
    """The probe's features of ``texts``, by row name: LM checkpoints' (one LM, or several
    side by side; a backward LM, ``data.direction``, reads each text from its end), dense
    float64; with ``references``, also the same architectures at random initialisation
    (seeded once with ``seed``, then built in order) and the n-gram baseline (sparse)."""
    unknown = sorted(set(kinds) - set(FEATURES))
    if unknown or not kinds:
        raise S2SError(f"unknown feature '{(unknown or [''])[0]}'; valid: {', '.join(FEATURES)}")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    lms = [lm_from_payload(load(p), p) for p in paths]
    inputs = [
        label_sequences(units, cfg.data.direction == "backward", texts, encoding, where)
        for _, units, cfg in lms
    ]

    def side_by_side(models) -> np.ndarray:
        x = torch.cat([sequence_features(m, s, kinds=kinds) for m, s in zip(models, inputs)], 1)
        return x.numpy().astype(np.float64)

    table = {"pretrained LM": side_by_side([m for m, _, _ in lms])}
    if references:
        torch.manual_seed(seed)
        fresh = [build_lm(cfg.model, units.size) for _, units, cfg in lms]
        table["same LM, random init"] = side_by_side(fresh)
        table["words + bigrams"] = ngram_features(texts)
    return table


def label_sequences(
    units, backward: bool, texts: list[bytes], encoding: str | None, where=lambda i: f"text {i + 1}"
) -> list[list[int]]:
    """The texts as an LM reads them: its units, from the end for a ``backward`` LM.
    ``where(i)`` names text i in an error."""
    seqs = []
    for i, text in enumerate(texts):
        try:
            seqs.append(units.encode_raw(text, encoding))
        except UnicodeDecodeError as err:
            raise DataError(
                f"labelled text is not valid {encoding or units.encoding} ({where(i)}): "
                f"{err.reason} (use --encoding)"
            ) from None
    return [s[::-1] for s in seqs] if backward else seqs
