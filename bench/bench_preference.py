"""Active preference learning on real preference data: the LLM judge, and which pairs to label.

    python -u bench/bench_preference.py [--quick] [--threads 2] [--judge-pairs 150] [--seeds 0,1,2]
                                        [--skip-judge] [--skip-dpo]

Data, read in place from /work/shared/data (never copied):
  * HH-RLHF harmless-base test (human labels): 2,303 usable pairs (the last assistant turn is the
    response, the conversation before it the prompt). A fixed permutation gives 500 held-out test
    pairs and a pool of the next 1,000 (``--hh-pool``).
  * AlpacaEval annotations (GPT-4 labels; ``preference`` 1 / 2 / 0 = draw): 805 pairs, 16 draws.
    Draws stay in the pool (a tie label) and leave the test set: 300 held-out non-draw pairs and a
    pool of the other 505 (500 held out would leave a pool of 289, smaller than a budget of 256 plus
    room to choose).
  The chosen response sits at position a or b by a seeded coin flip.

(a) Judge agreement. The embedded SmolLM2-135M-Instruct judges ``--judge-pairs`` pairs per dataset in
    both orders (``PairwiseJudge``: option log-probs of "A"/"B"; prompt cut to its last 64 tokens, each
    response to its first 64). Reported against the gold labels (gold draws left out): each order
    alone, the debiased combination (mean log-odds of the two orders), the same with ties (band 0.05)
    and with the MT-Bench rule (a tie when the orders disagree), the confident half, Cohen's kappa,
    and the position bias.
(b) Strategies vs random. ``ActiveLoop`` with gold labels (billed as people), a Bradley–Terry logistic
    reward model on MiniLM embeddings (``RewardModelLearner``: features [e(y), e(x)*e(y)], C=0.1, 5
    bootstrap members) retrained every round; 32 random pairs, then rounds of 32 up to 256 labels
    (budgets 64 / 128 / 256 read off the curve); accuracy on the held-out pairs; 3 seeds.
    Strategies: random; margin (smallest reward-model |margin|); disagreement (bootstrap ensemble);
    entropy_certainty (Muldrew et al. 2024: highest SmolLM2 predictive entropy of the prompt, then the
    largest reward-model |margin|; the entropy is the summed next-token entropy along response a, prompt
    cut to its last 48 tokens and the response to its first 32); prompt_diversity (k-center on prompt
    embeddings); margin_diverse (most uncertain 10x budget, then k-center).
    The DPO margin is not used in (b): with SmolLM2 as both policy and reference every margin is 0
    until the policy is trained, and a DPO round per AL round does not fit the time budget here.
(c) The DPO path end to end: ``DPOLearner`` (TRL DPOTrainer, LoRA r=8 on q/v, SmolLM2) in ``ActiveLoop``
    on 24 HH pairs (texts cut to 64 prompt / 48 response tokens; lr 1e-3, 2 epochs, beta 0.1): 8 random pairs, a DPO round, then 8
    pairs chosen by the DPO implicit-reward margin, a second round; implicit-reward accuracy on 48
    held-out pairs after each round.

Outputs: bench/out/preference.json and bench/out/preference.png (``--quick``: *_quick files).
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
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/data")
HH = DATA / "hh_rlhf" / "harmless-base" / "test.jsonl.gz"
ALPACA = DATA / "alpaca_eval" / "results" / "alpaca-7b" / "alpaca_eval_gpt4" / "annotations.json"
OUT = ROOT / "bench" / "out"
STRATEGIES = ("random", "margin", "disagreement", "entropy_certainty", "prompt_diversity", "margin_diverse")
RM_C = 0.1          # chosen on HH before the benchmark (C in 0.1/1/10; 0.1 best at 64, 256 and 1,000 labels)
RM_MEMBERS = 5
SPLIT_SEED = 0
LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)


def log(msg: str = "") -> None:
    print(msg, flush=True)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("curate", "numpy", "scikit-learn", "torch", "transformers", "trl", "peft", "sentence-transformers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        out["git"] = head.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out["git"] = "unknown"
    return out


def mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


# ---------------------------------------------------------------------------------------------- data


def load_data(sizes: dict) -> dict:
    from curate.paradigms.preference import pairs_from_preferences, read_alpaca_eval, read_hh_rlhf

    rng = np.random.default_rng(SPLIT_SEED)
    hh = read_hh_rlhf(HH)
    perm = rng.permutation(len(hh))
    hh_test = [hh[i] for i in perm[: sizes["hh_test"]]]
    hh_pool = [hh[i] for i in perm[sizes["hh_test"]: sizes["hh_test"] + sizes["hh_pool"]]]
    alpaca = read_alpaca_eval(ALPACA)
    perm = rng.permutation(len(alpaca))
    decided = [i for i in perm if not alpaca[i]["tie"]]
    test_ids = set(decided[: sizes["alpaca_test"]])
    rest = [i for i in perm if i not in test_ids][: sizes["alpaca_pool"]]
    splits = {
        "hh_rlhf": {"pool": hh_pool, "test": hh_test, "labels": "human"},
        "alpaca_eval": {"pool": [alpaca[i] for i in rest], "test": [alpaca[i] for i in sorted(test_ids)],
                        "labels": "GPT-4"},
    }
    for name, split in splits.items():
        split["pool_pairs"] = pairs_from_preferences(split["pool"], seed=1)
        split["test_pairs"] = pairs_from_preferences(split["test"], seed=2)
        log(f"  {name}: pool {len(split['pool'])} pairs ({sum(r['tie'] for r in split['pool'])} ties), "
            f"test {len(split['test'])} pairs, {split['labels']} labels")
    splits["_all"] = {"hh_rlhf": hh, "alpaca_eval": alpaca}
    return splits


class Clipper:
    """Cut texts by tokens of the LM's tokenizer: a prompt keeps its end, a response its start."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer

    def tail(self, text: str, n: int) -> str:
        ids = self.tok.encode(text, add_special_tokens=False)
        return text if len(ids) <= n else self.tok.decode(ids[-n:])

    def head(self, text: str, n: int) -> str:
        ids = self.tok.encode(text, add_special_tokens=False)
        return text if len(ids) <= n else self.tok.decode(ids[:n])


