"""Classification through the loop: a label set, logistic regression on the shared embeddings, any
annotator (gold, an LLM, people, hybrid routing), any strategy that a classifier can feed, and
optionally generation as a query source. ``build`` is the run, step by step; the core runs it.

The run folder also holds ``generated.jsonl`` when the recipe generates (every generated row, the
label it was written for and the one it got).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from curate.build import (
    LazyBackend,
    annotator_from,
    available_for,
    index_for,
    labeller_from,
    ledger_from,
    loop_from,
    stopping_from,
    strategy_from,
)
from curate.errors import ConfigError
from curate.runs import Built, RunFolder, labelled_rows

from .config import ClassifyConfig

__all__ = ["build", "build_generation", "generation_summary", "write_generated"]

logger = logging.getLogger(__name__)


def build(config: ClassifyConfig, folder: RunFolder, *, evaluate: bool = True) -> Built:
    """Pool -> embeddings and index -> learner -> held-out evaluation -> annotator -> strategies ->
    generation -> loop."""
    from curate.embed import load_embedder
    from curate.executor import executor_from
    from curate.learners import EmbeddingClassifier
    from curate.pool import load_pool

    if len(config.labels) < 2:
        raise ConfigError(f"'labels' must list at least two classes. Got {config.labels} instead.")
    if config.learner.kind != "logreg":
        raise ConfigError(f"learner.kind '{config.learner.kind}' is not known here; use 'logreg'.")
    pc = config.pool
    pool = load_pool(pc.path, columns=pc.columns, id_column=pc.id_column, format=pc.format, split=pc.split)
    executor = executor_from(config.executor)
    try:  # the pool is embedded on the executor; later encodes (eval set, generated rows) run here
        texts = pool.texts()
        index = index_for(texts, load_embedder(config.embedder, executor=executor), pool.ids, kind=config.index.kind)
    finally:
        executor.close()
    embedder = load_embedder(config.embedder)
    learner = EmbeddingClassifier(index.vectors, config.labels, C=config.learner.C,
                                  self_training=config.learner.self_training)
    backend = LazyBackend(config.lm, config.executor)
    annotator = annotator_from(config.annotator, labels=config.labels,
                               machine=lambda: labeller_from(config.annotator, config.labels, index=index, backend=backend))
    available = available_for(learner, index=index, backend=True)
    strategies = {}
    for role, name, params in (("acquire", config.acquire.strategy, config.acquire.params),
                               ("init", config.init.strategy, config.init.params)):
        from curate.acquire.registry import StrategyContext

        strategies[role] = strategy_from(name, params, context=StrategyContext(learner=learner, backend=backend,
                                                                               index=index, seed=config.seed),
                                         available=available, who="a classification run")
    generators = [] if config.generate is None else [build_generation(config, texts, index, embedder, backend())]
    loop = loop_from(pool, strategy=strategies["acquire"], init=strategies["init"], annotator=annotator,
                     learner=learner, run_dir=folder.path, index=index, init_size=config.init.size,
                     batch_size=config.acquire.batch_size, stopping=stopping_from(config.stop),
                     ledger=ledger_from(config.prices, config.stop.money), label_budget=config.stop.labels,
                     evaluate=_accuracy(config, embedder) if evaluate else None,
                     stop_set=_stop_set(config, len(pool)), seed=config.seed, generators=generators)

    def export(out: Path | None) -> Path:
        """``labels.jsonl``: every labelled item (its row, label, who labelled it, round); the eval
        set as the test split (``labels.test.jsonl``); the dataset card (:func:`curate.export.save_run_data`)."""
        from curate.export import save_run_data

        test = None
        if config.eval is not None:
            ec = config.eval
            test = load_pool(ec.path, columns=ec.columns, id_column=ec.id_column, format=ec.format, split=ec.split,
                             require=("text", "label")).dataset.to_list()
        rows = labelled_rows(folder.path, pool)
        if learner.self_training is not None:
            rows += _pseudo_rows(learner, pool, rows)
        return save_run_data(rows, out or folder.path / "labels.jsonl", test=test,
                             run_dir=folder.path, paradigm="classify",
                             strategy=f"{config.init.strategy} (round 0), then {config.acquire.strategy}",
                             budget={"money": config.stop.money, "labels": config.stop.labels,
                                     "rounds": config.stop.rounds}, currency=config.prices.currency)

    def finish(result) -> dict[str, Any]:
        out: dict[str, Any] = {"export": str(export(None))}
        if generators:
            out.update(generated=str(write_generated(folder.path)), generation=generation_summary(folder.path))
        return out

    return Built(loop, config.stop.rounds, metric="held-out accuracy (eval set)", finish=finish, export=export)


def _pseudo_rows(learner, pool, bought: list[dict]) -> list[dict]:
    """The self-training pseudo-labels of the final model (refitted on the bought labels, so an export
    from a finished run gives the same rows), marked ``source: pseudo`` with their probability."""
    if not bought or len(pool) == 0:
        return []
    in_pool = [r for r in bought if r["id"] < len(pool)]   # generated rows: no features in a fresh export
    learner.fit(np.array([r["id"] for r in in_pool], dtype=np.int64), [r["label"] for r in in_pool])
    out = []
    for p in learner.pseudo_rows():
        row = dict(pool.dataset[p["id"]])
        row.pop("id", None)
        out.append({"id": p["id"], **row, "label": p["label"], "source": "pseudo", "round": None,
                    "probability": round(p["probability"], 6)})
    return out


def _accuracy(config: ClassifyConfig, embedder):
    """``learner -> accuracy`` on the eval pool, or None without one."""
    if config.eval is None:
        return None
    from curate.pool import load_pool

    ec = config.eval
    test = load_pool(ec.path, columns=ec.columns, id_column=ec.id_column, format=ec.format, split=ec.split,
                     require=("text", "label"))
    test_x = embedder.encode(test.texts())
    test_y = np.array([str(v) for v in test.column("label")])

    def accuracy(model) -> float:
        pred = np.array([str(model.classes[i]) for i in model.predict_proba_vectors(test_x).argmax(1)])
        return float((pred == test_y).mean())

    return accuracy


def _stop_set(config: ClassifyConfig, size: int) -> np.ndarray | None:
    """The pool items whose predictions StablePredictions compares between rounds."""
    if config.stop.stable_kappa is None:
        return None
    rng = np.random.default_rng([config.seed, 10**6])
    return np.sort(rng.choice(size, size=min(config.stop.stop_set_size, size), replace=False))


def build_generation(config: ClassifyConfig, pool_texts: list[str], index, embedder, backend):
    """The recipe's ``generate`` block as a :class:`~curate.generate.GenerationQuery` on the run's
    LM, deduplicating against the pool (``pool_texts``, and the shared index)."""
    from curate.generate import GenerationQuery, Generator, standard_filters, worst_case_tokens

    g = config.generate
    filters = standard_filters(backend, embedder, labels=config.labels if g.kind == "labelled" else None,
                               pool_texts=pool_texts, index=index, min_chars=g.min_chars, max_chars=g.max_chars,
                               dup_threshold=g.dup_threshold, label_threshold=g.label_threshold,
                               judge_threshold=g.judge_threshold)
    generator = Generator(backend, temperature=g.temperature, max_new_tokens=g.max_new_tokens)
    common = dict(filters=filters, embedder=embedder, per_round=g.per_round, every=g.every, first_round=g.first_round,
                  label=g.label, max_candidates=g.max_candidates, batch_size=g.batch_size,
                  worst_case_tokens=worst_case_tokens(filters, g.max_new_tokens))
    if g.kind == "coverage":
        return GenerationQuery.coverage(generator, task=g.task, **common)
    if not g.task:
        raise ConfigError("generate.task is empty: say what the examples are (e.g. 'movie review sentiment').")
    return GenerationQuery.labelled(generator, task=g.task, labels=config.labels, **common)


def write_generated(run_dir: Path) -> Path:
    """``generated.jsonl``: every row generation added to the pool, with the label it was written
    for, the label it got (if bought or kept) and the round; the journal is the source of truth."""
    from curate.journal import Journal

    journal = Journal.of(run_dir)
    try:
        labels = {r["item_id"]: r for r in journal.label_rows()}
        rows = [{"id": g["item_id"], **g["row"], "intended_label": g["label"],
                 "label": labels.get(g["item_id"], {}).get("label"), "label_source": labels.get(g["item_id"], {}).get("source"),
                 "round": g["round"], "source": g["source"]} for g in journal.generated()]
    finally:
        journal.close()
    path = Path(run_dir) / "generated.jsonl"
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    return path


def generation_summary(run_dir: Path) -> str | None:
    """One line per generating round (accepted / written, what each filter rejected), or None."""
    from curate.journal import Journal

    journal = Journal.of(run_dir)
    try:
        reports = journal.generation_reports()
    finally:
        journal.close()
    if not reports:
        return None
    lines = []
    for round_no, _query, m in reports:
        rejected = ", ".join(f"{f} {n}/{m['seen'].get(f, 0)}" for f, n in m["rejected"].items()) or "none"
        lines.append(f"  round {round_no}: {m['accepted']} accepted of {m['generated']} written "
                     f"(rejected: {rejected}); {m['stop_reason']}")
    return "Generation:\n" + "\n".join(lines)
