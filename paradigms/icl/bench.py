"""The ICL paradigm's benchmark cell runner (``curate bench``, paradigm ``icl``).

A cell is selective annotation under a budget schedule: the loop buys labels round by round (vote-k,
k-center, random, or any curate strategy; the loop's learner is the core's logistic regression, as in
:func:`~curate.paradigms.icl.annotate.select_and_annotate`), and after every round the LM is
evaluated with demonstrations drawn from the labels bought so far: for each of ``n_test`` fixed test
inputs, its ``k`` nearest labelled examples (KATE), scored by option log-probs at the answer position
(:func:`~curate.paradigms.icl.evaluate.evaluate_icl`). Metrics: ``icl_accuracy`` (primary),
``icl_calibrated_accuracy`` (contextual calibration, one content-free estimate for the whole test
set), and the LM's ``eval_tokens`` and ``eval_seconds`` for the evaluation.

Options (``options: {icl: {...}}`` in the recipe): ``n_test`` (40), ``k`` (4), ``calibrate`` (true),
``max_demo_tokens`` (32), ``max_input_tokens`` (64), ``max_batch_tokens`` (4096), ``max_batch_size``
(16), ``pool_per_seed`` (null: every seed annotates the whole pool; N: each seed its own random N
examples of it, as Su et al. do, so that deterministic strategies such as vote-k vary over seeds too),
and ``prompts: {dataset: {PromptConfig fields}}`` for datasets without a built-in prompt.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import ConfigError

__all__ = ["PROMPTS", "ICLRunner"]

logger = logging.getLogger(__name__)

CONTENT_FREE = ["N/A", "", "[MASK]"]
TEST_SEED = 1  # which test inputs are evaluated: the same for every cell of a dataset

# Per built-in dataset: the words the model answers with (single tokens after a space in SmolLM2's
# vocabulary) and the templates; the same as bench/bench_icl.py.
PROMPTS: dict[str, dict[str, Any]] = {
    "sst2": dict(instruction="Is the sentiment of the review negative or positive?",
                 input_template="Review: {text}", answer_template="Sentiment: {label}"),
    "reviews": dict(instruction="Is the sentiment of the review negative or positive?",
                    input_template="Review: {text}", answer_template="Sentiment: {label}"),
    "trec": dict(verbalizers={"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human",
                              "LOC": "location", "NUM": "number"},
                 instruction="What does the question ask for: abbreviation, description, entity, human, location or "
                             "number?",
                 input_template="Question: {text}", answer_template="Answer type: {label}"),
    "agnews": dict(verbalizers={"World": "world", "Sports": "sports", "Business": "business", "Sci/Tech": "technology"},
                   instruction="Is the topic of the news article world, sports, business or technology?",
                   input_template="Article: {text}", answer_template="Topic: {label}"),
}

OPTIONS = {"n_test": 40, "k": 4, "calibrate": True, "max_demo_tokens": 32, "max_input_tokens": 64,
           "max_batch_tokens": 4096, "max_batch_size": 16, "pool_per_seed": None, "prompts": {}}


class _Recorder:
    """The loop's learner (the core's logistic regression on the index vectors), remembering what it was
    trained on: the labels bought so far are the demonstrations the evaluation may use."""

    capabilities = frozenset({"probs"})

    def __init__(self, features: np.ndarray, classes) -> None:
        from .annotate import DemoSetLearner

        self.inner = DemoSetLearner(features, classes)
        self.classes = self.inner.classes
        self.ids_ = np.zeros(0, dtype=np.int64)
        self.labels_: list[str] = []

    def fit(self, ids, labels) -> None:
        self.ids_ = np.asarray(ids, dtype=np.int64)
        self.labels_ = [str(y) for y in labels]
        self.inner.fit(ids, labels)

    def predict_proba(self, ids) -> np.ndarray:
        return self.inner.predict_proba(ids)


class ICLRunner:
    metrics = ("icl_accuracy", "icl_calibrated_accuracy", "eval_tokens", "eval_seconds")

    def __init__(self, config) -> None:
        self.config = config
        self.options = config.paradigm_options("icl", OPTIONS)
        self._data: dict[str, dict] = {}
        self._backend = None
        self._embedder = None

    def check(self, cell) -> None:
        from curate.bench.cells import check_strategy

        check_strategy(self.config, cell.strategy)
        check_strategy(self.config, self.config.init_for(cell))
        source = self.config.dataset(cell.dataset).source
        if source == "synthetic":
            raise ConfigError(f"grid.dataset '{cell.dataset}' is synthetic (vectors, no text): the icl paradigm needs text.")
        if source not in PROMPTS and cell.dataset not in self.options["prompts"]:
            raise ConfigError(f"options.icl.prompts has no prompt for dataset '{cell.dataset}' (built in: "
                              f"{', '.join(PROMPTS)}); add one with input_template and answer_template.")

    # ------------------------------------------------------------------ shared parts

    def backend(self):
        if self._backend is None:
            from curate.build import backend_from

            self._backend = backend_from(self.config.lm)
        return self._backend

    def data(self, name: str) -> dict:
        if name not in self._data:
            from curate.bench.datasets import load_split
            from curate.config import from_dict
            from curate.embed import load_embedder

            from .config import PromptConfig
            from .prompts import PromptBuilder

            if self._embedder is None:
                self._embedder = load_embedder(self.config.embedder)
            split = load_split(name, self.config.dataset(name))
            vectors = self._embedder.encode(split.pool_texts)
            n = min(int(self.options["n_test"]), len(split.test_texts))
            pick = np.sort(np.random.default_rng([0, TEST_SEED]).choice(len(split.test_texts), size=n, replace=False))
            texts = [split.test_texts[i] for i in pick]
            source = self.config.dataset(name).source
            spec = {**PROMPTS.get(source, {}), **self.options["prompts"].get(name, {})}
            spec.setdefault("max_demo_tokens", self.options["max_demo_tokens"])
            spec.setdefault("max_input_tokens", self.options["max_input_tokens"])
            prompt = from_dict(PromptConfig, spec, f"options.icl.prompts.{name}")
            builder = PromptBuilder.for_backend(prompt, split.classes, self.backend())
            self._data[name] = {"split": split, "vectors": vectors, "pools": {}, "texts": texts,
                                "gold": [split.test_labels[i] for i in pick], "test_x": self._embedder.encode(texts),
                                "builder": builder}
            logger.info("icl dataset %s: %s; pool %d, %d test inputs", name, split.note, len(split.pool_texts), n)
        return self._data[name]

    def pool_for(self, name: str, seed: int):
        """The pool a cell annotates, and its index: the whole pool, or this seed's random ``pool_per_seed``."""
        from curate.index import EmbeddingIndex
        from curate.pool import load_pool

        d = self.data(name)
        size = self.options["pool_per_seed"]
        key = None if size is None else seed
        if key not in d["pools"]:
            split, n = d["split"], len(d["split"].pool_texts)
            rows = np.arange(n)
            if size is not None and int(size) < n:
                rows = np.sort(np.random.default_rng([0, 2, seed]).choice(n, size=int(size), replace=False))
            pool = load_pool([{"text": split.pool_texts[i], "label": split.pool_labels[i]} for i in rows.tolist()],
                             require=("text", "label"))
            index = EmbeddingIndex.from_vectors(d["vectors"][rows], pool.ids, model=self._embedder.name, kind="flat")
            d["pools"] = {key: (pool, index)}  # one at a time: cells of a seed run next to each other
        return d["pools"][key]

    # ------------------------------------------------------------------ one cell

    def run(self, cell, run_dir: Path, metrics_log):
        from curate.bench.cells import (
            build_cell_annotator,
            build_ledger,
            build_stopping,
            build_strategy,
            init_strategy,
        )
        from curate.build import loop_from

        from .config import RetrieveConfig
        from .evaluate import evaluate_icl
        from .retrieve import DemonstrationRetriever

        d = self.data(cell.dataset)
        pool, index = self.pool_for(cell.dataset, cell.seed)
        schedule = self.config.schedules[cell.schedule]
        classes = d["split"].classes
        backend, builder, opts = self.backend(), d["builder"], self.options
        k = int(opts["k"])

        def measure(learner: _Recorder) -> dict[str, float]:
            texts = pool.texts(learner.ids_)
            retriever = DemonstrationRetriever(RetrieveConfig(method="knn", k=k, candidates=k), index=index,
                                               ids=learner.ids_, labels=learner.labels_, texts=texts)
            result = evaluate_icl(backend, builder, retriever, d["texts"], d["gold"], d["test_x"], seed=cell.seed,
                                  calibrate=bool(opts["calibrate"]), content_free=CONTENT_FREE,
                                  max_batch_tokens=int(opts["max_batch_tokens"]),
                                  max_batch_size=int(opts["max_batch_size"]))
            return {"icl_accuracy": result.accuracy, "icl_calibrated_accuracy": result.dataset_calibrated_accuracy,
                    "eval_tokens": float(result.stats.forward_tokens), "eval_seconds": result.seconds}

        learner = _Recorder(index.vectors, classes)
        annotator = build_cell_annotator(self.config, cell, classes, pool, index, self.backend)
        loop = loop_from(pool, strategy=build_strategy(self.config, cell.strategy), annotator=annotator,
                         learner=learner, run_dir=run_dir, index=index, init=init_strategy(self.config, cell),
                         init_size=schedule.init, batch_size=schedule.batch, stopping=build_stopping(self.config, cell),
                         ledger=build_ledger(self.config, cell), evaluate=metrics_log.evaluator(measure), seed=cell.seed)
        return loop.run()
