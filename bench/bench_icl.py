"""Active ICL on SST-2, TREC and AG News with the embedded SmolLM2-135M-Instruct and MiniLM.

    python -u bench/bench_icl.py [--quick] [--datasets sst2,trec,agnews] [--n-test 200] [--seeds 0,1,2]
                                 [--budgets 18,100] [--sa-retrieval fixed|knn] [--threads 2]

For each dataset, the same test inputs (a fixed-seed sample of the test split) for every condition,
4 demonstrations, accuracy by option log-probs (raw, and with contextual calibration from the
content-free inputs "N/A", "" and "[MASK]", Zhao et al. 2021):

* zero-shot;
* random demonstrations: one draw of 4 from the labelled pool per seed, shared by every input;
* k-NN (KATE): the 4 nearest labelled examples by MiniLM cosine, most similar next to the input;
* k-NN + perplexity: of the 6 nearest, the 4 whose demonstration has the lowest perplexity under the
  LM (Margatina et al. 2023; Gonen et al. 2023), shown by similarity;
* selective annotation (Su et al. 2023): per seed a random 3,000-example unlabelled pool (as in the
  paper); vote-k (k=10) or random choose ``budget`` examples through ``curate.loop.ActiveLoop`` with a
  gold annotator; the demonstrations then come from the annotated set only (``--sa-retrieval``).

Data (read in place from /work/shared/data, never copied): SST-2 ``stsa.binary.train`` pool / ``.test``
inputs; TREC ``train.txt`` / ``test.txt`` (6 coarse classes); AG News ``test.csv`` split by a seed-0
permutation into a 6,000 pool and 1,600 held-out rows (text = title + description, cleaned as in
bench_al_classification.py, so MiniLM's embedding cache is shared).

Throughput: on the first ``--throughput-n`` inputs, the harness (``score_options``: answer-position
logits, batching, shared heads) against a plain one-at-a-time full-logits loop, both uncalibrated,
with the predictions compared; once with k-NN prompts (every input has its own demonstrations) and
once with one fixed demonstration set (the shared head).

Outputs: bench/out/icl.json and bench/out/icl_<dataset>.png (``--quick`` writes ``*_quick``).
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
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data")
OUT = ROOT / "bench" / "out"
DATASETS = ("sst2", "trec", "agnews")
SPLIT_SEED = 0
AG_POOL, AG_TEST = 6000, 1600
CONTENT_FREE = ["N/A", "", "[MASK]"]
# Anchors from the literature, checked at the end.
VOTEK_ANCHOR = 0.129  # Su et al. 2023: vote-k over random at 18 labels, relative (GPT-J)

# Per dataset: the label set in the data, the words the model answers with (single tokens after a
# space in SmolLM2's vocabulary, checked at run time), and the templates.
SPECS = {
    "sst2": dict(classes=["negative", "positive"], verbal={},
                 instruction="Is the sentiment of the review negative or positive?",
                 input_template="Review: {text}", answer_template="Sentiment: {label}"),
    "trec": dict(classes=["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"],
                 verbal={"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human",
                         "LOC": "location", "NUM": "number"},
                 instruction="What does the question ask for: abbreviation, description, entity, human, location or "
                             "number?",
                 input_template="Question: {text}", answer_template="Answer type: {label}"),
    "agnews": dict(classes=["World", "Sports", "Business", "Sci/Tech"],
                   verbal={"World": "world", "Sports": "sports", "Business": "business", "Sci/Tech": "technology"},
                   instruction="Is the topic of the news article world, sports, business or technology?",
                   input_template="Article: {text}", answer_template="Topic: {label}"),
}


def log(msg: str = "") -> None:
    print(msg, flush=True)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("curate", "numpy", "torch", "transformers", "sentence-transformers", "faiss-cpu", "datasets",
                 "matplotlib"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Split:
    name: str
    pool_texts: list[str]
    pool_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    note: str


def load_split(name: str) -> Split:
    # The readers are curate's benchmark readers: the same texts, so the embedding cache is shared.
    from curate.bench.datasets import read_agnews, read_sst2, read_trec

    if name == "sst2":
        pt, pl = read_sst2(DATA / "sst2_sentence" / "stsa.binary.train")
        tt, tl = read_sst2(DATA / "sst2_sentence" / "stsa.binary.test")
        note = "pool = stsa.binary.train, inputs from stsa.binary.test"
    elif name == "trec":
        pt, pl = read_trec(DATA / "trec" / "train.txt")
        tt, tl = read_trec(DATA / "trec" / "test.txt")
        note = "pool = train.txt, inputs from test.txt (coarse labels)"
    elif name == "agnews":
        texts, labels, _ = read_agnews(DATA / "ag_news")
        order = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
        pool_pos, test_pos = order[:AG_POOL], order[AG_POOL:AG_POOL + AG_TEST]
        pt, pl = [texts[i] for i in pool_pos], [labels[i] for i in pool_pos]
        tt, tl = [texts[i] for i in test_pos], [labels[i] for i in test_pos]
        note = f"test.csv split by a seed-{SPLIT_SEED} permutation: {AG_POOL} pool / {AG_TEST} held out, inputs from those"
    else:
        raise ValueError(f"Unknown dataset '{name}'. Known: {', '.join(DATASETS)}.")
    unknown = sorted((set(pl) | set(tl)) - set(SPECS[name]["classes"]))
    if unknown:
        raise ValueError(f"{name}: labels {unknown} are not among the classes {SPECS[name]['classes']}.")
    return Split(name, pt, pl, tt, tl, note)


# ---------------------------------------------------------------------------------------------- the plain loop


def plain_loop(backend, prompts: list[str], options: list[str]) -> tuple[np.ndarray, float]:
    """The reference: one prompt at a time, the causal LM's full logits at every position, the last read."""
    import torch

    tok, model = backend.tokenizer, backend.model
    ids = [tok.encode(o, add_special_tokens=False)[0] for o in options]
    rows = []
    clock = time.perf_counter()
    with torch.inference_mode():
        for p in prompts:
            logits = model(input_ids=torch.tensor([tok.encode(p, add_special_tokens=False)])).logits[0, -1]
            rows.append(torch.log_softmax(logits.float(), -1)[ids].double().numpy())
    return np.array(rows), time.perf_counter() - clock


