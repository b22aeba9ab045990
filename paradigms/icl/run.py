"""Selective annotation as a run: with a labelling budget, which examples to annotate so that they
make good demonstrations later; every paid label journalled, resumable (re-running the same
command continues the run). ``build`` is the run, step by step; the core runs it. The run folder
ends with ``demonstrations.jsonl``, the pool of ``curate icl select`` / ``eval``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curate.build import LazyBackend, annotator_from, labeller_from, ledger_from
from curate.errors import ConfigError
from curate.jsonl import write_jsonl
from curate.runs import Built, RunFolder

from .config import ICLConfig

__all__ = ["build", "labels_of", "load_pool_of", "with_input_text", "write_demonstrations"]


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
    from .config import template_fields
    from .prompts import PromptBuilder, check_input_fields, embedding_texts, template_inputs

    if not config.pool.path:
        raise ConfigError("No pool: pass --pool PATH or set pool.path in the recipe.")
    fields = template_fields(config.prompt.input_template)
    pool = load_pool_of(config.pool, ("text",) if fields == ("text",) else ())
    check_input_fields(config.prompt, pool)
    pool = with_input_text(pool, config.prompt)
    labels = labels_of(config, pool)
    embedder = load_embedder(config.embedder)
    texts = embedding_texts(config.prompt, template_inputs(config.prompt, pool))
    index = EmbeddingIndex.from_vectors(embedder.encode(texts), pool.ids, model=embedder.name)
    backend = LazyBackend(config.lm, config.executor)
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
        """``demonstrations.jsonl`` (the pool of ``icl select`` / ``eval``: no test split, ICL has no
        held-out part) and the dataset card of :func:`curate.export.save_run_data`'s convention."""
        from curate.export import write_card
        from curate.journal import Journal

        if out is not None and out.suffix != ".jsonl":
            raise ConfigError(f"ICL's demonstrations are a JSONL pool (for icl select / eval): export them to a "
                              f".jsonl file. Got '{out}' instead.")
        journal = Journal.of(folder.path)
        try:
            labels = journal.labels()
        finally:
            journal.close()
        path = write_demonstrations(pool, labels, out or folder.path / "demonstrations.jsonl", key_column=keys,
                                    fields=fields)
        a = config.annotate
        write_card(path, {"train": len(labels)}, run_dir=folder.path, paradigm="icl", what="demonstrations",
                   strategy=a.strategy if a.strategy != "uncertainty" else f"{a.init} (round 0), then uncertainty",
                   budget={"labels": a.budget, "rounds": a.rounds}, currency=config.prices.currency)
        return path

    def finish(result) -> dict[str, Any]:
        return {"strategy": config.annotate.strategy, "pool_size": len(pool), "demonstrations": str(export(None))}

    return Built(loop, plan.rounds, metric="none (no per-round evaluation)", finish=finish, export=export)


def with_input_text(pool, prompt):
    """For a template over other columns and a pool without a text role: the pool with a ``text``
    column holding the filled-in input template, which annotators (people, an LLM) are shown."""
    from curate.pool import ROLES, Pool

    from .prompts import embedding_texts, template_inputs

    if "text" in pool.roles:
        return pool
    texts = embedding_texts(prompt, template_inputs(prompt, pool))
    roles = tuple(r for r in ROLES if r in pool.roles or r == "text")
    return Pool(dataset=pool.dataset.add_column("text", texts), source=pool.source, roles=roles)


def write_demonstrations(pool, labels: dict, path: Path, *, key_column: str | None = None,
                         fields: tuple[str, ...] = ()) -> Path:
    """The annotated examples (id, text, label, and the input template's ``fields``), one JSON line
    each: the pool of ``select`` / ``eval``."""
    keys = pool.column("key") if "key" in pool.columns else None
    ids = sorted(labels)
    positions = np.asarray(ids, dtype=np.int64)
    texts = pool.texts(positions) if ids else []
    extra = [f for f in fields if f not in ("id", "text", "label")]
    values = {f: pool.select(positions)[f] for f in extra} if ids else {}
    rows = []
    for n, (i, text) in enumerate(zip(ids, texts, strict=True)):
        row = {"id": int(i), "text": text, "label": str(labels[i])}
        row.update({f: values[f][n] for f in extra})
        if keys is not None:
            # Under the pool's own id column, so that the same recipe reads this file as --pool.
            row[key_column] = keys[i]
        rows.append(row)
    return write_jsonl(path, rows)
