"""Does routing pay? The hybrid annotator (SmolLM2 keeps the labels it is sure of, people label the
rest) against all-human labels, cell by cell on the same strategy and seed, from a `curate bench`
run folder whose grid has both annotators (see hybrid/README.md for the command):

* accuracy at equal labels (both after 200) and at equal money (gold's curve read at the money the
  hybrid spent, linearly between rounds), paired over seeds, with an exact sign test;
* money spent, labels the LLM kept, and how often those were right (from each cell's journal);
* ``accuracy_vs_money.png``: mean accuracy against mean money per round, both annotators, per strategy.

    python docs/bench/classification/hybrid_compare.py runs/bench-hybrid > docs/bench/classification/hybrid/compare.txt
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def llm_accuracy(cell: Path, gold: dict[int, str]) -> tuple[int, int]:
    con = sqlite3.connect(f"file:{cell / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT item_id, label FROM labels WHERE source = 'llm' AND label IS NOT NULL").fetchall()
    finally:
        con.close()
    return sum(json_label(label) == gold[i] for i, label in rows), len(rows)


def json_label(value: str) -> str:
    import json

    try:
        return str(json.loads(value))
    except (TypeError, ValueError):
        return str(value)


def main(folder: str, hybrid: str = "hybrid-sentiment") -> None:
    from curate.bench.config import DatasetConfig
    from curate.bench.datasets import load_split
    from curate.bench.report import paired

    root = Path(folder)
    d = pd.read_csv(root / "results.csv")
    dataset = d.dataset.iloc[0]
    split = load_split(dataset, DatasetConfig(source=dataset))
    gold = dict(enumerate(split.pool_labels))
    print(f"# {root}: {dataset}, annotators gold vs {hybrid}; accuracy x100, money in {d.currency.iloc[0]}")
    plot(d, hybrid, Path(__file__).parent / "hybrid" / "accuracy_vs_money.png")
    print("strategy        seeds  gold acc  hybrid acc  d(equal labels) won  p     d(equal money) won  p     "
          "gold money  hybrid money  saved  LLM kept  LLM right")
    for st in d.strategy.unique():
        rows = []
        right = kept = 0
        for seed in sorted(d.seed.unique()):
            g = d[(d.strategy == st) & (d.seed == seed) & (d.annotator == "gold")].sort_values("round")
            h = d[(d.strategy == st) & (d.seed == seed) & (d.annotator == hybrid)].sort_values("round")
            if g.empty or h.empty:
                continue
            money = h.spent.iloc[-1]
            rows.append((g.accuracy.iloc[-1], h.accuracy.iloc[-1], np.interp(money, g.spent, g.accuracy),
                         g.spent.iloc[-1], money, h.llm_labels.iloc[-1]))
            cell = root / "cells" / f"classification__{dataset}__{st}__default__{hybrid}__seed{seed}"
            r, k = llm_accuracy(cell, gold)
            right, kept = right + r, kept + k
        a = np.array(rows)
        eq_labels, eq_money = paired(a[:, 1], a[:, 0]), paired(a[:, 1], a[:, 2])   # the report's paired tests
        print(f"{st:15s} {len(a):5d}  {100 * a[:, 0].mean():8.2f}  {100 * a[:, 1].mean():10.2f}  "
              f"{100 * eq_labels['diff']:+15.2f} {eq_labels['wins']:>3d}  {eq_labels['sign_p']:.3f} "
              f"{100 * eq_money['diff']:+14.2f} {eq_money['wins']:>3d}  "
              f"{eq_money['sign_p']:.3f} {a[:, 3].mean():10.2f}  {a[:, 4].mean():12.2f}  {100 * (1 - a[:, 4].mean() / a[:, 3].mean()):4.1f}%"
              f"  {a[:, 5].mean():8.1f}  {right / max(kept, 1):9.3f}")


def plot(d: pd.DataFrame, hybrid: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = dict(zip(d.strategy.unique(), ("black", "tab:orange", "tab:blue", "tab:green"), strict=False))
    for (st, annotator), frame in d.groupby(["strategy", "annotator"], sort=False):
        m = frame.groupby("round")[["spent", "accuracy"]].mean()
        ax.plot(m.spent, m.accuracy, marker="o", ms=3, color=colours[st], ls="-" if annotator == hybrid else "--",
                label=f"{st}, {'hybrid (LLM + people)' if annotator == hybrid else 'people only'}")
    ax.set_xlabel(f"money spent ({d.currency.iloc[0]}), mean over seeds")
    ax.set_ylabel("test accuracy, mean over seeds")
    ax.set_title(f"{d.dataset.iloc[0]}: does routing to the LLM pay? (10 rounds of 20 labels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:])
