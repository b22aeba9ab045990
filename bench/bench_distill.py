"""Uncertainty-driven distillation on GSM8K: a teacher probe vs random prompts at equal money.

    python -u bench/bench_distill.py [--quick] [--seeds 0,1,2] [--budgets 16,32,48] [--arms probe,random] [--max-minutes 58]

Data, read in place from /work/shared/data/gsm8k (never copied): the pool is the first ``--pool``
training questions; held-out numbers come from the first test questions.

* Teacher: recorded — GSM8K's reference solutions (calculator spans removed), billed as teacher
  tokens (prompt in, solution out) at 0.15 / 0.60 USD per million, counted with the student's tokenizer.
* Student: the embedded SmolLM2-135M-Instruct with LoRA (r 16, all linear layers, lr 3e-4, merged
  after every round), SFT on the bought solutions (sequence mode), one epoch over each new batch.
* Budgets are money: N solutions at the pool's mean solution cost, for N in ``--budgets``. Each run
  goes through the budgets in order (the same run resumed with a larger budget), so both arms are
  measured at exactly the same spend; the loop trims every batch by the solutions' exact costs.
* Arms: ``random``; ``probe`` — each round, ``--sample`` random candidates get a teacher probe (the
  first ``--probe-tokens`` tokens of the teacher's solution, paid from the same budget: prompt in,
  k tokens out) and the batch is the candidates whose opening the student finds least likely (mean
  NLL per token). Probes are bought once and kept; the probe arm pays for them with fewer solutions.
  Round 0 is the same random ``--init`` prompts in both arms (same seed). ``entropy`` — the
  student answers ``--sample`` random candidates itself (greedy, ``--answer-tokens`` tokens) and the
  batch is those with the highest mean token entropy: free (no teacher money), so it buys as many
  solutions as random. Any distill strategy name works as an arm (``semantic``, ``kcenter``...).
* Measures after each budget: the student's held-out loss (mean NLL per token, nats) on the
  reference solutions of the first ``--loss-n`` test questions, and exact match of the final answer
  (``#### N``, else the last number) on the first ``--em-n`` test questions, greedy, at most
  ``--em-tokens`` new tokens (at the largest budget only, unless ``--em-every``).

Outputs: bench/out/distill.json and bench/out/distill.png (``--quick``: *_quick files), per-round
wall times, the money split (solutions / probes), the solutions bought per arm.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CURATE_QUIET", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k"
OUT = ROOT / "bench" / "out"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few minutes: tiny budgets, one seed, small eval")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budgets", default="16,32,48", help="money budgets, in mean-cost solutions")
    p.add_argument("--arms", default="probe,random")
    p.add_argument("--pool", type=int, default=1000, help="training questions in the pool")
    p.add_argument("--init", type=int, default=8, help="random solutions bought in round 0")
    p.add_argument("--batch", type=int, default=12, help="solutions per later round")
    p.add_argument("--sample", type=int, default=24, help="probe: candidates probed per round")
    p.add_argument("--probe-tokens", type=int, default=8)
    p.add_argument("--probe-max-input", type=int, default=96, help="probe: longer prompts are not probed")
    p.add_argument("--max-length", type=int, default=256, help="training tokens per row (prompt + solution)")
    p.add_argument("--loss-n", type=int, default=32)
    p.add_argument("--em-n", type=int, default=16)
    p.add_argument("--em-tokens", type=int, default=96)
    p.add_argument("--max-minutes", type=float, default=58.0,
                   help="start no further seed when the last one's time would cross this (seeds are cut, not arms)")
    p.add_argument("--em-every", action="store_true", help="exact match at every budget, not only the largest")
    p.add_argument("--em-seeds", default=None,
                   help="seeds whose largest budget gets exact match (default: every seed); others: loss only")
    p.add_argument("--answer-tokens", type=int, default=48,
                   help="entropy/perplexity/semantic arms: tokens of the student's own answer that are scored")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="/tmp/curate-bench-distill", help="run folders (models are large)")
    p.add_argument("--tag", default=None, help="output name suffix (default: '' or '_quick')")
    p.add_argument("--base-from", default=None, help="reuse the untrained student's numbers from this output JSON")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="run nothing: merge these outputs' runs (same settings, other seeds) into distill<tag>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.budgets, args.pool, args.init, args.batch, args.sample = "0", "4,8", 200, 4, 4, 8
        args.loss_n, args.em_n, args.em_tokens = 8, 4, 48
    return args


def config_for(args, arm: str, seed: int, budget: float):
    from curate.paradigms.distill.config import load_distill_config

    return load_distill_config(data={
        "pool": {"path": str(DATA / "train.jsonl"), "format": "gsm8k", "limit": args.pool},
        "teacher": {"kind": "recorded"},
        "student": {"model": "SmolLM2-135M-Instruct", "mode": "sequence",
                    "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"},
                    "train": {"learning_rate": 3e-4, "per_device_train_batch_size": 4, "num_train_epochs": 1,
                              "seed": seed},
                    "max_length": args.max_length, "max_new_tokens": args.answer_tokens},
        "acquire": {"init": "random", "init_size": args.init, "strategy": arm, "batch_size": args.batch,
                    "sample": args.sample, "probe_tokens": args.probe_tokens,
                    "probe_max_input_tokens": args.probe_max_input},
        "prices": {"llm_input_per_million": 0.15, "llm_output_per_million": 0.60},
        "stop": {"rounds": None, "money": budget},
        "seed": seed,
    })


def round_times(run_dir: Path) -> list[dict]:
    db = sqlite3.connect(run_dir / "journal.sqlite")
    rows = db.execute("SELECT round, started, finished, info FROM rounds ORDER BY round").fetchall()
    db.close()
    return [{"round": r, "seconds": round(f - s, 1) if f else None,
             "select_seconds": round(json.loads(i or "{}").get("select_seconds", 0.0), 1)} for r, s, f, i in rows]


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from curate.paradigms.distill.data import read_gsm8k
    from curate.paradigms.distill.run import build_distill, evaluate_student

    from curate.budget import Ledger

    clock0 = time.perf_counter()
    print(f"load average at start: {os.getloadavg()}  (threads pinned to {args.threads})")
    if not DATA.is_dir():
        print(f"GSM8K not found at {DATA}", file=sys.stderr)
        return 1
    seeds = [int(s) for s in args.seeds.split(",")]
    em_seeds = set(seeds if args.em_seeds is None else [int(s) for s in args.em_seeds.split(",")])
    arms = args.arms.split(",")
    counts = [int(b) for b in args.budgets.split(",")]
    test = read_gsm8k(DATA / "test.jsonl", limit=max(args.loss_n, args.em_n))
    tag = args.tag if args.tag is not None else ("_quick" if args.quick else "")
    out_json, out_png = OUT / f"distill{tag}.json", OUT / f"distill{tag}.png"
    OUT.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return merge(args.merge, arms, counts, out_json, out_png)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)

    # Money budgets: N solutions at the pool's mean solution cost.
    probe_run = build_distill(config_for(args, "random", 0, 1.0), work / "costs")
    prices = probe_run.loop.ledger.prices
    costs = probe_run.annotator.item_micros(probe_run.pool, probe_run.pool.ids, prices)
    budgets = [int(round(n * costs.mean())) / 1e6 for n in counts]
    print(f"pool {len(probe_run.pool)} questions; solution cost mean {costs.mean():.1f}, max {costs.max()} micro-USD; "
          f"budgets {dict(zip(counts, budgets, strict=True))} USD")

    result = {"args": vars(args), "budgets_solutions": counts, "budgets_usd": budgets,
              "solution_cost_micros": {"mean": float(costs.mean()), "max": int(costs.max())}, "runs": [],
              "load_start": os.getloadavg()}

    t = time.perf_counter()
    if args.base_from:
        base = json.loads(Path(args.base_from).read_text())["base"]
    else:
        base = evaluate_student(probe_run.learner, test, loss_size=args.loss_n, accuracy_size=args.em_n,
                                max_new_tokens=args.em_tokens)
    result["base"] = {**base, "seconds": base.get("seconds", round(time.perf_counter() - t, 1))}
    print(f"base student: loss {base['loss']:.4f} (ppl {base['perplexity']:.2f}) on {base['n']}; "
          f"EM {base['accuracy']:.3f} on {base['em_n']} ({result['base']['seconds']}s)", flush=True)
    shutil.rmtree(work / "costs", ignore_errors=True)

    result["cut_seeds"] = []
    for k, seed in enumerate(seeds):
        elapsed = time.perf_counter() - clock0
        per_seed = elapsed / k if k else 0.0
        if k and elapsed + per_seed > 60 * args.max_minutes:
            result["cut_seeds"] = seeds[k:]
            print(f"time: {elapsed / 60:.1f} min spent, a seed takes ~{per_seed / 60:.1f}; seeds {seeds[k:]} cut")
            break
        for arm in arms:
            run_dir = work / f"{arm}-s{seed}"
            run = build_distill(config_for(args, arm, seed, budgets[0]), run_dir)
            record = {"arm": arm, "seed": seed, "points": []}
            for n, budget in zip(counts, budgets, strict=True):
                run.loop.ledger = Ledger(prices, budget=budget)  # the same run, resumed with more money
                t = time.perf_counter()
                res = run.loop.run()
                train_s = time.perf_counter() - t
                t = time.perf_counter()
                em = (args.em_every or n == counts[-1]) and seed in em_seeds
                ev = evaluate_student(run.learner, test, loss_size=args.loss_n, accuracy_size=args.em_n if em else 0,
                                      max_new_tokens=args.em_tokens)
                eval_s = time.perf_counter() - t
                totals = res.ledger.totals()
                point = {"budget_solutions": n, "budget_usd": budget, "spent": totals["spent"],
                         "spent_solutions": totals.get("spent_llm", 0.0), "spent_probes": totals.get("spent_probe", 0.0),
                         "solutions": len(res.labels), "probes": len(run.probe.paid_) if run.probe is not None else 0,
                         "loss": ev["loss"], "perplexity": ev["perplexity"], "accuracy": ev.get("accuracy"),
                         "stop_reason": res.stop_reason, "loop_seconds": round(train_s, 1),
                         "eval_seconds": round(eval_s, 1)}
                record["points"].append(point)
                assert res.ledger.spent_micros <= res.ledger.budget_micros
                acc = "" if point["accuracy"] is None else f", EM {point['accuracy']:.3f}"
                print(f"seed {seed} {arm:>6} budget {n:>3} sol ({budget:.6f} USD): {point['solutions']} solutions + "
                      f"{point['probes']} probes, spent {point['spent']:.6f}; loss {ev['loss']:.4f}{acc}; "
                      f"loop {train_s:.0f}s, eval {eval_s:.0f}s; load {os.getloadavg()[0]:.2f}", flush=True)
            record["rounds"] = round_times(run_dir)
            record["train"] = run.learner.history_
            for r in record["rounds"]:
                print(f"    round {r['round']}: {r['seconds']}s (selection {r['select_seconds']}s)")
            result["runs"].append(record)
            out_json.write_text(json.dumps(result, indent=1, default=str))
            shutil.rmtree(run_dir / "model", ignore_errors=True)

    result["summary"] = summarize(result, arms, counts)
    result["total_seconds"] = round(time.perf_counter() - clock0, 1)
    result["load_end"] = os.getloadavg()
    out_json.write_text(json.dumps(result, indent=1, default=str))
    print_table(result, arms, counts)
    plot(result, arms, counts, out_png)
    print(f"total {result['total_seconds']:.0f}s; load average at end {result['load_end']}")
    print(f"wrote {out_json} and {out_png}")
    return 0


def merge(paths, arms, counts, out_json: Path, out_png: Path) -> int:
    """One output from several (the same settings, other seeds): runs joined, summary recomputed."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    result = dict(parts[0])
    result["runs"] = [r for part in parts for r in part["runs"]]
    result["cut_seeds"] = sorted({s for part in parts for s in part.get("cut_seeds", [])}
                                 - {r["seed"] for r in result["runs"]})
    result["parts"] = [{"path": str(p), "total_seconds": part.get("total_seconds"), "load_start": part.get("load_start"),
                        "load_end": part.get("load_end"), "seeds": sorted({r["seed"] for r in part["runs"]})}
                       for p, part in zip(paths, parts, strict=True)]
    # Parts may have run side by side: their sum is compute time, not wall time.
    result["total_seconds"] = None
    result["parts_seconds_sum"] = sum(part.get("total_seconds") or 0 for part in parts)
    result["summary"] = summarize(result, arms, counts)
    out_json.write_text(json.dumps(result, indent=1, default=str))
    print_table(result, arms, counts)
    plot(result, arms, counts, out_png)
    print(f"merged {len(parts)} outputs ({result['parts_seconds_sum']:.0f}s summed over parts); "
          f"wrote {out_json} and {out_png}")
    return 0


