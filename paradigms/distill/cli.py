"""``curate distill RECIPE``: uncertainty-driven distillation from the command line.

    curate distill RECIPE [--out DIR] [--set key=value ...] [--dry-run] [--no-eval]

Running it again with the same ``--out`` resumes the run (nothing is bought or trained twice).
Wired into the console script by ``curate.paradigms.cli`` through :func:`register`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers) -> dict[str, Any]:
    """Add ``distill`` to the ``curate`` parser; returns ``{"distill": handler}``."""
    p = subparsers.add_parser("distill", help="distil a teacher into a student, asking the teacher only where the "
                                              "student is unsure (recipes/distill-*.yaml)")
    p.add_argument("recipe", help="a distill recipe (YAML)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<recipe name>); an existing one is resumed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a recipe key, e.g. --set stop.money=0.01")
    p.add_argument("--dry-run", action="store_true", help="print the most the recipe can spend, spend nothing")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")
    return {"distill": _handle}


def _handle(args) -> int:
    from .config import load_distill_config
    from .run import start_distill

    config = load_distill_config(args.recipe, args.overrides)
    out = args.out or str(Path("runs") / Path(args.recipe).stem)
    summary = start_distill(config, out, dry_run=args.dry_run, evaluate=not args.no_eval)
    cur = summary["currency"]
    print(f"Worst-case cost: {summary['worst_case']:.6f} {cur}")
    if args.dry_run:
        return 0
    ledger = summary["ledger"]
    print(f"Stopped: {summary['stop_reason']}")
    print(f"Spent: {ledger['spent']:.6f} {cur} (answers {ledger.get('spent_llm', 0.0):.6f}, probes "
          f"{ledger.get('spent_probe', 0.0):.6f}); {summary['responses']} teacher answers, {summary['probes']} probes")
    print(f"{'round':>5} {'answers':>7} {'spent':>10} {'train loss':>10} {'seconds':>8}")
    trained = {h["round"] - 1: h for h in summary["rounds"]}  # training round n follows loop round n - 1
    for c in summary["curve"]:
        h = trained.get(c["round"])
        loss = "" if h is None else f"{h['train_loss']:.4f}"
        secs = "" if h is None else f"{h['seconds']:.1f}"
        print(f"{c['round']:>5} {c['labels']:>7} {c['spent']:>10.6f} {loss:>10} {secs:>8}")
    if "eval" in summary:
        ev = summary["eval"]
        if "loss" in ev:
            print(f"Held-out loss {ev['loss']:.4f} nats/token (perplexity {ev['perplexity']:.2f}) on {ev['n']} answers")
        if "accuracy" in ev:
            print(f"Exact match {ev['accuracy']:.3f} ({ev['em_right']}/{ev['em_n']})")
    print(f"Distilled data: {summary['data']}")
    print(f"Student: {summary['student']}")
    print(f"Run folder: {summary['run_dir']}")
    return 0
