"""Selective annotation: with a labelling budget, which unlabelled examples to annotate so that they
make good demonstrations later (Su et al. 2023).

It runs through the loop engine (``curate.loop.ActiveLoop``), so every paid label is journalled,
a killed run resumes without buying a label twice, and any annotator works (gold, LLM, people,
hybrid). The strategies:

* ``votek`` / ``kcenter`` / ``kmeans`` / ``random`` (the core's ``make_strategy``): the selection
  does not depend on labels, so the whole budget is bought in one round by default;
* ``uncertainty``: ``TopK`` over :class:`LMEntropy`, the entropy of the LM's option distribution
  (zero-shot, or with the nearest labelled demonstrations), after a cold start.

The loop's learner is the core's ``EmbeddingClassifier`` (logistic regression on the index
vectors), not the LM: the loop asks its learner for probabilities over the *whole pool* every round,
which the LM would pay a forward pass per item for; the LM is spent only where it is the point, in
:class:`LMEntropy`, on the candidates (``Subsample`` bounds how many).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import ConfigError

from .config import AnnotateConfig, RetrieveConfig
from .evaluate import build_prompts
from .prompts import template_inputs
from .scoring import score_options

__all__ = ["ALIASES", "SPECS", "AnnotationPlan", "DemoSetLearner", "LMEntropy", "plan_annotation",
           "select_and_annotate", "selective_annotation_loop"]

logger = logging.getLogger(__name__)


class LMEntropy:
    """Scorer: entropy (nats) of the LM's distribution over the label options for each candidate.

    With ``shots > 0`` and labels in the state, each candidate's prompt carries its ``shots``
    nearest labelled examples (by the state's index); otherwise it is zero-shot. Higher entropy =
    the LM is less sure = acquire first.
    """

    def __init__(self, backend, builder, *, shots: int = 0, max_batch_tokens: int = 4096, max_batch_size: int = 16) -> None:
        self.backend = backend
        self.builder = builder
        self.shots = shots
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size

    def score(self, state, ids: np.ndarray) -> np.ndarray:
        if state.pool is None:
            raise ConfigError("LMEntropy needs the pool's texts (PoolState.pool); none was given.")
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return np.zeros(0, dtype=np.float32)
        texts = template_inputs(self.builder.config, state.pool, ids)
        demos: list[list] = [[] for _ in ids]
        labelled = np.asarray(state.labeled, dtype=np.int64)
        if self.shots and len(labelled) and state.labels is not None and state.index is not None:
            from .retrieve import DemonstrationRetriever

            retriever = DemonstrationRetriever(RetrieveConfig(k=self.shots, candidates=self.shots), index=state.index,
                                               ids=labelled, labels=list(state.labels),
                                               texts=template_inputs(self.builder.config, state.pool, labelled))
            demos = retriever.retrieve(state.index.vectors_of(ids))
        elif self.shots and len(labelled):
            logger.info("LMEntropy: no labels or index in the state; scoring zero-shot")
        prompts = build_prompts(self.builder, texts, demos)
        logp = score_options(self.backend, [p.text for p in prompts], self.builder.options,
                             groups=[tuple(p.demo_ids) for p in prompts], max_batch_tokens=self.max_batch_tokens,
                             max_batch_size=self.max_batch_size)
        entropy = -(np.exp(logp) * logp).sum(axis=1)
        return entropy.astype(np.float32)


class DemoSetLearner:
    """The loop's learner: the core's ``EmbeddingClassifier`` on the index vectors, with labels
    compared as text (a pool may hold ``1`` where the label set says ``"1"``)."""

    capabilities = frozenset({"probs"})

    def __init__(self, features: np.ndarray, classes: Sequence[Any], *, C: float = 10.0) -> None:
        self.features = features
        self.classes = [str(c) for c in classes]
        self.C = C
        self._inner = None

    def _model(self):
        if self._inner is None:
            from curate.learners import EmbeddingClassifier

            self._inner = EmbeddingClassifier(self.features, self.classes, C=self.C)
        return self._inner

    def fit(self, ids: np.ndarray, labels: Sequence[Any]) -> None:
        self._model().fit(ids, [str(y) for y in labels])

    def predict_proba(self, ids: np.ndarray) -> np.ndarray:
        return self._model().predict_proba(ids)


@dataclass(frozen=True)
class AnnotationPlan:
    """How a budget is bought: ``init`` takes ``init_size`` in round 0, ``strategy`` ``batch_size`` per later round."""

    init: Any
    strategy: Any
    init_size: int
    batch_size: int
    rounds: int
    budget: int


def _lm_entropy(ctx, shots: int = 0, subsample: int | None = None):
    """The LM's option entropy on each candidate (:class:`LMEntropy`), on at most ``subsample``."""
    from curate.acquire import Subsample, TopK

    builder = ctx.options.get("builder")
    if builder is None:
        raise ConfigError("strategy 'lm_entropy' renders ICL prompts: it needs the run's prompt builder.")
    strategy = TopK(LMEntropy(ctx.lm("lm_entropy"), builder, shots=shots))
    return strategy if subsample is None else Subsample(strategy, subsample)


def _specs():
    from curate.acquire.registry import StrategySpec

    return (StrategySpec("lm_entropy", _lm_entropy, frozenset({"pool", "backend"}),
                         "entropy of the LM's label options for each candidate, in an ICL prompt", owner="icl"),)


SPECS = _specs()
ALIASES = {"uncertainty": "lm_entropy"}  # an ICL recipe's name for it


def plan_annotation(config: AnnotateConfig, *, backend=None, builder=None) -> AnnotationPlan:
    """The strategies and round sizes for ``config``, from the one registry."""
    from curate.acquire import REGISTRY, StrategyContext, make_strategy

    REGISTRY.add_all(SPECS)  # as the plugin loader does; adding them again changes nothing
    budget, rounds = config.budget, config.rounds
    if config.strategy == "uncertainty":
        if backend is None or builder is None:
            raise ConfigError("annotate.strategy 'uncertainty' scores with the LM: pass backend=... and builder=....")
        init = make_strategy(config.init)
        context = StrategyContext(backend=lambda: backend, options={"builder": builder})
        strategy = REGISTRY.build(config.strategy, {"shots": config.shots, "subsample": config.subsample}, context,
                                  aliases=ALIASES)
    else:
        # Strategies whose selection does not depend on labels: the whole budget can go in one round.
        init = make_strategy(config.strategy, **config.params)
        strategy = make_strategy(config.strategy, **config.params)
    init_size = config.init_size if config.init_size is not None else math.ceil(budget / rounds)
    if init_size > budget:
        raise ConfigError(f"annotate.init_size ({init_size}) is larger than annotate.budget ({budget}).")
    batch_size = max(1, math.ceil((budget - init_size) / max(rounds - 1, 1)))
    return AnnotationPlan(init, strategy, init_size, batch_size, rounds, budget)


def selective_annotation_loop(pool, index, plan: AnnotationPlan, *, annotator, classes: Sequence[Any],
                              run_dir: str | Path, seed: int = 0, ledger=None,
                              initial_labels: Mapping[int, Any] | None = None, evaluate=None):
    """The selective-annotation loop (not run): ``plan``'s strategies and round sizes, the core's
    logistic regression as the loop's learner."""
    from curate.build import loop_from, stopping_from
    from curate.config import StopConfig

    learner = DemoSetLearner(index.vectors_of(pool.ids), classes)
    return loop_from(pool, strategy=plan.strategy, annotator=annotator, learner=learner, run_dir=run_dir, index=index,
                     init=plan.init, init_size=plan.init_size, batch_size=plan.batch_size,
                     stopping=stopping_from(StopConfig(rounds=plan.rounds)), ledger=ledger, label_budget=plan.budget, seed=seed,
                     initial_labels=initial_labels, evaluate=evaluate)


def select_and_annotate(pool, index, plan: AnnotationPlan, *, annotator, classes: Sequence[Any], run_dir: str | Path,
                        seed: int = 0, ledger=None, initial_labels: Mapping[int, Any] | None = None,
                        evaluate=None):
    """Run the selective-annotation loop; returns the loop's :class:`~curate.loop.LoopResult`
    (``labels`` maps the annotated pool ids to their labels; ``waiting`` when people must answer first)."""
    loop = selective_annotation_loop(pool, index, plan, annotator=annotator, classes=classes, run_dir=run_dir,
                                     seed=seed, ledger=ledger, initial_labels=initial_labels, evaluate=evaluate)
    result = loop.run()
    logger.info("selective annotation: %d labels (%s); %s", len(result.labels), result.stop_reason,
                result.ledger.describe())
    return result
