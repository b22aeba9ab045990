"""Self-training against the plain learner, cell by cell (same dataset, strategy and seed): AUC of each
and the paired difference, from two classification bench tables.

    python docs/bench/classification/self_training_compare.py docs/bench/classification/results.csv.gz \
        docs/bench/classification/self-training/results.csv.gz > docs/bench/classification/self-training/compare.txt
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd


def auc(cell: pd.DataFrame) -> float:
    """The report's AUC of one cell: accuracy against labels over the cell's label range."""
    from curate.bench.report import auc as curve_auc

    return curve_auc(cell["labels"].to_numpy(), cell["accuracy"].to_numpy())


def main(plain_path: str, trained_path: str) -> None:
    plain, trained = pd.read_csv(plain_path), pd.read_csv(trained_path)
    print("dataset  strategy         AUC plain  AUC self-training  delta x100  seeds won")
    for (dataset, strategy), cells in trained.groupby(["dataset", "strategy"], sort=False):
        pairs = []
        for seed, cell in cells.groupby("seed"):
            base = plain[(plain.dataset == dataset) & (plain.strategy == strategy) & (plain.seed == seed)]
            if len(base):
                pairs.append((auc(base), auc(cell)))
        a = np.array(pairs)
        d = 100 * (a[:, 1] - a[:, 0])
        print(f"{dataset:8s} {strategy:16s} {a[:, 0].mean():9.4f}  {a[:, 1].mean():17.4f}  {d.mean():+10.2f}  "
              f"{int((d > 0).sum()):>4d}/{len(d)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