def summarize(result, arms, counts) -> list[dict]:
    rows = []
    for arm in arms:
        for n in counts:
            pts = [p for r in result["runs"] if r["arm"] == arm for p in r["points"] if p["budget_solutions"] == n]
            if not pts:
                continue
            accs = [p["accuracy"] for p in pts if p["accuracy"] is not None]
            secs = [r["seconds"] for run in result["runs"] if run["arm"] == arm for r in run["rounds"] if r["seconds"]]
            rows.append({"arm": arm, "budget": n, "runs": len(pts),
                         "loss_mean": float(np.mean([p["loss"] for p in pts])),
                         "loss_sd": float(np.std([p["loss"] for p in pts], ddof=1)) if len(pts) > 1 else 0.0,
                         "acc_mean": float(np.mean(accs)) if accs else None,
                         "acc_sd": float(np.std(accs, ddof=1)) if len(accs) > 1 else (0.0 if accs else None),
                         "solutions_mean": float(np.mean([p["solutions"] for p in pts])),
                         "probes_mean": float(np.mean([p["probes"] for p in pts])),
                         "round_seconds_mean": float(np.mean(secs)) if secs else None})
    return rows


def print_table(result, arms, counts) -> None:
    base = result["base"]
    print(f"\nbase student: loss {base['loss']:.4f}, EM {base['accuracy']:.3f} ({base['em_right']}/{base['em_n']})")
    print(f"{'budget':>6} {'arm':>7} {'runs':>4} {'solutions':>9} {'probes':>6} {'loss mean ± sd':>16} "
          f"{'EM mean ± sd':>14} {'s/round':>7}")
    for row in result["summary"]:
        acc = "" if row["acc_mean"] is None else f"{row['acc_mean']:.3f} ± {row['acc_sd']:.3f}"
        secs = "" if row["round_seconds_mean"] is None else f"{row['round_seconds_mean']:.0f}"
        print(f"{row['budget']:>6} {row['arm']:>7} {row['runs']:>4} {row['solutions_mean']:>9.1f} "
              f"{row['probes_mean']:>6.0f} {row['loss_mean']:>8.4f} ± {row['loss_sd']:.4f} {acc:>14} {secs:>7}")


