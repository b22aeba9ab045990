"""The curated data as a ``datasets`` folder TRL's ``SFTTrainer`` takes as it is, with provenance.

Bought responses come from the run's journal (who answered: ``human``, ``llm`` for a teacher,
``gold``...; the round they were bought in), pseudo-responses from the learner's self-training
(``pseudo``). Each row keeps ``id``, ``provenance``, ``round`` and ``score`` beside the TRL columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.errors import ConfigError
from curate.export import to_trl
from curate.journal import FILE as JOURNAL_FILE

__all__ = ["response_dataset"]

PROVENANCE = {"llm": "teacher", "gold": "gold", "human": "human", "seed": "seed"}


def response_dataset(pool, run_dir: str | Path, *, pseudo: Sequence[dict] = (), format: str = "messages",
                     system_prompt: str | None = None, include_pseudo: bool = True) -> Any:
    """Every usable response of a run (journal) plus ``pseudo`` rows, in a TRL format.

    Args:
        pool: the run's prompt pool.
        run_dir: the run folder holding ``journal.sqlite``.
        pseudo: self-training rows (``ResponseLearner.records()``): ``id``, ``response``, ``round``,
            ``uncertainty``; a bought response for the same id wins.
        format: ``"messages"`` or ``"prompt_completion"``.
    """
    from datasets import Dataset

    from curate.journal import Journal

    if format not in ("messages", "prompt_completion"):
        raise ConfigError(f"Response data is exported as 'messages' or 'prompt_completion'. Got {format!r} instead.")
    path = Path(run_dir) / JOURNAL_FILE
    if not path.exists():
        raise ConfigError(f"{run_dir} holds no run (no journal.sqlite).")
    journal = Journal(path)
    try:
        bought = [r for r in journal.label_rows() if r["label"] is not None]
    finally:
        journal.close()
    prompts = pool.column("prompt")
    rows, seen = [], set()
    for r in bought:
        seen.add(r["item_id"])
        rows.append({"id": r["item_id"], "prompt": str(prompts[r["item_id"]]), "response": str(r["label"]),
                     "provenance": PROVENANCE.get(r["source"], r["source"]), "round": int(r["round"]),
                     "score": r["confidence"]})
    if include_pseudo:
        for p in pseudo:
            if p["id"] in seen:
                continue
            rows.append({"id": int(p["id"]), "prompt": str(prompts[p["id"]]), "response": p["response"],
                         "provenance": "pseudo", "round": int(p["round"]), "score": float(p["uncertainty"])})
    if not rows:
        raise ConfigError(f"{run_dir} has no responses to export yet.")
    rows.sort(key=lambda r: (r["round"], r["id"]))
    data = Dataset.from_list(rows)
    return to_trl(data, format, system_prompt=system_prompt)
