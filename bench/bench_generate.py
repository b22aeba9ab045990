"""Benchmark of querying by generation (issue 4): SmolLM2-135M-Instruct writes labelled examples
for SST-2 (2 classes) and TREC (6 classes), rejection sampling filters them, and a MiniLM +
logistic-regression classifier trained only on what was accepted is compared on the real test
sets with the same classifier trained on as many random real examples.

    python -u bench/bench_generate.py [--n 200] [--quick] [--tasks sst2,trec] [--no-calibrate]

Generation is label-conditioned (three real training examples per label as style seeds, varied
topic hints, temperature 0.9) with per-label targets (only labels short of n/|labels| are asked
for); filters: length, format, exact/near duplicates against the real training pool (MiniLM,
cosine 0.92) and the accepted set, label consistency by the same LM (calibrated against its
mean label prediction over 32 real training texts unless --no-calibrate; threshold 0.5 for SST-2,
0.2 for TREC, where it keeps 48 % of real questions with their true label and 10 % with a wrong one).

Reads ../shared/data (never copies it). Prints acceptance per filter, the duplicate rate against
the real pool, accuracies, wall time; writes bench/out/generate<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("CURATE_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out"
TREC_WORDS = {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "person", "LOC": "location",
              "NUM": "number"}


def load_sst2(split: str) -> list[tuple[str, str]]:
    from curate.bench.datasets import read_sst2

    return list(zip(*read_sst2(DATA / "sst2_sentence" / f"stsa.binary.{split}"), strict=True))


def load_trec(split: str) -> list[tuple[str, str]]:
    """Coarse classes as words (the LM reads and writes them): ABBR -> abbreviation, ..."""
    from curate.bench.datasets import read_trec

    texts, codes = read_trec(DATA / "trec" / f"{split}.txt")
    return [(t, TREC_WORDS[c]) for t, c in zip(texts, codes, strict=True)]


def accuracy(embedder, train: list[tuple[str, str]], test_x: np.ndarray, test_y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    x = embedder.encode([t for t, _ in train])
    y = np.array([lab for _, lab in train])
    if len(set(y)) < 2:
        return float("nan")
    model = LogisticRegression(C=10.0, max_iter=2000).fit(x, y)
    return float((model.predict(test_x) == test_y).mean())


def run_task(name, task, train, test, n, batch_size, max_new_tokens, label_threshold, backend, embedder, seed,
             calibrate=True, max_batches=100):
    from curate.generate import (
        Candidate,
        DuplicateFilter,
        FormatFilter,
        Generator,
        LabelConsistencyFilter,
        LengthFilter,
        generate_accepted,
    )
    from curate.index import EmbeddingIndex

    labels = sorted({lab for _, lab in train})
    rng = random.Random(seed)
    by_label = {lab: [t for t, y in train if y == lab] for lab in labels}
    shots = {lab: rng.sample(texts, 3) for lab, texts in by_label.items()}  # a handful of seed examples per label
    clock = time.perf_counter()
    pool_texts = [t for t, _ in train]
    index = EmbeddingIndex.from_vectors(embedder.encode(pool_texts), kind="auto")
    dup = DuplicateFilter(embedder, threshold=0.92, pool_texts=pool_texts, index=index)
    # Batch calibration: the LM's mean label prediction over 32 real training texts (their labels unused).
    reference = [t for t, _ in rng.sample(train, 32)]
    consistency = LabelConsistencyFilter(backend, labels, threshold=label_threshold, calibrate=calibrate,
                                         reference_texts=reference)
    # How far the filter can be trusted: on 48 real examples it should keep the true label and
    # reject a wrong one (the next label in the list).
    real = rng.sample(train, 48)
    keep_true = sum(v is None for v in consistency.check([Candidate(t, y) for t, y in real])) / len(real)
    keep_wrong = sum(v is None for v in consistency.check(
        [Candidate(t, labels[(labels.index(y) + 1) % len(labels)]) for t, y in real])) / len(real)
    filters = [LengthFilter(min_chars=12, max_chars=300), FormatFilter(), dup, consistency]
    gen = Generator(backend, temperature=0.9, max_new_tokens=max_new_tokens)
    before = (backend.usage.input_tokens, backend.usage.output_tokens)
    # Per-label targets: ask only for labels still short of n / |labels| accepted, so a class the
    # generator or the filter favours does not crowd the others out.
    quota = -(-n // len(labels))
    counts = {lab: 0 for lab in labels}

    def count(kept):
        for c in kept:
            counts[c.label] += 1

    def write(k, r):
        short = [lab for lab in labels if counts[lab] < quota] or labels
        return gen.for_labels(task, short, k, rng=r, examples=shots)

    result = generate_accepted(write, filters, n, rng=np.random.default_rng(seed), backends=[backend],
                               batch_size=batch_size, max_batches=max_batches, on_batch=count)
    gen_seconds = time.perf_counter() - clock
    tokens = (backend.usage.input_tokens - before[0], backend.usage.output_tokens - before[1])
    accepted = [(c.text, c.label) for c in result.accepted]
    test_x = embedder.encode([t for t, _ in test])
    test_y = np.array([lab for _, lab in test])
    acc_gen = accuracy(embedder, accepted, test_x, test_y)
    acc_real = [accuracy(embedder, random.Random(s).sample(train, len(accepted)), test_x, test_y) for s in range(3)]
    rep = result.report
    dup_seen = rep.seen.get("duplicate", 0)
    out = {
        "task": name, "labels": labels, "accepted": len(accepted), "generated": rep.generated,
        "stop_reason": result.stop_reason, "generation_seconds": gen_seconds, "tokens_in_out": tokens,
        "filter_on_real": {"keeps_true_label": keep_true, "keeps_wrong_label": keep_wrong},
        "label_prior": dict(zip(labels, consistency.prior().round(4).tolist(), strict=True)) if calibrate else None,
        "acceptance_by_filter": {f: 1 - rep.rejected[f] / max(rep.seen[f], 1) for f in rep.seen},
        "rejected_by_filter": dict(rep.rejected), "reasons": {f: dict(c) for f, c in rep.reasons.items()},
        "duplicate_rate_vs_pool": (rep.reasons.get("duplicate", {}).get("near duplicate of the pool", 0)
                                   + rep.reasons.get("duplicate", {}).get("exact duplicate", 0)) / max(dup_seen, 1),
        "label_counts": {lab: sum(1 for _, y in accepted if y == lab) for lab in labels},
        "accuracy_generated_only": acc_gen, "accuracy_random_real_mean": float(np.mean(acc_real)),
        "accuracy_random_real_sd": float(np.std(acc_real)), "test_size": len(test),
        "examples": accepted[:8],
    }
    print(f"\n=== {name}: {len(accepted)} accepted of {rep.generated} generated in {gen_seconds:.0f}s "
          f"({tokens[0]} in / {tokens[1]} out tokens) ===")
    print(rep.describe())
    if calibrate:
        print(f"LM label prior on 32 real texts (divided out): {out['label_prior']}")
    print(f"label-consistency filter on 48 real examples: keeps {keep_true:.0%} with their true label, "
          f"{keep_wrong:.0%} with a wrong one")
    print(f"duplicate rate against the real pool: {out['duplicate_rate_vs_pool']:.1%} of candidates reaching that filter")
    print(f"accepted per label: {out['label_counts']}")
    print(f"accuracy on the real test set ({len(test)}): generated-only {acc_gen:.3f} vs {len(accepted)} random real "
          f"{np.mean(acc_real):.3f} ± {np.std(acc_real):.3f} (3 draws)")
    for text, label in accepted[:5]:
        print(f"   [{label}] {text}")
    return out


def plot(results: list[dict], path: Path) -> None:
    """Acceptance per filter (left) and test accuracy, generated-only vs as many random real (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    filters = list(results[0]["acceptance_by_filter"])
    width = 0.8 / len(results)
    for k, r in enumerate(results):
        xs = [i + k * width for i in range(len(filters))]
        axes[0].bar(xs, [r["acceptance_by_filter"].get(f, np.nan) for f in filters], width, label=r["task"])
    axes[0].set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(filters))], filters, rotation=15)
    axes[0].set(ylabel="acceptance (of what reached the filter)", ylim=(0, 1), title="rejection sampling")
    axes[0].legend()
    names = [f"{r['task']}\n({r['accepted']} examples)" for r in results]
    xs = np.arange(len(results))
    axes[1].bar(xs - 0.2, [r["accuracy_generated_only"] for r in results], 0.4, label="generated only")
    axes[1].bar(xs + 0.2, [r["accuracy_random_real_mean"] for r in results], 0.4,
                yerr=[r["accuracy_random_real_sd"] for r in results], capsize=3, label="random real (3 draws)")
    axes[1].set_xticks(xs, names)
    axes[1].set(ylabel="test accuracy (MiniLM + LR)", ylim=(0, 1), title="classifier trained on")
    axes[1].legend()
    fig.suptitle("Generation with SmolLM2-135M-Instruct: acceptance and usefulness of what it writes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loop_experiment(backend, embedder, *, seeds: list[int], rounds: int, init: int, batch: int, per_round: int,
                    pool_size: int, max_new_tokens: int, batch_size: int) -> dict:
    """Generation inside ActiveLoop on SST-2 at equal human labels: margin sampling on a real pool,
    with and without ``per_round`` generated examples (intended labels, checked) joining each round."""
    import tempfile

    from curate.acquire import make_strategy
    from curate.annotate.base import GoldAnnotator
    from curate.generate import GenerationQuery, Generator, standard_filters, worst_case_tokens
    from curate.index import EmbeddingIndex
    from curate.learners import EmbeddingClassifier
    from curate.loop import ActiveLoop
    from curate.pool import load_pool
    from curate.stopping import MaxRounds

    labels = ["negative", "positive"]
    real = random.Random(0).sample(load_sst2("train"), pool_size)
    pool = load_pool([{"text": t, "label": y} for t, y in real])
    vectors = embedder.encode(pool.texts())
    test = load_sst2("test")
    test_x, test_y = embedder.encode([t for t, _ in test]), np.array([y for _, y in test])

    def evaluate(model) -> float:
        return float((np.array(model.classes)[model.predict_proba_vectors(test_x).argmax(1)] == test_y).mean())

    runs = []
    with tempfile.TemporaryDirectory() as work:
        for seed in seeds:
            for arm in ("select only", "select + generate"):
                clock = time.perf_counter()
                index = EmbeddingIndex.from_vectors(vectors, kind="flat")
                learner = EmbeddingClassifier(vectors.copy(), labels)
                generators = []
                if arm != "select only":
                    filters = standard_filters(backend, embedder, labels=labels, pool_texts=pool.texts(), index=index,
                                               max_chars=300, label_threshold=0.5)
                    generators = [GenerationQuery.labelled(
                        Generator(backend, max_new_tokens=max_new_tokens), task="movie review sentiment (positive or "
                        "negative)", labels=labels, filters=filters, embedder=embedder, per_round=per_round,
                        label="intended", batch_size=batch_size, worst_case_tokens=worst_case_tokens(filters, 36))]
                loop = ActiveLoop(pool, strategy=make_strategy("margin"), annotator=GoldAnnotator(), learner=learner,
                                  run_dir=Path(work) / f"{arm}-{seed}".replace(" ", "_"), index=index, init_size=init,
                                  batch_size=batch, stopping=MaxRounds(rounds), evaluate=evaluate, seed=seed,
                                  generators=generators)
                res = loop.run()
                human = sum(1 for i in res.labels if i < pool_size)
                points = []
                for r in res.history.rounds:
                    bought = init + r.round * batch
                    points.append({"round": r.round, "human_labels": bought, "all_labels": r.labels,
                                   "accuracy": r.metric})
                runs.append({"arm": arm, "seed": seed, "points": points, "human_labels": human,
                             "generated": len(res.pool) - pool_size, "seconds": round(time.perf_counter() - clock, 1)})
                last = points[-1]
                print(f"loop seed {seed} {arm:>17}: {last['human_labels']} human + {len(res.pool) - pool_size} "
                      f"generated labels -> accuracy {last['accuracy']:.3f} ({runs[-1]['seconds']}s)", flush=True)
    table = {}
    for arm in ("select only", "select + generate"):
        curves = np.array([[p["accuracy"] for p in r["points"]] for r in runs if r["arm"] == arm])
        table[arm] = {"human_labels": [p["human_labels"] for p in runs[0]["points"]],
                      "mean": curves.mean(0).round(4).tolist(), "sd": curves.std(0).round(4).tolist()}
        print(f"{arm:>17}: " + "  ".join(f"{h}:{m:.3f}±{sd:.3f}" for h, m, sd in
                                          zip(table[arm]["human_labels"], table[arm]["mean"], table[arm]["sd"],
                                              strict=True)))
    return {"runs": runs, "table": table, "pool_size": pool_size, "per_round": per_round, "init": init,
            "batch": batch, "rounds": rounds, "seeds": seeds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=36)
    parser.add_argument("--tasks", default="sst2,trec")
    parser.add_argument("--no-calibrate", action="store_true", help="label consistency on raw LM probabilities")
    parser.add_argument("--max-batches", type=int, default=150, help="per task: the most batches written")
    parser.add_argument("--tag", default="")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from the JSON output")
    parser.add_argument("--loop", action="store_true",
                        help="instead: generation inside ActiveLoop vs selection alone on SST-2, equal human labels")
    parser.add_argument("--seeds", default="0,1,2", help="--loop: seeds")
    args = parser.parse_args()
    path = OUT / (f"generate{'_quick' if args.quick else ''}{args.tag}.json")
    if args.replot:
        plot(json.loads(path.read_text())["results"], path.with_suffix(".png"))
        print(f"wrote {path.with_suffix('.png')}")
        return
    import torch

    torch.set_num_threads(2)
    from curate.backends import load_backend
    from curate.embed import load_embedder

    n = 16 if args.quick else args.n
    print(f"load average at start {os.getloadavg()}; n = {n} accepted per task")
    start = time.perf_counter()
    backend = load_backend("hf", device="cpu", max_batch_size=args.batch_size)
    embedder = load_embedder()
    if args.loop:
        out = loop_experiment(backend, embedder, seeds=[int(x) for x in args.seeds.split(",")], rounds=6, init=10,
                              batch=10, per_round=8, pool_size=2000, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size)
        out["wall_seconds"] = time.perf_counter() - start
        OUT.mkdir(exist_ok=True)
        (OUT / f"generate_loop{args.tag}.json").write_text(json.dumps(out, indent=1))
        print(f"total {out['wall_seconds']:.0f}s; wrote {OUT / f'generate_loop{args.tag}.json'}")
        return
    tasks = {
        "sst2": lambda: run_task("sst2", "movie review sentiment (positive or negative)", load_sst2("train"),
                                 load_sst2("test"), n, args.batch_size, args.max_new_tokens, 0.5, backend, embedder,
                                 seed=0, calibrate=not args.no_calibrate, max_batches=args.max_batches),
        "trec": lambda: run_task("trec", "question type classification (what kind of answer the question asks for)",
                                 load_trec("train"), load_trec("test"), n, args.batch_size, args.max_new_tokens, 0.2,
                                 backend, embedder, seed=0, calibrate=not args.no_calibrate,
                                 max_batches=args.max_batches),
    }
    results = [tasks[name]() for name in args.tasks.split(",")]
    total = time.perf_counter() - start
    print(f"\ntotal wall time {total:.0f}s; load average at end {os.getloadavg()}")
    OUT.mkdir(exist_ok=True)
    path.write_text(json.dumps({"results": results, "wall_seconds": total, "n": n,
                                "args": {k: v for k, v in vars(args).items()}}, indent=2))
    plot(results, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
