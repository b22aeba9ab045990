"""``curate prefs``: active preference learning from the command line.

    curate prefs judge PAIRS --out judged.jsonl      # the LLM judge, both orders; agreement with gold labels
    curate prefs select PAIRS --strategy S --budget K --out picks.jsonl [--policy P --reference R]
    curate prefs run RECIPE [--out DIR] [--set key=value] [--dry-run]   # the core's run command
    curate resume DIR
    curate prefs export DIR [--out FILE] [--format preference|kto]   # paired (DPO, reward) or unpaired (KTO)
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_actions", "report"]

_FORMATS = ["jsonl", "json", "csv", "tsv", "parquet", "hh_rlhf", "alpaca_eval"]
_EXPORT_FORMATS = ["preference", "kto"]


def _pairs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pairs", help="pairs (prompt/response_a/response_b) or preferences (prompt/chosen/rejected) file")
    p.add_argument("--format", default="jsonl", choices=_FORMATS, help="file format (default: jsonl)")
    p.add_argument("--offset", type=int, default=0, help="skip the first N pairs")
    p.add_argument("--limit", type=int, default=None, help="keep N pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of the chosen response's position, and of selection")


def add_actions(sub) -> dict[str, Any]:
    """``curate prefs judge | select``, and ``--format`` for the core's ``export`` (``run`` and
    ``resume`` come from the core as they are)."""
    judge = sub.add_parser("judge", help="label pairs with the LLM judge (both orders, position bias cancelled)")
    _pairs_args(judge)
    judge.add_argument("--out", required=True, help="output .jsonl: label, confidence, both orders' log-odds")
    judge.add_argument("--lm", default=None, help="judge LM id or path (default: embedded SmolLM2-135M-Instruct)")
    judge.add_argument("--device", default="auto")
    judge.add_argument("--no-ties", action="store_true", help="always pick a or b")
    judge.add_argument("--tie-band", type=float, default=0.05, help="tie when |P(a better) - 0.5| < this (default 0.05)")
    judge.add_argument("--consistent", action="store_true", help="tie when the two orders disagree (MT-Bench rule)")
    judge.add_argument("--max-prompt-tokens", type=int, default=256)
    judge.add_argument("--max-response-tokens", type=int, default=256)

    select = sub.add_parser("select", help="one-shot: the K pairs to label next")
    _pairs_args(select)
    select.add_argument("--strategy", required=True, help="random, margin, entropy_certainty, prompt_diversity, margin_diverse")
    select.add_argument("--budget", type=int, required=True)
    select.add_argument("--out", required=True, help="output .jsonl with rank, id, score and the pair")
    select.add_argument("--policy", default=None, help="policy model path (margin and entropy strategies)")
    select.add_argument("--reference", default=None, help="reference model path (default: the embedded LM)")
    select.add_argument("--beta", type=float, default=0.1)
    select.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True,
                        help="wrap prompts in the chat template when scoring (default: yes)")
    select.add_argument("--device", default="cpu")
    select.add_argument("--embedder", default=None)

    # The core made the ``export`` parser (run folder, --out); the unpaired form is this paradigm's own.
    export = sub.choices["export"]
    export.add_argument("--format", default="preference", choices=_EXPORT_FORMATS, dest="export_format",
                        help="preference: prompt/chosen/rejected (DPOTrainer, RewardTrainer); kto: "
                             "prompt/completion/label, one row per response (KTOTrainer). Default: preference")
    return {"judge": _judge, "select": _select, "export": _export}


def _export(args) -> int:
    """The core's export, then (``--format kto``) the same pairs unpaired into ``--out`` or, by
    default, ``<export>.kto.jsonl`` beside the run's preference file."""
    import json
    from pathlib import Path

    from curate.export import save_dataset
    from curate.runs import export_run

    if args.export_format == "preference":
        paradigm, path = export_run(args.run_dir, args.out)
    else:
        from .export import kto_dataset

        paradigm, written = export_run(args.run_dir, None)
        out = Path(args.out) if args.out else written.with_name(f"{written.stem}.kto.jsonl")
        path = save_dataset(kto_dataset(_read_saved(written)), out)
    print(json.dumps({"paradigm": paradigm.name, "format": args.export_format, "exported": str(path)}))
    return 0


def _read_saved(path):
    """Rows of a dataset that :func:`curate.export.save_dataset` wrote (JSONL, Parquet or a folder)."""
    import json

    import datasets

    if path.suffix == ".jsonl":  # split on "\n" only: other Unicode line breaks are valid inside JSON strings
        return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    if path.suffix == ".parquet":
        return datasets.Dataset.from_parquet(str(path)).to_list()
    return datasets.load_from_disk(str(path)).to_list()