# ---------------------------------------------------------------------------------------------- (a) judge


def judge_part(lm, splits: dict, n_pairs: int) -> dict:
    from curate.paradigms.preference import PairwiseJudge, pairs_from_preferences

    from curate.annotate.hybrid import agreement

    judge = PairwiseJudge(lm, max_prompt_tokens=64, max_response_tokens=64, batch_size=16, tie_band=0.05)
    out = {}
    for name in ("hh_rlhf", "alpaca_eval"):
        rows = splits["_all"][name]
        pick = np.random.default_rng(SPLIT_SEED + 7).choice(len(rows), size=min(n_pairs, len(rows)), replace=False)
        pool = pairs_from_preferences([rows[i] for i in sorted(pick)], seed=3)
        gold = np.array(pool.column("label"), dtype=object)
        t0, tokens0 = time.perf_counter(), lm.usage.input_tokens
        v = judge.judge(pool.column("prompt"), pool.column("response_a"), pool.column("response_b"))
        seconds, tokens = time.perf_counter() - t0, lm.usage.input_tokens - tokens0
        decided = gold != "tie"

        def score(labels, gold=gold, decided=decided) -> dict:
            labels = np.array(labels, dtype=object)
            called = decided & (labels != "tie")
            acc = float(np.mean(labels[called] == gold[called])) if called.any() else float("nan")
            return {"accuracy": acc, "n": int(called.sum()), "tie_rate": float(np.mean(labels[decided] == "tie"))}

        plain = PairwiseJudge(lm, ties=False).decide(v.logodds_ab, v.logodds_ba)[0]
        mtbench = PairwiseJudge(lm, tie_band=0.0, consistent=True).decide(v.logodds_ab, v.logodds_ba)[0]
        confident = decided & (v.confidence >= np.median(v.confidence[decided]))
        kappa = agreement([str(x) for x in np.array(plain)[decided]], [str(x) for x in gold[decided]]).kappa
        result = {
            "pairs": len(pool), "gold_ties": int((~decided).sum()), "seconds": seconds, "input_tokens": int(tokens),
            "tokens_per_second": tokens / seconds,
            "order_ab (a shown first)": score(v.order_labels("ab")),
            "order_ba (b shown first)": score(v.order_labels("ba")),
            "debiased": score(plain),
            "debiased + ties (band 0.05)": score(v.labels),
            "MT-Bench rule (tie if orders disagree)": score(mtbench),
            "debiased, confident half": {"accuracy": float(np.mean(np.array(plain)[confident] == gold[confident])),
                                         "n": int(confident.sum()), "tie_rate": 0.0},
            "kappa_debiased": float(kappa),
            "position_bias_logodds_mean": float(np.mean(v.position_bias)),
            "first_shown_wins_rate": float(np.mean(np.concatenate([v.logodds_ab > 0, v.logodds_ba < 0]))),
            "orders_agree_rate": float(np.mean((v.logodds_ab > 0) == (v.logodds_ba > 0))),
            "gold_a_rate": float(np.mean(gold[decided] == "a")),
        }
        out[name] = result
        log(f"  {name}: {len(pool)} pairs x 2 orders in {seconds:.0f} s ({tokens / seconds:.0f} tokens/s); "
            f"debiased {result['debiased']['accuracy']:.3f}, order ab {result['order_ab (a shown first)']['accuracy']:.3f}, "
            f"order ba {result['order_ba (b shown first)']['accuracy']:.3f}; first shown wins "
            f"{result['first_shown_wins_rate']:.2f}")
    return out


