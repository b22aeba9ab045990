"""Selective annotation as a run: with a labelling budget, which examples to annotate so that they
make good demonstrations later; every paid label journalled, resumable (re-running the same
command continues the run). ``build`` is the run, step by step; the core runs it. The run folder
ends with ``demonstrations.jsonl``, the pool of ``curate icl select`` / ``eval``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from curate.build import LazyBackend, annotator_from, labeller_from, ledger_from
from curate.errors import ConfigError
from curate.runs import Built, RunFolder

from .config import ICLConfig

__all__ = ["build", "labels_of", "load_pool_of", "write_demonstrations"]


def load_pool_of(pc, require: tuple[str, ...]):
    from curate.pool import load_pool

    return load_pool(pc.path, columns=pc.columns, id_column=pc.id_column, format=pc.format, split=pc.split,
                     require=require)


def labels_of(config: ICLConfig, pool) -> list[str]:
    """The recipe's label set, or the labels found in the pool."""
    if config.labels:
        return [str(c) for c in config.labels]
    if "label" not in pool.roles:
        raise ConfigError("No label set: pass --labels a,b,... or set labels in the recipe.")
    return sorted({str(v) for v in pool.column("label") if v is not None})


def build(config: ICLConfig, folder: RunFolder, *, evaluate: bool = True) -> Built:
    """Pool -> label set -> index -> annotator -> the plan (strategies and round sizes) -> loop."""
    from curate.embed import load_embedder
    from curate.index import EmbeddingIndex

    from .annotate import plan_annotation, selective_annotation_loop
    from .prompts import PromptBuilder

    if not config.pool.path:
        raise ConfigError("No pool: pass --pool PATH or set pool.path in the recipe.")
    pool = load_pool_of(config.pool, ("text",))
    labels = labels_of(config, pool)
    index = EmbeddingIndex.from_pool(pool, load_embedder(config.embedder))
    backend = LazyBackend(config.lm)
    annotator = annotator_from(config.annotator, labels=labels,
                               machine=lambda: labeller_from(config.annotator, labels, index=index, backend=backend))
    builder = None
    if config.annotate.strategy == "uncertainty":
        builder = PromptBuilder.for_backend(config.prompt, labels, backend())
    plan = plan_annotation(config.annotate, backend=backend() if builder else None, builder=builder)
    loop = selective_annotation_loop(pool, index, plan, annotator=annotator, classes=labels, run_dir=folder.path,
                                     seed=config.seed, ledger=ledger_from(config.prices, None))
    keys = config.pool.id_column

    def export(out: Path | None) -> Path:
        from curate.journal import Journal

        journal = Journal.of(folder.path)
        try:
            labels = journal.labels()
        finally:
            journal.close()
        return write_demonstrations(pool, labels, out or folder.path / "demonstrations.jsonl", key_column=keys)

    def finish(result) -> dict[str, Any]:
        return {"strategy": config.annotate.strategy, "pool_size": len(pool), "demonstrations": str(export(None))}

    return Built(loop, plan.rounds, metric="metric", finish=finish, export=export)


def write_demonstrations(pool, labels: dict, path: Path, *, key_column: str | None = None) -> Path:
    """The annotated examples (id, text, label), one JSON line each: the pool of ``select`` / ``eval``."""
    keys = pool.column("key") if "key" in pool.columns else None
    ids = sorted(labels)
    texts = pool.texts(np.asarray(ids, dtype=np.int64)) if ids else []
    with open(path, "w", encoding="utf-8") as handle:
        for i, text in zip(ids, texts, strict=True):
            row = {"id": int(i), "text": text, "label": str(labels[i])}
            if keys is not None:
                # Under the pool's own id column, so that the same recipe reads this file as --pool.
                row[key_column] = keys[i]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
