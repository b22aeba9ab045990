"""Active SFT benchmark: which AlpacaEval instructions to buy GPT-4 answers for, at equal budgets.

    python -u bench/bench_sft.py [--seeds 0,1,2] [--budgets 16,32,64] [--quick] [--threads 2]

* Data (read in place from /work/shared/data, never copied): the 805 AlpacaEval instructions with
  GPT-4's responses (``results/gpt4/model_outputs.json``) as the teacher's answers. A fixed split
  (seed 0): 200 held out, the rest is the pool.
* Model: the embedded SmolLM2-135M-Instruct, LoRA (r 8 on every linear layer), trained with TRL's
  ``SFTTrainer`` (completion-only loss) through curate's ``ResponseLearner``; each round continues
  from the last round's weights on the newly bought rows (one epoch).
* Strategies, all through ``ActiveLoop`` with the same first round (random) per seed... except the
  two one-shot ones, which pick the whole budget from scores of the base model:
  - ``uncertainty``: the current model's mean token entropy of its own greedy answer, on a random
    subset of candidates each round (``AnswerUncertainty(sample=...)``);
  - ``ifd``: top IFD of the base model (Superfiltering with SmolLM2 as the small scorer), IFD >= 1 dropped;
  - ``deita``: IFD-first with DEITA's diversity rule (cosine distance > 0.1 on MiniLM prompt embeddings);
  - ``random``.
* Metric: held-out perplexity of the teacher's responses (first ``--response-tokens`` tokens) given
  the prompt in the chat template, after each round; wall time per round (selection, training, eval).

Cuts to fit 60 minutes on 2 CPU cores are printed at the start (prompt and response lengths, the
held-out size, the uncertainty subset).

Outputs: bench/out/sft.json and bench/out/sft.png (``--quick``: ``*_quick``).
"""

from __future__ import annotations

import os
import sys

import _env  # noqa: E402  (bench/ is on sys.path when a script in it runs)

THREADS = _env.pin(sys.argv[1:])

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path("/work/shared/data/alpaca_eval/results/gpt4/model_outputs.json")
OUT = ROOT / "bench" / "out"
STRATEGIES = ("uncertainty", "ifd", "deita", "random")
LORA = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear", "lora_dropout": 0.0}

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)


def log(msg: str = "") -> None:
    print(msg, flush=True)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


class FixedOrder:
    """A one-shot ranking as a loop strategy: each round takes the next best unlabelled ids."""

    def __init__(self, order: np.ndarray) -> None:
        self.order = np.asarray(order, dtype=np.int64)

    def select(self, state, budget, *, rng):
        from curate.acquire.base import Selection

        allowed = set(state.candidates.tolist())
        picks = [i for i in self.order.tolist() if i in allowed][:budget]
        return Selection(np.asarray(picks, dtype=np.int64))


