"""``curate sft``: active SFT from the command line.

    curate sft run RECIPE [--out DIR] [--set key=value] [--dry-run]   # the loop (the core's run command)
    curate resume DIR                                                 # continue a stopped or crashed run
    curate sft curate DATA --budget K [--score ifd ...]               # one-shot: score + diversity-aware top-K
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_actions", "report"]


def add_actions(sub) -> dict[str, Any]:
    """``curate sft curate``: one-shot curation (the loop is ``curate sft run``, from the core)."""
    cur = sub.add_parser("curate", help="one-shot: score pairs, keep the best K that are far enough apart (DEITA)")
    cur.add_argument("data", help="instruction data: .jsonl/.json/.csv/.parquet, a saved dataset or a hub name")
    cur.add_argument("--budget", type=int, required=True, help="how many pairs to keep")
    cur.add_argument("--score", action="append", default=None, choices=["ifd", "ask_llm", "length"],
                     help="score(s) to rank by (repeat to combine; default: ifd)")
    cur.add_argument("--weight", action="append", default=[], metavar="SCORE=W", help="weight of a score when combining")
    cur.add_argument("--min-distance", type=float, default=0.1,
                     help="cosine distance every pick keeps from earlier picks (default 0.1 as in DEITA; 0 = no rule). With MiniLM, prompts from one template sit ~0.15 apart: 0.25 spreads picks over tasks")
    cur.add_argument("--column", action="append", default=[], metavar="ROLE=COLUMN",
                     help="map roles to columns, e.g. prompt=instruction response=output")
    cur.add_argument("--lm", default=None, help="scorer LM id or path (default: embedded SmolLM2-135M-Instruct)")
    cur.add_argument("--backend", default="hf", choices=["hf", "vllm", "openai"], help="scorer LM backend (default: hf)")
    cur.add_argument("--base-url", default=None, help="server URL for --backend openai")
    cur.add_argument("--device", default="cpu", help="device of the hf backend (default: cpu)")
    cur.add_argument("--no-chat", action="store_true", help="score raw prompts, without the chat template")
    cur.add_argument("--format", default="messages", choices=["messages", "prompt_completion", "raw"])
    cur.add_argument("--out", required=True, help="output .jsonl / .parquet / folder")
    return {"curate": _curate}


def report(outcome) -> None:
    summary = outcome.summary
    print(f"stopped: {summary['stop_reason']}")
    print(f"{summary['labels']} responses bought, {summary['pseudo']} pseudo-responses; spent {summary['spent']:.4f}")
    for point in summary["curve"]:
        metric = "" if point["metric"] is None else f"  held-out log-lik/token {point['metric']:.4f}"
        print(f"  round {point['round']}: {point['labels']} labels, spent {point['spent']:.4f}{metric}")
    if "data" in summary:
        print(f"data: {summary['data']} ({summary['rows']} rows)   model: {summary['model']}")
    print(f"run folder: {outcome.folder}")
    if summary.get("waiting"):
        print(f"People must answer the exported prompts first; then: curate resume {outcome.folder}")


def _curate(args: argparse.Namespace) -> int:
    from curate.cli import _columns
    from curate.errors import ConfigError
    from curate.export import save_dataset, to_trl
    from curate.pool import load_pool

    from .oneshot import curate_instructions

    scores = args.score or ["ifd"]
    weights = {}
    for item in args.weight:
        name, sep, value = item.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ConfigError(f"--weight takes SCORE=NUMBER, e.g. ifd=2. Got '{item}'.") from None
        if not sep or name not in scores:
            raise ConfigError(f"--weight '{item}' names no score being used ({', '.join(scores)}).")
    pool = load_pool(args.data, columns=_columns(args.column), require=("prompt", "response"))
    backend = None
    if set(scores) - {"length"}:
        from curate.build import backend_from
        from curate.config import LMConfig
        from curate.models import DEFAULT_LM

        backend = backend_from(LMConfig(backend=args.backend, model=args.lm or DEFAULT_LM, device=args.device,
                                        base_url=args.base_url))
    rows = curate_instructions(pool, budget=args.budget, scores=scores, weights=weights,
                               min_distance=args.min_distance, backend=backend, chat=not args.no_chat)
    out = rows if args.format == "raw" else to_trl(rows, args.format)
    path = save_dataset(out, args.out)
    print(f"kept {len(rows)} of {len(pool)} pairs by {' + '.join(scores)} (min cosine distance {args.min_distance}) "
          f"-> {path}")
    for row in rows.select(range(min(5, len(rows)))):
        print(f"  #{row['rank']:<3} score {row['score']:.3f}  {json.dumps(str(row['prompt'])[:70])}")
    return 0