# ---------------------------------------------------------------------------------------------- one dataset


def summarise(runs: list[dict]) -> dict:
    from curate.paradigms.icl.evaluate import mean_sd

    acc = mean_sd([r["accuracy"] for r in runs])
    cal = mean_sd([r["calibrated_accuracy"] for r in runs])
    whole = mean_sd([r["dataset_calibrated_accuracy"] for r in runs])
    return {"accuracy_mean": acc[0], "accuracy_sd": acc[1], "calibrated_mean": cal[0], "calibrated_sd": cal[1],
            "dataset_calibrated_mean": whole[0], "dataset_calibrated_sd": whole[1], "seeds": len(runs), "seconds": sum(r["seconds"] for r in runs),
            "forward_tokens": sum(r["forward_tokens"] for r in runs), "runs": runs}


def run_dataset(name: str, args, backend, embedder, *, first: bool) -> dict:
    from curate.paradigms.icl.annotate import plan_annotation, select_and_annotate
    from curate.paradigms.icl.config import AnnotateConfig, PromptConfig, RetrieveConfig
    from curate.paradigms.icl.evaluate import build_prompts, evaluate_icl, evaluate_prompts
    from curate.paradigms.icl.prompts import PromptBuilder
    from curate.paradigms.icl.retrieve import DemonstrationRetriever
    from curate.paradigms.icl.scoring import score_options

    from curate.annotate import GoldAnnotator
    from curate.index import EmbeddingIndex
    from curate.pool import load_pool

    spec = SPECS[name]
    split = load_split(name)
    started = time.perf_counter()
    pool_x = embedder.encode(split.pool_texts)
    hits = embedder.last_hits
    pick = np.sort(np.random.default_rng([SPLIT_SEED, 1]).choice(len(split.test_texts), size=args.n_test, replace=False))
    texts = [split.test_texts[i] for i in pick]
    gold = [split.test_labels[i] for i in pick]
    test_x = embedder.encode(texts)
    index = EmbeddingIndex.from_vectors(pool_x, kind="flat", model=embedder.name)
    pool_ids = np.arange(len(split.pool_texts))
    log(f"\n[{name}] {split.note}; pool {len(pool_ids)}, {len(texts)} test inputs; embedded in "
        f"{time.perf_counter() - started:.1f}s ({hits} of {len(pool_ids)} pool texts from the cache)")

    prompt_cfg = PromptConfig(instruction=spec["instruction"], input_template=spec["input_template"],
                              answer_template=spec["answer_template"], verbalizers=spec["verbal"],
                              max_demo_tokens=args.max_demo_tokens, max_input_tokens=args.max_input_tokens)
    builder = PromptBuilder.for_backend(prompt_cfg, spec["classes"], backend)
    tok = backend.tokenizer
    multi = [o for o in builder.options if len(tok.encode(o, add_special_tokens=False)) != 1]
    lengths = np.array([len(tok.encode(t, add_special_tokens=False)) for t in split.pool_texts[:3000]])
    cut_share = float(np.mean(lengths > args.max_demo_tokens))
    log(f"[{name}] options {builder.options} ({'all single tokens' if not multi else f'multi-token: {multi}'}); "
        f"demonstration texts: mean {lengths.mean():.1f} tokens, {100 * cut_share:.0f}% cut to {args.max_demo_tokens}")

    def condition(retrieve: RetrieveConfig, seeds: list[int], *, labelled=None, label: str) -> dict:
        ids, labels, demo_texts, idx = labelled if labelled is not None else (
            pool_ids, split.pool_labels, split.pool_texts, index)
        retriever = DemonstrationRetriever(retrieve, index=idx, ids=ids, labels=labels, texts=demo_texts,
                                           backend=backend, builder=builder)
        runs = []
        for seed in seeds:
            result = evaluate_icl(backend, builder, retriever, texts, gold, test_x, seed=seed, calibrate=True,
                                  content_free=CONTENT_FREE, max_batch_tokens=args.max_batch_tokens,
                                  max_batch_size=args.max_batch_size)
            runs.append({"seed": seed, **result.summary()})
        out = summarise(runs)
        log(f"  {label:<24} raw {out['accuracy_mean']:.3f}  calibrated {out['calibrated_mean']:.3f} (per prompt) "
            f"{out['dataset_calibrated_mean']:.3f} (dataset)  [{len(seeds)} seed(s), {out['seconds']:.0f}s, "
            f"{out['forward_tokens']} tokens, {len(texts) * len(seeds) / out['seconds']:.2f} inputs/s; load {loadavg()}]")
        return out

    results: dict[str, dict] = {}
    if "baselines" in args.parts:
        results["zero-shot"] = condition(RetrieveConfig(method="zero_shot"), [0], label="zero-shot")
        results["random"] = condition(RetrieveConfig(method="fixed", k=4), args.seeds, label="random demonstrations")
        results["k-NN"] = condition(RetrieveConfig(method="knn", k=4, candidates=4), [0], label="k-NN")
        results["k-NN + perplexity"] = condition(
            RetrieveConfig(method="knn", k=4, candidates=6, rerank="demo_perplexity"), [0], label="k-NN + perplexity")

    # Selective annotation: per seed one unlabelled pool; each strategy buys `budget` gold labels.
    selection_seconds: dict[str, list[float]] = {}
    for budget in args.budgets if "sa" in args.parts else []:
        for strategy in ("votek", "random"):
            runs = []
            for seed in args.seeds:
                sub = np.sort(np.random.default_rng([SPLIT_SEED, 2, seed]).choice(
                    len(pool_ids), size=min(args.sa_pool, len(pool_ids)), replace=False))
                pool = load_pool([{"text": split.pool_texts[i], "label": split.pool_labels[i]} for i in sub])
                sub_index = EmbeddingIndex.from_vectors(pool_x[sub], pool.ids, kind="flat", model=embedder.name)
                plan = plan_annotation(AnnotateConfig(strategy=strategy, budget=budget,
                                                      params={"k": 10} if strategy == "votek" else {}))
                clock = time.perf_counter()
                with tempfile.TemporaryDirectory() as run_dir:
                    loop = select_and_annotate(pool, sub_index, plan, annotator=GoldAnnotator(), classes=spec["classes"],
                                               run_dir=run_dir, seed=seed)
                selection_seconds.setdefault(f"{strategy}-{budget}", []).append(time.perf_counter() - clock)
                chosen = np.array(sorted(loop.labels), dtype=np.int64)
                labelled = (chosen, [str(loop.labels[i]) for i in chosen], pool.texts(chosen), sub_index)
                # A fixed draw is label-balanced: one unlucky draw of a single label would otherwise decide the
                # comparison (it makes the LM answer that label for every input).
                retrieve = (RetrieveConfig(method="knn", k=4, candidates=4) if args.sa_retrieval == "knn"
                            else RetrieveConfig(method="fixed", k=4, balance_labels=True))
                one = condition(retrieve, [seed], labelled=labelled, label=f"{strategy} {budget} (seed {seed})")
                runs.extend(one["runs"])
            results[f"{strategy} {budget}"] = summarise(runs)

    # Throughput: the harness against a plain one-at-a-time full-logits loop on the same prompts, both
    # uncalibrated. k-NN prompts on every dataset (each input has its own demonstrations); one fixed
    # demonstration set on the first dataset only (where the shared head pays), also without sharing.
    throughput = {}
    n = min(args.throughput_n, len(texts))
    kinds = (("k-NN", "fixed") if first else ("k-NN",)) if "throughput" in args.parts else ()
    for kind in kinds:
        rcfg = RetrieveConfig(method="knn", k=4, candidates=4) if kind == "k-NN" else RetrieveConfig(method="fixed", k=4)
        retriever = DemonstrationRetriever(rcfg, index=index, ids=pool_ids, labels=split.pool_labels,
                                           texts=split.pool_texts)
        rng = np.random.default_rng(0)
        prompts = build_prompts(builder, texts[:n], retriever.retrieve(test_x[:n], rng=rng), rng=rng)
        harness = evaluate_prompts(backend, builder, prompts, gold[:n], calibrate=False,
                                   max_batch_tokens=args.max_batch_tokens, max_batch_size=args.max_batch_size)
        ref, plain_s = plain_loop(backend, [p.text for p in prompts], builder.options)
        same = [builder.labels[i] for i in ref.argmax(1)] == harness.predictions
        t = {"inputs": n, "plain_inputs_per_second": n / plain_s, "harness_inputs_per_second": n / harness.seconds,
             "speedup": plain_s / harness.seconds, "same_predictions": bool(same),
             "tokens_per_prompt": float(np.mean([len(tok.encode(p.text)) for p in prompts]))}
        extra = ""
        if kind == "fixed":
            clock = time.perf_counter()
            score_options(backend, [p.text for p in prompts], builder.options, max_batch_tokens=args.max_batch_tokens,
                          max_batch_size=args.max_batch_size)
            t["harness_no_sharing_inputs_per_second"] = n / (time.perf_counter() - clock)
            extra = f"; without head sharing {t['harness_no_sharing_inputs_per_second']:.2f}"
        throughput[kind] = t
        log(f"  throughput ({kind}, {n} inputs, ~{t['tokens_per_prompt']:.0f} tokens/prompt): plain loop "
            f"{t['plain_inputs_per_second']:.2f} inputs/s; harness {t['harness_inputs_per_second']:.2f} "
            f"(x{t['speedup']:.1f}{extra}); same predictions: {same}; load {loadavg()}")
    return {"note": split.note, "pool_size": len(pool_ids), "n_test": len(texts), "test_positions": pick.tolist(),
            "options": builder.options, "demo_tokens_mean": float(lengths.mean()), "demo_cut_share": cut_share,
            "conditions": {k: {kk: vv for kk, vv in v.items()} for k, v in results.items()},
            "selection_seconds": selection_seconds, "throughput": throughput,
            "majority": max(gold.count(c) for c in set(gold)) / len(gold), "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------- reporting


def table(name: str, res: dict) -> list[str]:
    lines = [f"\n{name}: accuracy on {res['n_test']} test inputs (majority class {res['majority']:.3f}); calibrated = "
             "contextual calibration per prompt (Zhao et al.) / with one dataset-wide content-free estimate",
             f"  {'condition':<20} {'raw':>15} {'calibrated':>15} {'cal. dataset':>15} {'seeds':>5} {'inputs/s':>9}"]
    for cond, r in res["conditions"].items():
        many = r["seeds"] > 1

        def cell(key: str, r=r, many=many) -> str:
            return f"{r[key + '_mean']:.3f}" + (f" +- {r[key + '_sd']:.3f}" if many else "")

        rate = res["n_test"] * r["seeds"] / r["seconds"]
        lines.append(f"  {cond:<20} {cell('accuracy'):>15} {cell('calibrated'):>15} {cell('dataset_calibrated'):>15} "
                     f"{r['seeds']:>5} {rate:>9.2f}")
    return lines


def anchors(name: str, res: dict, budgets: list[int]) -> list[str]:
    c = res["conditions"]
    out = []
    scopes = (("raw", "accuracy_mean"), ("calibrated per prompt", "calibrated_mean"),
              ("calibrated dataset-wide", "dataset_calibrated_mean"))
    for kind, key in scopes if "k-NN" in c else ():
        knn, rnd = c["k-NN"][key], c["random"][key]
        out.append(f"  [{name}] similar beats random ({kind}): k-NN {knn:.3f} vs random {rnd:.3f} -> "
                   f"{'HOLDS' if knn > rnd else 'does not hold'}")
    for budget in [b for b in budgets if f"votek {b}" in c]:
        for kind, key in scopes:
            v, r = c[f"votek {budget}"][key], c[f"random {budget}"][key]
            rel = (v - r) / r if r > 0 else float("nan")
            out.append(f"  [{name}] vote-k vs random at {budget} ({kind}): {v:.3f} vs {r:.3f}, {100 * rel:+.1f}% relative"
                       + (f" (anchor +{100 * VOTEK_ANCHOR:.1f}%) -> {'HOLDS' if rel > 0 else 'does not hold'}"
                          if budget == 18 else ""))
    if "zero-shot" not in c:
        return out
    zero = max(c["zero-shot"]["accuracy_mean"], c["zero-shot"]["calibrated_mean"])
    best = max((r[key], f"{k} ({kind})") for k, r in c.items() if k != "zero-shot" for kind, key in scopes[1:])
    out.append(f"  [{name}] best selection + calibration: {best[1]} {best[0]:.3f} vs zero-shot {zero:.3f} (the better of "
               f"raw and calibrated) -> {'beats' if best[0] > zero else 'does not beat'} zero-shot")
    return out


def plot(name: str, res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(res["conditions"])
    raw = [res["conditions"][c]["accuracy_mean"] for c in conds]
    raw_sd = [res["conditions"][c]["accuracy_sd"] for c in conds]
    cal = [res["conditions"][c]["calibrated_mean"] for c in conds]
    cal_sd = [res["conditions"][c]["calibrated_sd"] for c in conds]
    whole = [res["conditions"][c]["dataset_calibrated_mean"] for c in conds]
    whole_sd = [res["conditions"][c]["dataset_calibrated_sd"] for c in conds]
    x = np.arange(len(conds))
    fig, ax = plt.subplots(figsize=(1.2 * len(conds) + 5, 4))
    ax.bar(x - 0.27, raw, 0.27, yerr=raw_sd, capsize=3, label="raw")
    ax.bar(x, cal, 0.27, yerr=cal_sd, capsize=3, label="calibrated per prompt (Zhao et al. 2021)")
    ax.bar(x + 0.27, whole, 0.27, yerr=whole_sd, capsize=3, label="calibrated, one dataset-wide estimate")
    ax.axhline(res["majority"], color="grey", ls=":", lw=1, label="majority class")
    ax.set_xticks(x, conds, rotation=30, ha="right")
    ax.set_ylabel(f"accuracy ({res['n_test']} test inputs)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{name}: SmolLM2-135M-Instruct, 4 demonstrations (mean +- sd over seeds)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--n-test", type=int, default=200, help="test inputs per dataset (the same for every condition)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default="18,100")
    parser.add_argument("--sa-pool", type=int, default=3000, help="unlabelled pool per seed for selective annotation")
    parser.add_argument("--sa-retrieval", choices=["fixed", "knn"], default="fixed",
                        help="demonstrations from the annotated set: one random draw per seed (fixed, cheap: one "
                             "shared head) or k-NN per input (as Su et al.; ~12x the LM cost)")
    parser.add_argument("--max-demo-tokens", type=int, default=32, help="each demonstration's text cut to this")
    parser.add_argument("--max-input-tokens", type=int, default=64, help="each test input's text cut to this")
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--throughput-n", type=int, default=20)
    parser.add_argument("--parts", default="baselines,sa,throughput",
                        help="what to run: baselines (zero-shot, random, k-NN, k-NN + perplexity), sa (selective "
                             "annotation), throughput")
    parser.add_argument("--tag", default="", help="suffix for the output files, e.g. '_sa_knn'")
    parser.add_argument("--quick", action="store_true", help="16 inputs, seeds 0,1, a 500-example annotation pool")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch/BLAS threads (default 2)")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.budgets = [int(b) for b in args.budgets.split(",") if b]
    args.parts = {p for p in args.parts.split(",") if p}
    if args.parts - {"baselines", "sa", "throughput"}:
        parser.error(f"unknown --parts {sorted(args.parts - {'baselines', 'sa', 'throughput'})}")
    datasets = [d for d in args.datasets.split(",") if d]
    if args.quick:
        args.n_test, args.seeds, args.sa_pool, args.throughput_n = 16, [0, 1], 500, 4
    if any(d not in DATASETS for d in datasets):
        parser.error(f"unknown datasets {datasets}; known: {', '.join(DATASETS)}")

    import torch

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    load_start = loadavg()
    log(f"load average at start: {load_start} ({os.cpu_count()} CPUs; torch/BLAS threads pinned to {THREADS}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})")
    vers = versions()
    log("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    cuts = [f"demonstration texts cut to {args.max_demo_tokens} tokens and test inputs to {args.max_input_tokens}",
            "k-NN and k-NN + perplexity are deterministic: one run each (no sd)",
            f"selective annotation: a {args.sa_pool}-example unlabelled pool per seed (Su et al. use 3,000)",
            ("selective annotation evaluated with one label-balanced random draw of 4 demonstrations from the annotated "
             "set per seed (random prompt retrieval, one shared head), not k-NN retrieval from it as in Su et al. "
             "(~12x the LM cost)"
             if args.sa_retrieval == "fixed" else "selective annotation evaluated with k-NN retrieval from the annotated set")]
    if args.quick:
        cuts.insert(0, f"QUICK: {args.n_test} test inputs, seeds {args.seeds}")
    if args.parts != {"baselines", "sa", "throughput"}:
        cuts.insert(0, f"only {', '.join(sorted(args.parts))} (--parts)")
    log("what was cut to fit the time budget:\n  - " + "\n  - ".join(cuts))

    from curate.backends.hf import TransformersBackend
    from curate.embed import load_embedder

    clock = time.perf_counter()
    backend = TransformersBackend(device="cpu")
    backend.model  # noqa: B018 - load now, so that the first condition's time is its own
    embedder = load_embedder()
    log(f"models loaded in {time.perf_counter() - clock:.1f}s: {backend.name} (context {backend.context_length}), "
        f"{embedder.name}")
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = args.tag + ("_quick" if args.quick else "")
    report = {"versions": vers, "threads": THREADS, "load_average_start": load_start, "cuts": cuts,
              "config": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()}, "datasets": {}}
    lines: list[str] = []
    verdicts: list[str] = []
    for name in datasets:
        res = run_dataset(name, args, backend, embedder, first=name == datasets[0])
        report["datasets"][name] = res
        lines += table(name, res)
        verdicts += anchors(name, res, args.budgets)
        plot(name, res, OUT / f"icl_{name}{suffix}.png")
        (OUT / f"icl{suffix}.json").write_text(json.dumps(report, indent=1, default=float))
        log("\n".join(table(name, res)))
        log(f"  [{name}] done in {res['seconds']:.0f}s; elapsed {time.perf_counter() - started:.0f}s")

    log("\n" + "=" * 100)
    log("\n".join(lines))
    log("\nthroughput (test inputs per second, uncalibrated; plain = one at a time with full logits):")
    for name, res in report["datasets"].items():
        for kind, t in res["throughput"].items():
            sharing = (f"; without head sharing {t['harness_no_sharing_inputs_per_second']:.2f}"
                       if "harness_no_sharing_inputs_per_second" in t else "")
            log(f"  {name:<7} {kind:<6} ({t['inputs']} inputs, ~{t['tokens_per_prompt']:.0f} tokens/prompt): plain "
                f"{t['plain_inputs_per_second']:.2f}  harness {t['harness_inputs_per_second']:.2f} (x{t['speedup']:.1f}"
                f"{sharing})  same predictions: {t['same_predictions']}")
        if "k-NN" in res["conditions"]:
            calibrated = res["conditions"]["k-NN"]
            log(f"  {name:<7} k-NN, all {res['n_test']} inputs with calibration (4 prompts each): "
                f"{res['n_test'] / calibrated['seconds']:.2f} inputs/s")
    log("\npublished anchors at 135M:")
    log("\n".join(verdicts))
    total = time.perf_counter() - started
    report.update(load_average_end=loadavg(), total_seconds=total, verdicts=verdicts)
    (OUT / f"icl{suffix}.json").write_text(json.dumps(report, indent=1, default=float))
    log(f"\nload average at end: {loadavg()}; total wall time {total / 60:.1f} min")
    log(f"wrote {OUT / f'icl{suffix}.json'} and icl_<dataset>{suffix}.png")


if __name__ == "__main__":
    main()