def truncate(tokenizer, text: str, n: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= n else tokenizer.decode(ids[:n]).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default="16,32,64", help="label counts to report (rounds of the first's size "
                                                               "up to the last)")
    parser.add_argument("--heldout", type=int, default=200, help="held-out instructions (the metric)")
    parser.add_argument("--eval-n", type=int, default=64, help="of them, scored for perplexity after every round")
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--response-tokens", type=int, default=48)
    parser.add_argument("--sample", type=int, default=32, help="uncertainty: candidates answered per round")
    parser.add_argument("--answer-tokens", type=int, default=16, help="uncertainty: length of the model's own answer")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    budgets = [int(b) for b in args.budgets.split(",") if b]
    strategies = [s for s in args.strategies.split(",") if s]
    if args.quick:
        seeds, budgets, args.eval_n, args.sample = [0], [4, 12], 8, 8
    step = budgets[0]
    if any(b % step for b in budgets):
        raise SystemExit(f"--budgets must be multiples of the first ({step}): rounds buy {step} each.")

    import torch

    torch.set_num_threads(args.threads)
    from curate.paradigms.sft.oneshot import diverse_top
    from curate.paradigms.sft.run import heldout_loglik
    from transformers import AutoTokenizer

    from curate.annotate.base import GoldAnnotator
    from curate.backends.hf import TransformersBackend
    from curate.embed import load_embedder
    from curate.loop import ActiveLoop
    from curate.models import resolve_lm
    from curate.pool import load_pool
    from curate.responses import AnswerUncertainty, ResponseLearner
    from curate.stopping import MaxRounds

    started = time.perf_counter()
    log(f"load average at start: {loadavg()}; threads {args.threads}")
    cuts = [f"prompts cut to {args.prompt_tokens} tokens and responses to {args.response_tokens} (training and metric)",
            f"held-out perplexity on {args.eval_n} of the {args.heldout} held-out instructions",
            f"uncertainty scores a random {args.sample} of the candidates per round, answers of {args.answer_tokens} tokens",
            "one epoch per round on the new rows (continue from the last round), LoRA r 8, lr "
            f"{args.lr}", "IFD and DEITA rank once with the base model (one-shot curation), not per round"]
    if args.quick:
        cuts.insert(0, "QUICK")
    log("what was cut to fit the time budget:\n  - " + "\n  - ".join(cuts))

    model = resolve_lm("SmolLM2-135M-Instruct")
    tok = AutoTokenizer.from_pretrained(model)
    raw = json.loads(DATA.read_text())
    perm = np.random.default_rng(0).permutation(len(raw))
    held, rest = perm[: args.heldout], perm[args.heldout:]
    if args.quick:
        rest = rest[:40]
    rows = [{"prompt": truncate(tok, raw[i]["instruction"], args.prompt_tokens),
             "response": truncate(tok, raw[i]["output"], args.response_tokens)} for i in rest]
    pool = load_pool(rows)
    test = [(truncate(tok, raw[i]["instruction"], args.prompt_tokens),
             truncate(tok, raw[i]["output"], args.response_tokens)) for i in held[: args.eval_n]]
    test_prompts, test_responses = [p for p, _ in test], [r for _, r in test]
    log(f"pool {len(pool)} instructions, held-out {len(test)} scored; {time.perf_counter() - started:.1f}s")

    # One-shot rankings from the base model (shared by every seed).
    clock = time.perf_counter()
    base = TransformersBackend(model, device="cpu")
    prompts = [base.chat_prompt([{"role": "user", "content": p}]) for p in pool.column("prompt")]
    responses = list(pool.column("response"))
    ifd = base.perplexity(responses, prompts=prompts) / base.perplexity(responses)
    ifd_score = np.where(ifd >= 1.0, -np.inf, ifd)
    ifd_seconds = time.perf_counter() - clock
    embedder = load_embedder()
    vectors = embedder.encode(list(pool.column("prompt")))
    orders = {"ifd": np.argsort(-ifd_score, kind="stable"),
              "deita": diverse_top(ifd_score, vectors, budgets[-1], min_distance=0.1)}
    log(f"IFD of {len(pool)} pairs with the base model: {ifd_seconds:.1f}s ({(ifd >= 1).sum()} with IFD >= 1 dropped); "
        f"DEITA picks {len(orders['deita'])}")

    # Base model's held-out perplexity (round "0 labels").
    class _Base:
        chat, system = True, None

        def render(self, p):
            return base.chat_prompt([{"role": "user", "content": p}])

        def backend(self):
            return base

    clock = time.perf_counter()
    base_ppl = math.exp(-heldout_loglik(_Base(), test_prompts, test_responses))
    log(f"base model held-out perplexity {base_ppl:.3f} ({time.perf_counter() - clock:.1f}s)")

    results: dict[str, dict] = {s: {} for s in strategies}
    timings: dict[str, list] = {s: [] for s in strategies}
    scratch = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    rounds = budgets[-1] // step
    try:
        for seed in seeds:
            for name in strategies:
                run_dir = scratch / f"{name}-{seed}"
                learner = ResponseLearner(pool, model, run_dir=run_dir, lora=LORA, max_length=160,
                                          max_new_tokens=args.answer_tokens, seed=seed,
                                          train={"num_train_epochs": 1, "per_device_train_batch_size": 4,
                                                 "learning_rate": args.lr, "seed": seed})
                if name == "uncertainty":
                    from curate.acquire.strategies import TopK

                    strategy = TopK(AnswerUncertainty(learner, "entropy", sample=args.sample, seed=seed))
                elif name == "random":
                    from curate.acquire.strategies import Random

                    strategy = Random()
                else:
                    strategy = FixedOrder(orders[name])
                init = strategy if name in ("ifd", "deita") else None  # one-shot: the whole budget by score
                curve: list[tuple[int, float]] = []
                marks = {"t": time.perf_counter()}

                def evaluate(model_learner, curve=curve, marks=marks, seed=seed, name=name):
                    labels = len(model_learner.trained_ids_)
                    train_s = model_learner.history_[-1]["seconds"]
                    ppl, eval_s = float("nan"), 0.0
                    if labels in budgets:  # between reported budgets: no eval
                        clock = time.perf_counter()
                        ppl = math.exp(-heldout_loglik(model_learner, test_prompts, test_responses))
                        eval_s = time.perf_counter() - clock
                        curve.append((labels, ppl))
                    round_s = time.perf_counter() - marks["t"]
                    timings[name].append({"seed": seed, "labels": labels, "round_seconds": round_s,
                                          "train_seconds": train_s, "eval_seconds": eval_s})
                    log(f"  [{name} seed {seed}] {labels:>4} labels: held-out ppl {ppl:8.3f} (round {round_s:.1f}s: "
                        f"train {train_s:.1f}s, eval {eval_s:.1f}s, the rest selection/answering)  load {loadavg()}")
                    marks["t"] = time.perf_counter()
                    return -ppl if ppl == ppl else float("nan")

                loop = ActiveLoop(pool, strategy=strategy, init=init, annotator=GoldAnnotator("response", source="llm"),
                                  learner=learner, run_dir=run_dir, init_size=step, batch_size=step,
                                  stopping=MaxRounds(rounds), evaluate=evaluate, seed=seed)
                loop.run()
                results[name][seed] = curve
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    total = time.perf_counter() - started
    log(f"\nheld-out perplexity of GPT-4's responses (first {args.response_tokens} tokens), mean ± sd over seeds "
        f"{seeds}; base model {base_ppl:.3f}")
    header = f"{'labels':>7} " + " ".join(f"{s:>18}" for s in strategies)
    log(header)
    table = {}
    for b in budgets:
        cells = []
        for s in strategies:
            vals = [p for seed in seeds for lab, p in results[s][seed] if lab == b]
            m, sd = mean_sd(vals) if vals else (float("nan"), 0.0)
            table.setdefault(str(b), {})[s] = {"mean": m, "sd": sd, "values": vals}
            cells.append(f"{m:10.3f} ± {sd:5.3f}")
        log(f"{b:>7} " + " ".join(f"{c:>18}" for c in cells))
    per_round = {s: mean_sd([t["round_seconds"] for t in timings[s]])[0] for s in strategies}
    at = {s: [t["round_seconds"] for t in timings[s] if t["labels"] == 2 * step] for s in strategies}
    train_at = {s: [t["train_seconds"] for t in timings[s] if t["labels"] == 2 * step] for s in strategies}
    log("mean wall time per round (s): " + ", ".join(f"{s} {per_round[s]:.1f}" for s in strategies))
    log(f"a round buying {step} more at {2 * step} labels: " + ", ".join(
        f"{s} {np.mean(v):.1f}s (training {np.mean(train_at[s]):.1f}s)" for s, v in at.items() if v))
    log(f"total {total / 60:.1f} min (limit 60); load average at end: {loadavg()}")

    OUT.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    report = {"cuts": cuts, "config": vars(args), "seeds": seeds, "budgets": budgets, "base_ppl": base_ppl,
              "table": table, "curves": {s: {str(k): v for k, v in r.items()} for s, r in results.items()},
              "timings": timings, "ifd_seconds": ifd_seconds, "total_seconds": total, "threads": args.threads}
    (OUT / f"sft{suffix}.json").write_text(json.dumps(report, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for s in strategies:
        m = [table[str(b)][s]["mean"] for b in budgets]
        sd = [table[str(b)][s]["sd"] for b in budgets]
        ax.errorbar(budgets, m, yerr=sd, marker="o", capsize=3, label=s)
    ax.axhline(base_ppl, color="grey", ls="--", lw=1, label="base model")
    ax.set_xlabel("teacher answers bought")
    ax.set_ylabel("held-out perplexity (lower is better)")
    ax.set_title("Active SFT on AlpacaEval: SmolLM2-135M + LoRA")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / f"sft{suffix}.png", dpi=100)
    log(f"wrote {OUT / f'sft{suffix}.json'} and {OUT / f'sft{suffix}.png'}")


if __name__ == "__main__":
    main()
