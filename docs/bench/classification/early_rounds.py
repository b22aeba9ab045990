"""Accuracy at the smallest budgets (the first rounds) per strategy and dataset, with the paired sign
test against random over seeds, from a classification bench table (results.csv or .csv.gz).

    python docs/bench/classification/early_rounds.py docs/bench/classification/results.csv.gz
"""

from __future__ import annotations

import sys

import pandas as pd

from curate.bench.report import paired

STRATEGIES = ["random", "margin", "badge", "typiclust", "probcover", "typical_margin", "cluster_margin", "budget_switch",
              "small-text:BreakingTies"]


def main(path: str, rounds: int = 3) -> None:
    d = pd.read_csv(path)
    d = d[d["round"] < rounds]
    for dataset in d.dataset.unique():
        part = d[d.dataset == dataset]
        wide = part.pivot_table(index=["strategy", "seed"], columns="labels", values="accuracy")
        base = wide.loc["random"]
        print(f"{dataset}: mean accuracy x100 at {', '.join(str(c) for c in wide.columns)} labels; "
              "mean of the first rounds vs random (seeds won, sign p)")
        for st in [s for s in STRATEGIES if s in wide.index.get_level_values(0)]:
            rows = wide.loc[st]
            test = paired(rows.mean(axis=1).to_numpy(), base.loc[rows.index].mean(axis=1).to_numpy())
            cells = "  ".join(f"{100 * v:5.1f}" for v in rows.mean())
            tail = "" if st == "random" else f"   {100 * test['diff']:+5.2f} ({test['wins']}/{test['n']}, p {test['sign_p']:.3f})"
            print(f"  {st:24s} {cells}{tail}")


if __name__ == "__main__":
    main(*sys.argv[1:])