def plot(result, arms, counts, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for arm in arms:
        rows = [r for r in result["summary"] if r["arm"] == arm]
        axes[0].errorbar([r["budget"] for r in rows], [r["loss_mean"] for r in rows],
                         yerr=[r["loss_sd"] for r in rows], marker="o", capsize=3, label=arm)
        acc = [r for r in rows if r["acc_mean"] is not None]
        axes[1].errorbar([r["budget"] for r in acc], [r["acc_mean"] for r in acc], yerr=[r["acc_sd"] for r in acc],
                         marker="o", capsize=3, linestyle="none" if len(acc) == 1 else "-", label=arm)
    axes[0].axhline(result["base"]["loss"], color="grey", linestyle=":", label="before training")
    axes[1].axhline(result["base"]["accuracy"], color="grey", linestyle=":", label="before training")
    axes[0].set(xlabel="teacher budget (mean-cost solutions, USD-equal)", ylabel="held-out loss (nats/token)",
                title="GSM8K reference solutions")
    axes[1].set(xlabel="teacher budget (mean-cost solutions, USD-equal)", ylabel="exact match",
                title="GSM8K final answer")
    for ax in axes:
        ax.set_xticks(counts)
        ax.legend()
    fig.suptitle(f"SmolLM2-135M + LoRA distilled from recorded GSM8K solutions: {' vs '.join(arms)} (mean ± sd)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
