"""Probes: how much a char LM's features of labelled texts tell about their labels.

``probe`` fits an L2-regularised logistic regression on the features (the top layer's
final hidden state, ``sequence_features``) of labelled texts, e.g. MR sentiment as in
Radford et al. 2017, and reports k-fold accuracy.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from s2s.data.text import read_labelled
from s2s.errors import DataError, S2SError
from s2s.nn.charlm import CharLM, lm_from_payload
from s2s.training.checkpoint import load


@torch.no_grad()
def sequence_features(
    model: CharLM, sequences: list[list[int]], *, batch_size: int = 64
) -> torch.Tensor:
    """``features`` of each id sequence (an empty one reads id 0): (len(sequences), hidden)."""
    model.eval()
    device = model.output.weight.device
    rows = []
    for start in range(0, len(sequences), batch_size):
        seqs = [s or [0] for s in sequences[start : start + batch_size]]
        lengths = torch.tensor([len(s) for s in seqs])
        ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        rows.append(model.features(ids.to(device), lengths).float().cpu())
    return torch.cat(rows)


def logistic_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    l2: float,
    steps: int = 100,
) -> float:
    """Standardise on the training part, fit L2 logistic regression (L-BFGS), score."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    w = torch.zeros(a.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    a64, y64 = a.double(), train_y.double()
    opt = torch.optim.LBFGS([w, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(a64 @ w + bias, y64) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        predicted = (b.double() @ w + bias) > 0
    return float((predicted == test_y.bool()).double().mean())


def probe(
    features: torch.Tensor, labels: list[int], *, folds: int = 10, seed: int = 0, l2: float = 1e-3
) -> list[float]:
    """Accuracy of each of ``folds`` cross-validation folds (a seeded shuffle)."""
    if folds < 2 or folds > len(labels):
        raise S2SError(f"--folds must be between 2 and the number of texts ({len(labels)})")
    y = torch.tensor(labels)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    parts = torch.tensor_split(order, folds)
    scores = []
    for k, test in enumerate(parts):
        train = torch.cat([part for j, part in enumerate(parts) if j != k])
        scores.append(logistic_accuracy(features[train], y[train], features[test], y[test], l2=l2))
    return scores


def probe_files(
    path: str | Path,
    pos: str | Path,
    neg: str | Path,
    *,
    folds: int,
    seed: int,
    l2: float,
    encoding: str | None,
) -> tuple[list[float], int, int]:
    """(fold accuracies, texts, feature size) of an LM checkpoint on two labelled files."""
    model, units, _ = lm_from_payload(load(path), path)
    texts, labels = read_labelled(pos, neg)
    try:
        seqs = [units.encode_raw(t, encoding) for t in texts]
    except UnicodeDecodeError as err:
        raise DataError(
            f"labelled text is not valid {encoding or units.encoding}: {err.reason} "
            "(use --encoding)"
        ) from None
    features = sequence_features(model, seqs)
    return probe(features, labels, folds=folds, seed=seed, l2=l2), len(texts), features.shape[1]
