"""The probe's learning curve: how much of pretraining's lead over random initialisation
(and over the n-gram baseline) holds as the labelled training texts shrink.

    python scripts/probe_curve.py FWD.pt [BWD.pt ...] --pos POS --neg NEG \\
        [--folds 3] [--sizes 100,300,1000,3000,all] [--features layers] [--seed 0] [--encoding E]

The features and folds are `s2s charlm probe`'s (`probe_features`; the same seed, the same folds);
in each fold's training part a stratified subset of each size (seeded) fits the same
regression, and the whole test part scores it. Prints one Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np

from s2s.charlm.probe import fit, probe_features, stratified_folds
from s2s.data.text import read_labelled


def subset(train: np.ndarray, y: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """A stratified subset of ``size`` of the indices ``train`` (all of them for None)."""
    from sklearn.model_selection import train_test_split

    if size is None or size >= len(train):
        return train
    part, _ = train_test_split(train, train_size=size, stratify=y[train], random_state=seed)
    return np.sort(part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--pos", required=True)
    parser.add_argument("--neg", required=True)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--sizes", default="100,300,1000,3000,all")
    parser.add_argument("--features", default="layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoding", help="the labelled files' encoding (char LMs)")
    args = parser.parse_args()
    kinds = tuple(args.features.split(","))
    sizes = [None if s == "all" else int(s) for s in args.sizes.split(",")]
    texts, labels = read_labelled(args.pos, args.neg)
    y = np.asarray(labels)
    table = probe_features(
        args.checkpoints, texts, seed=args.seed, kinds=kinds, encoding=args.encoding
    )
    splits = stratified_folds(labels, args.folds, args.seed)
    print(f"| training texts per fold | {' | '.join(table)} | pretrained - random |")
    print("| --- |" + " --- |" * (len(table) + 1))
    for size in sizes:
        scores = {name: [] for name in table}
        for train, test in splits:
            part = subset(train, y, size, args.seed)
            for name, x in table.items():
                model = fit(x[part], y[part], seed=args.seed)
                scores[name].append(100 * float((model.predict(x[test]) == y[test]).mean()))
        cells = [f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}" for v in scores.values()]
        gap = np.mean(scores["pretrained LM"]) - np.mean(scores["same LM, random init"])
        shown = len(splits[0][0]) if size is None else size
        print(f"| {shown} | {' | '.join(cells)} | {gap:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