# ---------------------------------------------------------------------------------------------- (b) strategies


def policy_entropy(lm, pool, clip: Clipper, prompt_tokens: int, response_tokens: int) -> np.ndarray:
    """SmolLM2's summed next-token entropy along response a (the prompt's predictive entropy)."""
    prompts = [lm.chat_prompt([{"role": "user", "content": clip.tail(p, prompt_tokens)}]) for p in pool.column("prompt")]
    responses = [clip.head(r, response_tokens) for r in pool.column("response_a")]
    runs = lm.completion_logprobs(prompts, responses)
    return np.array([float(np.sum(r.entropy)) for r in runs])


def run_cell(split: dict, strategy: str, seed: int, static: dict, sizes: dict) -> dict:
    from curate.paradigms.preference import RewardModelLearner, make_preference_strategy

    from curate.acquire import Random
    from curate.annotate.base import GoldAnnotator
    from curate.loop import ActiveLoop
    from curate.stopping import MaxRounds

    pool, (fa, fb), (ta, tb), gold_a = split["pool_pairs"], split["features"], split["test_features"], split["gold_a"]
    learner = RewardModelLearner(fa, fb, members=RM_MEMBERS, C=RM_C, seed=seed)

    def accuracy(model) -> float:
        return float(np.mean((model.prob_a(ta, tb) > 0.5) == gold_a))

    params = {"shortlist": 4.0} if strategy == "entropy_certainty" else {}
    with tempfile.TemporaryDirectory(prefix="bench-pref-") as tmp:
        loop = ActiveLoop(pool, strategy=make_preference_strategy(strategy, **params),
                          annotator=GoldAnnotator("label", source="human"), learner=learner, run_dir=tmp,
                          index=split["index"], init=Random(), init_size=sizes["init"], batch_size=sizes["batch"],
                          stopping=MaxRounds(sizes["rounds"]), evaluate=accuracy,
                          extra_arrays=lambda m: {**m.arrays(), **static}, seed=seed)
        t0 = time.perf_counter()
        result = loop.run()
        seconds = time.perf_counter() - t0
    return {"labels": [c["labels"] for c in result.curve], "accuracy": [c["metric"] for c in result.curve],
            "seconds": seconds}


