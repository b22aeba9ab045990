"""Calibrate the hybrid annotator's threshold for SmolLM2 on SST-2 before the hybrid arm runs.

`curate bench` runs the hybrid arm at a fixed threshold; this script is where that threshold comes
from (a calibration is not a grid cell, so it lives here). It labels a gold subset of the SST-2
pool (random, seed 0, drawn from the pool only: the test split is never seen) with the embedded LM
through the same annotator the bench builds (the recipe's annotators.hybrid block), then prints
accuracy and coverage by confidence and the lowest threshold whose kept labels reach the target
accuracy (curate.annotate.calibrate_threshold). Reproduce:

    python docs/bench/classification/hybrid_calibration.py --n 300 --target 0.9 \
        > docs/bench/classification/hybrid_calibration.txt
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/bench-classification.yaml")
    parser.add_argument("--dataset", default="sst2")
    parser.add_argument("--n", type=int, default=300, help="gold items to calibrate on (bought from people)")
    parser.add_argument("--target", type=float, default=0.9, help="accuracy the kept LLM labels must reach")
    parser.add_argument("--annotator", default="hybrid-sentiment", help="the recipe's annotators block to calibrate")
    args = parser.parse_args()

    from curate.annotate import calibrate_threshold
    from curate.bench.config import load_bench_config
    from curate.bench.datasets import load_split
    from curate.build import backend_from, labeller_from
    from curate.pool import load_pool

    config = load_bench_config(args.recipe)
    split = load_split(args.dataset, config.dataset(args.dataset))
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(len(split.pool_texts), args.n, replace=False))
    pool = load_pool([{"text": split.pool_texts[i], "label": split.pool_labels[i]} for i in ids], require=("text", "label"))
    spec = config.annotators[args.annotator]
    backend = backend_from(config.lm)
    labeller = labeller_from(spec, list(split.classes), index=None, backend=lambda: backend)
    clock = time.perf_counter()
    found = list(labeller.annotate(pool, np.arange(len(pool))))
    seconds = time.perf_counter() - clock
    labels = [a.label for a in found]
    conf = [a.confidence for a in found]
    gold = pool.column("label")
    right = np.array([p == g for p, g in zip(labels, gold, strict=True)])
    c = np.array([-1.0 if x is None else x for x in conf])
    tokens = sum((a.input_tokens or 0) + (a.output_tokens or 0) for a in found)
    print(f"# hybrid calibration: {config.lm.model} ({config.lm.backend}) on {args.n} {args.dataset} pool items (seed 0)")
    print(f"# load average {os.getloadavg()[0]:.2f}; {seconds:.1f} s ({args.n / seconds:.1f} items/s), {tokens} tokens")
    print(f"# instruction: {spec.instruction!r}; template: {spec.template!r}")
    print(f"LLM accuracy on all items: {right.mean():.3f}; majority class share: "
          f"{max(np.mean([g == k for g in gold]) for k in split.classes):.3f}")
    print("threshold  kept  coverage  accuracy of kept")
    for t in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99):
        kept = c >= t
        acc = right[kept].mean() if kept.any() else float("nan")
        print(f"{t:>9.2f}  {kept.sum():>4}  {kept.mean():>8.3f}  {acc:.3f}")
    cal = calibrate_threshold(conf, labels, gold, args.target, min_kept=10)
    print(f"calibrated threshold for accuracy >= {args.target}: {cal.threshold:.4f} "
          f"(keeps {cal.kept} = {cal.kept_fraction:.3f} of items at accuracy {cal.accuracy:.3f})")


if __name__ == "__main__":
    main()