def _judge(args) -> int:
    import numpy as np

    from curate.build import backend_from
    from curate.config import LMConfig
    from curate.export import save_dataset
    from curate.models import DEFAULT_LM

    from .data import load_pair_pool
    from .judge import PairwiseJudge

    pool = load_pair_pool(args.pairs, args.format, seed=args.seed, offset=args.offset, limit=args.limit)
    backend = backend_from(LMConfig(backend="hf", model=args.lm or DEFAULT_LM, device=args.device))
    judge = PairwiseJudge(backend, ties=not args.no_ties, tie_band=args.tie_band, consistent=args.consistent,
                          max_prompt_tokens=args.max_prompt_tokens, max_response_tokens=args.max_response_tokens)
    v = judge.judge(pool.column("prompt"), pool.column("response_a"), pool.column("response_b"))
    data = pool.dataset.remove_columns(["text"])
    for name, values in (("judge_label", v.labels), ("confidence", v.confidence.tolist()),
                         ("logodds_ab", v.logodds_ab.tolist()), ("logodds_ba", v.logodds_ba.tolist()),
                         ("input_tokens", v.input_tokens)):
        data = data.add_column(name, values)
    save_dataset(data, args.out)
    print(f"Judged {len(pool)} pairs in both orders into {args.out} ({backend.usage.input_tokens} input tokens); "
          f"mean position bias {float(np.mean(v.position_bias)):+.3f} log-odds toward the first response")
    if "label" in pool.columns:
        gold = pool.column("label")
        for name, labels in (("order a,b only", v.order_labels("ab")), ("order b,a only", v.order_labels("ba")),
                             ("debiased", v.labels)):
            decided = [(p, g) for p, g in zip(labels, gold, strict=True) if p != "tie" and g != "tie"]
            acc = np.mean([p == g for p, g in decided]) if decided else float("nan")
            print(f"  {name:<15} agreement with gold {acc:.3f} on {len(decided)} decided pairs "
                  f"({sum(p == 'tie' for p in labels)} judged ties)")
    return 0


def _select(args) -> int:
    import tempfile

    import numpy as np

    from curate.acquire import PoolState
    from curate.embed import load_embedder
    from curate.export import save_dataset
    from curate.index import EmbeddingIndex
    from curate.models import DEFAULT_EMBEDDER, DEFAULT_LM, resolve_lm

    from .data import load_pair_pool
    from .strategies import make_preference_strategy

    pool = load_pair_pool(args.pairs, args.format, seed=args.seed, offset=args.offset, limit=args.limit)
    strategy = make_preference_strategy(args.strategy)
    index = None
    if args.strategy in ("prompt_diversity", "margin_diverse"):  # only these read the prompt index
        embedder = load_embedder(args.embedder or DEFAULT_EMBEDDER)
        index = EmbeddingIndex.from_vectors(embedder.encode(pool.column("prompt")), pool.ids, model=embedder.name)
    arrays = {}
    if args.policy:
        from .dpo import DPOLearner

        with tempfile.TemporaryDirectory() as tmp:
            scorer = DPOLearner(pool, resolve_lm(args.reference or DEFAULT_LM), policy=resolve_lm(args.policy),
                                run_dir=tmp, beta=args.beta, chat=args.chat, device=args.device)
            arrays = scorer.arrays()
    state = PoolState.of(pool, index=index, arrays=arrays)
    selection = strategy.select(state, args.budget, rng=np.random.default_rng(args.seed))
    rows = pool.select(selection.ids).remove_columns(["text"])
    rows = rows.add_column("rank", list(range(1, len(selection.ids) + 1)))
    scores = selection.scores if selection.scores is not None else np.full(len(selection.ids), np.nan)
    rows = rows.add_column("score", [float(s) for s in scores])
    save_dataset(rows, args.out)
    print(f"Selected {len(selection.ids)} of {len(pool)} pairs ({args.strategy}) into {args.out}")
    return 0


def report(outcome) -> None:
    result = outcome.result
    print(f"Stopped: {result.stop_reason}")
    print(f"Ledger: {result.ledger.describe()}")
    from curate.runs import curve_table

    print(curve_table(result.curve, "accuracy"))
    print(f"Preference data: {outcome.summary['export']}")
    print(f"Run folder: {outcome.folder}")
    if result.waiting:
        print(f"Label the exported pairs (labels a, b, tie), then: curate resume {outcome.folder}")