def strategies_part(lm, splits: dict, seeds: list[int], sizes: dict, budgets: list[int]) -> dict:
    from curate.paradigms.preference import embed_pairs

    from curate.embed import load_embedder
    from curate.index import EmbeddingIndex

    embedder = load_embedder()
    clip = Clipper(lm.tokenizer)
    out = {}
    for name in ("hh_rlhf", "alpaca_eval"):
        split = splits[name]
        t0 = time.perf_counter()
        prompts, fa, fb = embed_pairs(split["pool_pairs"], embedder)
        _, ta, tb = embed_pairs(split["test_pairs"], embedder)
        labels = np.array(split["test_pairs"].column("label"))
        keep = labels != "tie"
        split.update(features=(fa, fb), test_features=(ta[keep], tb[keep]), gold_a=labels[keep] == "a",
                     index=EmbeddingIndex.from_vectors(prompts, split["pool_pairs"].ids, model=embedder.name))
        embed_s = time.perf_counter() - t0
        t0, tokens0 = time.perf_counter(), lm.usage.input_tokens
        entropy = policy_entropy(lm, split["pool_pairs"], clip, 48, 32)
        entropy_s, entropy_tokens = time.perf_counter() - t0, lm.usage.input_tokens - tokens0
        log(f"  {name}: embedded pool + test in {embed_s:.0f} s; SmolLM2 entropy of {len(entropy)} prompts in "
            f"{entropy_s:.0f} s ({entropy_tokens / max(entropy_s, 1e-9):.0f} tokens/s)")
        cells: dict[str, dict[int, dict]] = {}
        for strategy in STRATEGIES:
            cells[strategy] = {}
            for seed in seeds:
                cell = run_cell(split, strategy, seed, {"prompt_entropy": entropy}, sizes)
                cells[strategy][seed] = cell
                at = {b: cell["accuracy"][cell["labels"].index(b)] for b in budgets if b in cell["labels"]}
                log(f"    {name} {strategy:<18} seed {seed}: " + ", ".join(f"{b}: {a:.3f}" for b, a in at.items())
                    + f"  ({cell['seconds']:.1f} s)")
        out[name] = {"cells": cells, "summary": summarise(cells, seeds, budgets), "embed_seconds": embed_s,
                     "entropy_seconds": entropy_s, "entropy_tokens": int(entropy_tokens),
                     "pool": len(split["pool"]), "test": int(keep.sum())}
    return out


def summarise(cells: dict, seeds: list[int], budgets: list[int]) -> dict:
    grid = cells["random"][seeds[0]]["labels"]
    summary = {"grid": grid, "strategies": {}}
    rand = np.array([cells["random"][s]["accuracy"] for s in seeds])  # (seeds, points)
    rand_mean = rand.mean(0)
    for strategy, by_seed in cells.items():
        acc = np.array([by_seed[s]["accuracy"] for s in seeds])
        row = {"mean": acc.mean(0).tolist(), "sd": (acc.std(0, ddof=1) if len(seeds) > 1 else 0 * acc[0]).tolist()}
        for b in budgets:
            if b not in grid:
                continue
            j = grid.index(b)
            diff = acc[:, j] - rand[:, j]
            row[str(b)] = {"mean": float(acc[:, j].mean()), "sd": float(acc[:, j].std(ddof=1)) if len(seeds) > 1 else 0.0,
                           "vs_random": float(diff.mean()), "vs_random_sd": float(diff.std(ddof=1)) if len(seeds) > 1 else 0.0,
                           "seeds_beating_random": int((diff > 0).sum())}
            # Labels this strategy needs to reach random's mean accuracy at budget b (None: never on the grid).
            reach = [grid[k] for k in range(len(grid)) if acc[:, k].mean() >= rand_mean[j]]
            row[str(b)]["labels_to_match_random"] = reach[0] if reach else None
        summary["strategies"][strategy] = row
    return summary


# ---------------------------------------------------------------------------------------------- (c) DPO


