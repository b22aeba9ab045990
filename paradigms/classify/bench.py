"""The classification benchmark's cell runner: logistic regression on sentence embeddings
(``EmbeddingClassifier`` on MiniLM by default), retrained every round; test accuracy and macro-F1.

Every cell of one dataset shares the embeddings, the index and the test set (computed once per
process, and cached on disk by content by the embedder), so cells differ only by strategy, schedule,
annotator and seed. Peers (``small-text:...``) run on the same vectors, learner and seeds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from curate.bench.cells import (
    build_cell_annotator,
    build_ledger,
    build_stopping,
    build_strategy,
    check_strategy,
    init_strategy,
)
from curate.errors import ConfigError

__all__ = ["ClassificationRunner"]

logger = logging.getLogger(__name__)


class _Data:
    def __init__(self, split, pool, index, test_x: np.ndarray, test_y: np.ndarray) -> None:
        self.split, self.pool, self.index, self.test_x, self.test_y = split, pool, index, test_x, test_y


class ClassificationRunner:
    metrics = ("accuracy", "macro_f1")

    def __init__(self, config) -> None:
        self.config = config
        self.options = config.paradigm_options("classification", {"C": config.learner.C})
        self._data: dict[str, _Data] = {}
        self._embedder = None
        self._backend = None

    # ------------------------------------------------------------------ checks

    def check(self, cell) -> None:
        check_strategy(self.config, cell.strategy)
        check_strategy(self.config, self.config.init_for(cell))
        if self.config.learner.kind != "logreg":
            raise ConfigError(f"learner.kind '{self.config.learner.kind}' is not known here; use 'logreg'.")

    # ------------------------------------------------------------------ data

    def data(self, name: str) -> _Data:
        if name not in self._data:
            from curate.bench.datasets import load_split
            from curate.index import EmbeddingIndex
            from curate.pool import load_pool

            split = load_split(name, self.config.dataset(name))
            if split.pool_vectors is not None:
                pool_x, test_x, model = split.pool_vectors, split.test_vectors, "synthetic"
            else:
                embedder = self.embedder()
                pool_x, test_x, model = embedder.encode(split.pool_texts), embedder.encode(split.test_texts), embedder.name
            pool = load_pool([{"text": t, "label": y} for t, y in zip(split.pool_texts, split.pool_labels, strict=True)],
                             require=("text", "label"))
            index = EmbeddingIndex.from_vectors(pool_x, pool.ids, model=model, kind="flat")
            lookup = {c: i for i, c in enumerate(split.classes)}
            test_y = np.array([lookup[y] for y in split.test_labels], dtype=np.int64)
            self._data[name] = _Data(split, pool, index, np.asarray(test_x, dtype=np.float32), test_y)
            logger.info("dataset %s: %s; pool %d, test %d", name, split.note, len(pool), len(test_y))
        return self._data[name]

    def embedder(self):
        if self._embedder is None:
            from curate.embed import load_embedder

            self._embedder = load_embedder(self.config.embedder)
        return self._embedder

    def backend(self):
        if self._backend is None:
            from curate.build import backend_from

            self._backend = backend_from(self.config.lm)
        return self._backend

    # ------------------------------------------------------------------ one cell

    def run(self, cell, run_dir: Path, metrics_log):
        from curate.acquire import StrategyContext
        from curate.build import loop_from
        from curate.learners import EmbeddingClassifier

        data = self.data(cell.dataset)
        schedule = self.config.schedules[cell.schedule]
        classes = data.split.classes
        n_classes = len(classes)

        def measure(learner) -> dict[str, float]:
            pred = learner.predict_proba_vectors(data.test_x).argmax(1)
            return {"accuracy": float(np.mean(pred == data.test_y)), "macro_f1": _macro_f1(data.test_y, pred, n_classes)}

        learner = EmbeddingClassifier(data.index.vectors, classes, C=float(self.options["C"]),
                                      self_training=self.config.learner.self_training)
        annotator = build_cell_annotator(self.config, cell, classes, data.pool, data.index, self.backend)
        context = StrategyContext(learner=learner, index=data.index, seed=cell.seed, batch_size=schedule.batch)
        loop = loop_from(data.pool, strategy=build_strategy(self.config, cell.strategy, context), annotator=annotator,
                         learner=learner, run_dir=run_dir, index=data.index,
                         init=init_strategy(self.config, cell, context),
                         init_size=schedule.init, batch_size=schedule.batch, stopping=build_stopping(self.config, cell),
                         ledger=build_ledger(self.config, cell), evaluate=metrics_log.evaluator(measure), seed=cell.seed)
        return loop.run()


def _macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over the classes present in the test set (sklearn's definition, without sklearn)."""
    scores = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (y == c))
        support, predicted = np.sum(y == c), np.sum(pred == c)
        if support == 0:
            continue
        scores.append(0.0 if tp == 0 else 2 * tp / (support + predicted))
    return float(np.mean(scores)) if scores else float("nan")
