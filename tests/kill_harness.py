"""SIGKILL harness: every paradigm's run killed at random instants, resumed, compared with an
uninterrupted run of the same recipe and seed.

For each paradigm recipe: run it once uninterrupted (the reference). Then an episode: start it in a
fresh folder and SIGKILL it at a random instant, start it again (``curate resume``) and kill it
again, until a start runs to the end; episodes repeat until ``--kills`` kills have landed. Kill
instants are drawn uniformly between 0.8 x the reference's start-up (until its journal appears) and
its end, so most land while the run is buying, training or selecting. Each episode's end state is
checked against the reference: no label lost (the same bought set), none charged twice (one charge
per bought item), the same money to the micro, the same rounds (selections, labels, spent). A bench
grid is killed the same way, and its results table must equal the reference's.

    .venv/bin/python tests/kill_harness.py --kills 25 [--only classify-gold,sft] [--out docs/bench/hardening]

Prints one JSON line per paradigm and writes ``kills.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "CURATE_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
CURATE = [str(Path(sys.executable).parent / "curate")]


def tiny_lm(folder: Path) -> Path:
    from conftest import build_tiny_model, build_tiny_tokenizer, save_lm

    if not (folder / "config.json").exists():
        tokenizer = build_tiny_tokenizer()
        save_lm(build_tiny_model(len(tokenizer)), tokenizer, folder)
    return folder


def recipes(work: Path) -> dict[str, tuple[list[str], dict]]:
    """name -> (command before --out, recipe data): small, real runs of each paradigm."""
    lm = str(tiny_lm(work / "tiny-lm"))
    words = ["apple", "river", "stone", "cloud", "tiger", "piano", "ocean", "maple"]
    pairs = work / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"say {words[i % 8]}", "chosen": words[(i + 1) % 8],
                                         "rejected": words[(i + 3) % 8]}) + "\n" for i in range(30)))
    from test_distill import ANSWERS, QUESTIONS

    gsm = work / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in zip(QUESTIONS, ANSWERS, strict=True)))
    classify = {"paradigm": "classify", "pool": {"path": "sample:reviews", "id_column": "id"},
                "eval": {"path": "sample:reviews-test", "id_column": "id"}, "labels": ["positive", "negative"],
                "init": {"strategy": "kmeans", "size": 6}, "acquire": {"strategy": "margin", "batch_size": 6},
                "annotator": {"kind": "gold"}, "prices": {"human_per_label": 0.4}, "stop": {"rounds": 4}}
    # The embedded SmolLM2 (right ~75 % of the time here): its unsure labels are routed to people.
    hybrid = {**classify, "annotator": {"kind": "hybrid", "human": "gold", "threshold": 0.9},
              "lm": {"device": "cpu"},
              "prices": {"human_per_label": 0.4, "llm_input_per_million": 100.0, "llm_output_per_million": 400.0}}
    bench = {"name": "kills", "grid": {"paradigm": ["classification"], "dataset": ["reviews"],
                                       "strategy": ["random", "margin"], "schedule": ["s"], "annotator": ["gold"],
                                       "seed": [0, 1]},
             "datasets": {"reviews": {"source": "reviews"}},
             "schedules": {"s": {"init": 6, "batch": 6, "rounds": 3, "init_strategy": "random"}},
             "annotators": {"gold": {"kind": "gold"}}, "prices": {"human_per_label": 0.4}}
    return {
        "classify-gold": (["run"], classify),
        "classify-hybrid": (["run"], hybrid),
        "icl": (["run"], {"paradigm": "icl", "pool": {"path": "sample:reviews", "id_column": "id"},
                          "labels": ["positive", "negative"], "annotate": {"strategy": "kcenter", "budget": 12, "rounds": 3},
                          "annotator": {"kind": "gold"}, "prices": {"human_per_label": 0.4}}),
        "sft": (["run"], {"paradigm": "sft", "pool": {"path": "sample:instructions"}, "model": lm,
                          "init": {"strategy": "random", "size": 3},
                          "acquire": {"strategy": "entropy", "batch_size": 3, "sample": 6},
                          "annotator": {"kind": "gold"}, "prices": {"human_per_label": 0.5},
                          "lora": {"r": 2, "lora_alpha": 4, "target_modules": "all-linear"},
                          "train": {"max_steps": 1, "per_device_train_batch_size": 4}, "max_length": 48,
                          "max_new_tokens": 4, "stop": {"rounds": 3}}),
        "prefs": (["run"], {"paradigm": "prefs", "pool": {"path": str(pairs)},
                            "acquire": {"init_size": 4, "strategy": "margin", "batch_size": 4},
                            "learner": {"kind": "reward_model", "members": 3}, "prices": {"human_per_label": 0.5},
                            "stop": {"rounds": 3}}),
        "distill": (["run"], {"paradigm": "distill", "pool": {"path": str(gsm), "format": "gsm8k"},
                              "student": {"model": lm, "lora": {"r": 2, "lora_alpha": 4, "target_modules": "all-linear"},
                                          "train": {"max_steps": 1, "per_device_train_batch_size": 2},
                                          "max_length": 64, "max_new_tokens": 4},
                              "acquire": {"init_size": 2, "batch_size": 2, "strategy": "probe", "probe_tokens": 3,
                                          "sample": 4},
                              "prices": {"llm_input_per_million": 1000.0, "llm_output_per_million": 3000.0},
                              "stop": {"rounds": 3}}),
        "bench": (["bench"], bench),
    }


def journal_state(run: Path) -> dict:
    db = sqlite3.connect(run / "journal.sqlite")
    try:
        labels = db.execute("SELECT item_id, label, source FROM labels ORDER BY item_id").fetchall()
        charged = db.execute("SELECT item_id, COUNT(*) FROM charges WHERE item_id IS NOT NULL GROUP BY item_id").fetchall()
        spent = db.execute("SELECT COALESCE(SUM(micros), 0) FROM charges").fetchone()[0]
        rounds = db.execute("SELECT round, selected, labels, spent_micros FROM rounds ORDER BY round").fetchall()
    finally:
        db.close()
    return {"labels": labels, "charged": dict(charged), "spent": spent, "rounds": rounds}


def bench_state(out: Path) -> dict:
    import csv

    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    keep = [{k: v for k, v in r.items() if not any(t in k for t in ("seconds", "time", "wall"))} for r in rows]
    cells = sorted(p for p in out.rglob("journal.sqlite"))
    return {"results": sorted(keep, key=json.dumps), "cells": {str(p.parent.relative_to(out)): journal_state(p.parent)
                                                                for p in cells}}


def start(command: list[str], recipe: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([*CURATE, "--quiet", *command, str(recipe), "--out", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=recipe.parent)


def one(name: str, command: list[str], data: dict, work: Path, kills: int, rng: random.Random) -> dict:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    clock = time.perf_counter()
    ref = start(command, recipe, folder / "reference")
    busy = None  # when the reference's first journal appeared: the start-up (imports, models) is over
    while ref.poll() is None:
        if busy is None and (folder / "reference").exists() and any((folder / "reference").rglob("journal.sqlite")):
            busy = time.perf_counter() - clock
        time.sleep(0.02)
    err = ref.stderr.read()
    ref.stderr.close()
    wall = time.perf_counter() - clock
    busy = wall if busy is None else busy
    if ref.returncode != 0:
        return {"name": name, "error": f"reference run failed: {err[-500:]}"}
    # Episodes: a fresh folder started and killed at random instants until a start finishes it;
    # episodes repeat until ``kills`` kills have landed. Each episode's end state is compared.
    killed, working, errors, episodes = 0, 0, [], []
    while killed < kills:
        target = folder / f"killed{len(episodes)}"
        while True:
            resume = command == ["run"] and (target / "journal.sqlite").exists()
            argv = ["resume", str(target)] if resume else [*command, str(recipe), "--out", str(target)]
            proc = subprocess.Popen([*CURATE, "--quiet", *argv], env=ENV, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, cwd=folder)
            # Most instants fall in the working part of a run (after start-up), some before it; once
            # the kills are spent, the episode's last start runs to the end.
            instant = rng.uniform(0.8 * busy, wall) if killed < kills else None
            try:
                proc.wait(timeout=instant)
            except subprocess.TimeoutExpired:
                # Did the kill land while the run was working (a journal exists), or still starting up?
                working += int(target.exists() and any(target.rglob("journal.sqlite")))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                proc.stderr.close()
                killed += 1
                continue
            err = proc.stderr.read()
            proc.stderr.close()
            if proc.returncode != 0:
                errors.append(err[-400:])
            break
        episodes.append(target)
    result = {"name": name, "reference_seconds": round(wall, 1), "startup_seconds": round(busy, 1), "kills": killed, "kills_while_working": working,
              "episodes": len(episodes), "errors": errors}
    if errors:
        return result
    pairs = []
    if command == ["bench"]:
        want = bench_state(folder / "reference")
        same = 0
        for target in episodes:
            got = bench_state(target)
            same += int(want["results"] == got["results"])
            pairs += [(want["cells"].get(k), v) for k, v in got["cells"].items()]
        result.update(same_results=same == len(episodes), cells=len(want["cells"]))
    else:
        want = journal_state(folder / "reference")
        pairs = [(want, journal_state(target)) for target in episodes]
    lost = twice = money = different = 0
    for w, g in pairs:
        if w is None:
            different += 1
            continue
        bought_w = {i for i, lab, _ in w["labels"] if lab is not None}
        bought_g = {i for i, lab, _ in g["labels"] if lab is not None}
        lost += len(bought_w - bought_g)
        # More charges for an item than the uninterrupted run made (a hybrid pays an item twice by
        # design: the LLM's attempt, then the person it was routed to).
        twice += sum(1 for i, n in g["charged"].items() if n > w["charged"].get(i, 1))
        money += int(w["spent"] != g["spent"])
        different += int(w["labels"] != g["labels"] or w["rounds"] != g["rounds"])
    result.update(labels_lost=lost, charged_twice=twice, money_mismatch=money, different_bought_set=different,
                  compared=len(pairs), labels_per_run=len(want["labels"]) if command != ["bench"] else None)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--only", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "hardening"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.kills} kills per paradigm", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="kills-") as tmp:
        work = Path(tmp)
        for name, (command, data) in recipes(work).items():
            if args.only and name not in args.only.split(","):
                continue
            clock = time.perf_counter()
            r = one(name, command, data, work, args.kills, rng)
            r["harness_seconds"] = round(time.perf_counter() - clock, 1)
            results.append(r)
            print(json.dumps(r), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "kills.json" if not args.only else f"kills-{args.only.replace(',', '-')}.json"
    (out / name).write_text(json.dumps({"load_average": os.getloadavg(), "kills": args.kills, "seed": args.seed,
                                        "results": results}, indent=1))
    bad = [r for r in results if r.get("error") or r.get("errors") or r.get("labels_lost") or r.get("charged_twice")
           or r.get("money_mismatch") or r.get("different_bought_set") or r.get("same_results") is False]
    print("all clean" if not bad else f"NOT CLEAN: {[r['name'] for r in bad]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