def dpo_part(lm, splits: dict, sizes: dict, workdir: Path) -> dict:
    from curate.paradigms.preference import DPOLearner, make_preference_strategy, pairs_from_preferences
    from curate.paradigms.preference.export import journal_provenance, preference_dataset

    from curate.annotate.base import GoldAnnotator
    from curate.loop import ActiveLoop
    from curate.models import DEFAULT_LM, resolve_lm
    from curate.stopping import MaxRounds

    clip = Clipper(lm.tokenizer)

    def cut(rows):
        return [{"prompt": clip.tail(r["prompt"], 64), "chosen": clip.head(r["chosen"], 48),
                 "rejected": clip.head(r["rejected"], 48)} for r in rows]

    split = splits["hh_rlhf"]
    pool = pairs_from_preferences(cut(split["pool"][: sizes["dpo_pool"]]), seed=4)
    test = pairs_from_preferences(cut(split["test"][: sizes["dpo_test"]]), seed=5)
    gold_a = np.array(test.column("label")) == "a"
    run_dir = workdir / "dpo-run"
    learner = DPOLearner(pool, resolve_lm(DEFAULT_LM), run_dir=run_dir, beta=0.1, lora=LORA, chat=True,
                         train={"learning_rate": 1e-3, "num_train_epochs": sizes["dpo_epochs"],
                                "per_device_train_batch_size": 4, "max_length": 256},
                         scoring={"max_batch_tokens": 4096})
    evals = []

    def accuracy(model) -> float:
        t0 = time.perf_counter()
        margin, _ = model.score_pairs(test.column("prompt"), test.column("response_a"), test.column("response_b"))
        acc = float(np.mean(np.where(margin == 0, 0.5, (margin > 0) == gold_a)))
        evals.append({"accuracy": acc, "mean_abs_margin": float(np.mean(np.abs(margin))),
                      "seconds": time.perf_counter() - t0})
        return acc

    t0 = time.perf_counter()
    loop = ActiveLoop(pool, strategy=make_preference_strategy("margin"), annotator=GoldAnnotator("label", source="human"),
                      learner=learner, run_dir=run_dir, init_size=sizes["dpo_batch"], batch_size=sizes["dpo_batch"],
                      stopping=MaxRounds(2), evaluate=accuracy, extra_arrays=lambda m: m.arrays(), seed=0)
    result = loop.run()
    seconds = time.perf_counter() - t0
    labels, info = journal_provenance(run_dir)
    exported = preference_dataset(pool, labels, provenance=info, margins=learner.margin())
    from curate.journal import Journal

    journal = Journal(run_dir / "journal.sqlite")
    rounds = journal.rounds()
    journal.close()
    margins_before = learner.history_
    out = {"pool": len(pool), "test": len(test), "seconds": seconds, "curve": result.curve, "evals": evals,
           "rounds": margins_before, "selected_by_round": [r.selected.tolist() for r in rounds],
           "export_columns": exported.column_names, "export_rows": len(exported),
           "policy_saved": learner.policy_, "lora": LORA}
    log(f"  DPO: {len(result.labels)} labels in 2 rounds, {seconds:.0f} s; held-out implicit-reward accuracy "
        + ", ".join(f"{c['labels']}: {c['metric']:.3f}" for c in result.curve)
        + f"; exported {len(exported)} rows with columns {exported.column_names}")
    return out


# ---------------------------------------------------------------------------------------------- report


def print_tables(results: dict, budgets: list[int], seeds: list[int]) -> list[str]:
    lines = []
    if "judge" in results:
        lines += ["", "(a) SmolLM2-135M judge vs gold labels (gold ties left out; accuracy on pairs the judge called)",
                  f"{'dataset':<12} {'variant':<40} {'accuracy':>8} {'n':>5} {'ties':>6}"]
        for name, r in results["judge"].items():
            for key in ("order_ab (a shown first)", "order_ba (b shown first)", "debiased", "debiased + ties (band 0.05)",
                        "MT-Bench rule (tie if orders disagree)", "debiased, confident half"):
                s = r[key]
                lines.append(f"{name:<12} {key:<40} {s['accuracy']:>8.3f} {s['n']:>5} {s['tie_rate']:>6.2f}")
            lines.append(f"{name:<12} kappa (debiased) {r['kappa_debiased']:+.3f}; position bias {r['position_bias_logodds_mean']:+.2f} "
                         f"log-odds; first shown wins {r['first_shown_wins_rate']:.2f}; orders agree {r['orders_agree_rate']:.2f}")
    if "strategies" in results:
        lines += ["", f"(b) reward-model accuracy on held-out pairs, mean ± sd over seeds {seeds}; vs random = paired "
                  "difference (seeds beating random)"]
        for name, r in results["strategies"].items():
            lines += [f"{name} (pool {r['pool']}, test {r['test']})",
                      f"{'strategy':<18} " + " ".join(f"{b:>26}" for b in budgets) + f" {'labels to match random@' + str(budgets[-1]):>28}"]
            for strategy, row in r["summary"]["strategies"].items():
                cells = []
                for b in budgets:
                    c = row.get(str(b))
                    cells.append(" " * 26 if c is None else
                                 f"{c['mean']:.3f}±{c['sd']:.3f} ({c['vs_random']:+.3f}, {c['seeds_beating_random']}/{len(seeds)})".rjust(26))
                last = row.get(str(budgets[-1]), {}).get("labels_to_match_random")
                lines.append(f"{strategy:<18} " + " ".join(cells) + f" {str(last):>28}")
    if "dpo" in results:
        d = results["dpo"]
        lines += ["", "(c) DPO path end to end (LoRA DPO on SmolLM2, HH pairs)"]
        for c, h in zip(d["curve"], d["rounds"], strict=False):
            lines.append(f"round {c['round']}: {c['labels']} labels; train loss {h.get('train_loss', float('nan')):.4f}, "
                         f"train reward margin {h.get('reward_margin')}, held-out implicit-reward accuracy {c['metric']:.3f}")
    for line in lines:
        log(line)
    return lines


def plot(results: dict, path: Path, seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["strategies"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), dpi=110)
    axes = np.atleast_1d(axes)
    colours = plt.get_cmap("tab10").colors
    for ax, name in zip(axes, names, strict=True):
        s = results["strategies"][name]["summary"]
        grid = s["grid"]
        for k, (strategy, row) in enumerate(s["strategies"].items()):
            mean, sd = np.array(row["mean"]), np.array(row["sd"])
            style = {"lw": 2.5, "color": "black"} if strategy == "random" else {"lw": 1.5, "color": colours[k % 10]}
            ax.plot(grid, mean, marker="o", ms=3, label=strategy, **style)
            ax.fill_between(grid, mean - sd, mean + sd, alpha=0.12, color=style["color"])
        ax.set_title(f"{name}: reward model on MiniLM embeddings ({len(seeds)} seeds)")
        ax.set_xlabel("labelled pairs")
        ax.set_ylabel("held-out preference accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one seed: checks the script end to end")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--judge-pairs", type=int, default=None)
    parser.add_argument("--seeds", default=None)
    parser.add_argument("--skip-judge", action="store_true")
    parser.add_argument("--skip-dpo", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    start, load_start = time.perf_counter(), loadavg()
    log(f"load average at start: {load_start}; threads {args.threads}")
    if args.quick:
        sizes = {"hh_test": 100, "hh_pool": 160, "alpaca_test": 100, "alpaca_pool": 160, "init": 16, "batch": 16,
                 "rounds": 4, "judge": 12, "dpo_pool": 8, "dpo_test": 8, "dpo_batch": 4, "dpo_epochs": 1}
        seeds, budgets = [0], [32, 64]
    else:
        sizes = {"hh_test": 500, "hh_pool": 1000, "alpaca_test": 300, "alpaca_pool": 505, "init": 32, "batch": 32,
                 "rounds": 8, "judge": 150, "dpo_pool": 24, "dpo_test": 48, "dpo_batch": 8, "dpo_epochs": 2}
        seeds, budgets = [0, 1, 2], [64, 128, 256]
    if args.judge_pairs:
        sizes["judge"] = args.judge_pairs
    if args.seeds:
        seeds = [int(s) for s in args.seeds.split(",")]
    suffix = "_quick" if args.quick else ""
    OUT.mkdir(parents=True, exist_ok=True)

    from curate.backends import load_backend

    log("data:")
    splits = load_data(sizes)
    lm = load_backend("hf", device="cpu", max_batch_tokens=4096)
    results: dict = {"sizes": sizes, "seeds": seeds, "budgets": budgets, "versions": versions(),
                     "rm": {"C": RM_C, "members": RM_MEMBERS}, "timings": {}}
    if not args.skip_judge:
        log(f"(a) judge agreement, {sizes['judge']} pairs per dataset:")
        t0 = time.perf_counter()
        results["judge"] = judge_part(lm, splits, sizes["judge"])
        results["timings"]["judge"] = time.perf_counter() - t0
    log("(b) strategies vs random:")
    t0 = time.perf_counter()
    results["strategies"] = strategies_part(lm, splits, seeds, sizes, budgets)
    results["timings"]["strategies"] = time.perf_counter() - t0
    if not args.skip_dpo:
        log("(c) DPO path:")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bench-pref-dpo-") as tmp:
            results["dpo"] = dpo_part(lm, splits, sizes, Path(tmp))
        results["timings"]["dpo"] = time.perf_counter() - t0
    results["timings"]["total"] = time.perf_counter() - start
    results["load_average"] = {"start": load_start, "end": loadavg()}
    results["tables"] = print_tables(results, budgets, seeds)
    (OUT / f"preference{suffix}.json").write_text(json.dumps(results, indent=1, default=str))
    plot(results, OUT / f"preference{suffix}.png", seeds)
    log(f"\nwall time {results['timings']['total'] / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in results['timings'].items())}); "
        f"load average at end: {results['load_average']['end']}")
    log(f"wrote {OUT / f'preference{suffix}.json'} and {OUT / f'preference{suffix}.png'}")


if __name__ == "__main__":
    main()
