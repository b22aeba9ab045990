"""The active-learning loop: Initialize -> Query -> Annotate -> Train -> Stop, crash-safe.

Every round is journalled (``curate.journal``): the selection before anything is bought, each
paid annotation with its charge as it arrives, and the trained round's metrics last. A run killed
at any instant resumes where it stopped (``ActiveLoop.run`` again on the same ``run_dir``): the
unfinished round is completed with the items it had selected and not yet bought, so no label is
lost and none is bought twice. Randomness is derived from ``(seed, round)``, so a resumed run
makes the same choices an uninterrupted one would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.acquire.base import PoolState, Strategy
from curate.acquire.strategies import Random
from curate.annotate.base import Annotator, AwaitingHumanLabels
from curate.errors import ConfigError, DataError
from curate.journal import Journal
from curate.ledger import Ledger
from curate.stopping import History, MaxRounds, RoundRecord, StopCriterion

__all__ = ["ActiveLoop", "LoopResult"]

logger = logging.getLogger(__name__)


@dataclass
class LoopResult:
    stop_reason: str
    history: History
    labels: dict[int, Any]
    ledger: Ledger
    run_dir: Path
    waiting: bool = False  # True when stopped for human labels: resume after importing them
    curve: list[dict] = field(default_factory=list)


class ActiveLoop:
    """One active-learning run over a pool.

    Args:
        pool: the :class:`~curate.pool.Pool` to label.
        strategy: the query strategy for rounds after the first.
        annotator: who labels (gold, LLM, human queue, hybrid).
        learner: trained on the labels after every round; its class probabilities feed the strategy.
        run_dir: the run's folder (journal, exports); an existing journal there is resumed.
        index: the shared embedding index (diversity strategies, density, few-shot retrieval).
        init: the cold-start strategy (random by default; k-center or k-means for diversity).
        init_size / batch_size: labels bought in round 0 / in each later round.
        stopping: when to stop (default: 10 rounds); budgets below always apply as well.
        ledger: prices and the money budget, which no batch exceeds (batches shrink to fit).
        label_budget: the most labels to buy in total.
        evaluate: ``learner -> metric`` (e.g. test accuracy) for the learning curve and plateaus.
        stop_set: pool ids whose predictions feed :class:`~curate.stopping.StablePredictions`.
        extra_arrays: ``learner -> {name: array}`` for strategies that need more than class
            probabilities (``mc_probs`` for BALD, ``committee_probs``, ``token_entropy``...).
        seed: everything random derives from ``(seed, round)``.
    """

    def __init__(self, pool, *, strategy: Strategy, annotator: Annotator, learner, run_dir: str | Path,
                 index=None, init: Strategy | None = None, init_size: int = 25, batch_size: int = 25,
                 stopping: StopCriterion | None = None, ledger: Ledger | None = None, label_budget: int | None = None,
                 evaluate: Callable[[Any], float] | None = None, stop_set: np.ndarray | None = None,
                 extra_arrays: Callable[[Any], Mapping[str, np.ndarray]] | None = None, seed: int = 0) -> None:
        for name, value in (("init_size", init_size), ("batch_size", batch_size)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"The '{name}' parameter of ActiveLoop must be a positive integer. Got {value!r} instead.")
        self.pool = pool
        self.strategy = strategy
        self.annotator = annotator
        self.learner = learner
        self.run_dir = Path(run_dir)
        self.index = index
        self.init = init if init is not None else Random()
        self.init_size = int(init_size)
        self.batch_size = int(batch_size)
        self.stopping = stopping if stopping is not None else MaxRounds(10)
        self.ledger = ledger if ledger is not None else Ledger()
        self.label_budget = label_budget
        self.evaluate = evaluate
        self.stop_set = stop_set
        self.extra_arrays = extra_arrays
        self.seed = seed

    # ------------------------------------------------------------------ the loop

    def run(self) -> LoopResult:
        journal = Journal(self.run_dir / "journal.sqlite")
        try:
            return self._run(journal)
        finally:
            journal.close()

    def _run(self, journal: Journal) -> LoopResult:
        self._check_identity(journal)
        self.ledger.entries = journal.charges()
        labels, attempted = journal.labels(), journal.attempted()
        history = History(money_budget=self.ledger.budget)
        rounds = journal.rounds()
        for row in rounds:
            if row.status == "trained":
                history.rounds.append(RoundRecord(row.round, row.labels, (row.spent_micros or 0) / 1e6, row.metric,
                                                  row.stop_predictions))
        if rounds:
            logger.info("resuming %s: %d round(s) journalled, %d labels, %s", self.run_dir, len(rounds), len(labels),
                        self.ledger.describe())
        if labels:
            self._fit(labels)
        try:
            if rounds and rounds[-1].status != "trained":
                self._complete(journal, rounds[-1].round, rounds[-1].selected, labels, attempted, history)
            while True:
                r = len(history.rounds)
                reason = self.stopping.reason(history) if history.rounds else None
                if reason:
                    break
                size, reason = self._batch_size(r, len(labels), len(attempted))
                if reason:
                    break
                state = self._state(labels, attempted)
                strategy = self.init if r == 0 else self.strategy
                clock = time.perf_counter()
                selection = strategy.select(state, size, rng=np.random.default_rng([self.seed, r]))
                info = {"select_seconds": time.perf_counter() - clock, "candidates": len(state.candidates),
                        **{k: v for k, v in selection.info.items() if isinstance(v, (int, float, str))}}
                journal.start_round(r, selection.ids, [self.seed, r], type(strategy).__name__, info)
                logger.info("round %d: selected %d of %d candidates (%s)", r, len(selection.ids),
                            len(state.candidates), _describe(strategy))
                self._complete(journal, r, selection.ids, labels, attempted, history)
        except AwaitingHumanLabels as waiting:
            logger.warning("%s", waiting)
            return self._result(f"waiting for human labels: {waiting}", history, labels, waiting=True)
        logger.info("stopped: %s (%d labels, %s)", reason, len(labels), self.ledger.describe())
        return self._result(reason, history, labels)

    def _complete(self, journal: Journal, r: int, selected: np.ndarray, labels: dict, attempted: set,
                  history: History) -> None:
        """Buy the round's labels not bought yet, train, evaluate, and journal the round as done."""
        # Items routed to people and not answered yet were paid for (the LLM's attempt) but are not
        # done: they go back to the annotator, which sends them straight to people again.
        pending = journal.routed_pending()
        if pending and hasattr(self.annotator, "routed_"):
            self.annotator.routed_.update(pending)
        todo = np.array([i for i in selected.tolist() if i not in attempted or i in pending], dtype=np.int64)
        bought = 0
        for ann in self.annotator.annotate(self.pool, todo, labeled=dict(labels)):
            if ann.item_id not in set(todo.tolist()):
                raise DataError(f"annotator returned item {ann.item_id}, which round {r} did not ask for.")
            charge = self.ledger.charge(ann.source, human_labels=ann.human_labels, input_tokens=ann.input_tokens,
                                        output_tokens=ann.output_tokens, item_id=ann.item_id, round=r)
            journal.record(ann, charge, r)
            attempted.add(ann.item_id)
            if ann.label is not None:
                labels[ann.item_id] = ann.label
                bought += 1
        journal.mark_annotated(r)
        self._fit(labels)
        metric = self.evaluate(self.learner) if self.evaluate is not None and labels else None
        preds = None
        if self.stop_set is not None and labels:
            preds = self.learner.predict_proba(self.stop_set).argmax(1)
        journal.finish_round(r, labels=len(labels), spent_micros=self.ledger.spent_micros, metric=metric,
                             stop_predictions=preds)
        history.rounds.append(RoundRecord(r, len(labels), self.ledger.spent, metric, preds))
        logger.info("round %d: %d new labels, %d in all; %s%s", r, bought, len(labels), self.ledger.describe(),
                    "" if metric is None else f"; metric {metric:.4f}")

    # ------------------------------------------------------------------ helpers

    def _check_identity(self, journal: Journal) -> None:
        """A journal belongs to one pool and seed: resuming it with another is refused."""
        identity = {"pool_size": len(self.pool), "pool_source": str(getattr(self.pool, "source", "")), "seed": self.seed}
        stored = journal.get_meta("identity")
        if stored is None:
            journal.set_meta("identity", identity)
        elif stored != identity:
            raise ConfigError(f"{self.run_dir} holds a run of another pool or seed ({stored}); this one is {identity}. "
                              "Use a new run folder.")

    def _batch_size(self, r: int, n_labels: int, n_attempted: int) -> tuple[int, str | None]:
        wanted = self.init_size if r == 0 else self.batch_size
        left = len(self.pool) - n_attempted
        if left == 0:
            return 0, "the pool is exhausted: every item was labelled"
        size = min(wanted, left)
        if self.label_budget is not None:
            size = min(size, self.label_budget - n_labels)
            if size <= 0:
                return 0, f"label budget of {self.label_budget} reached"
        per_item = self.annotator.worst_case_micros(self.ledger.prices)
        affordable = self.ledger.affordable(per_item, size)
        if affordable <= 0:
            return 0, f"money budget reached ({self.ledger.describe()}); one more label could cost {per_item / 1e6:.6f}"
        if affordable < size:
            logger.info("round %d: batch shrinks from %d to %d to fit the money budget", r, size, affordable)
        return int(affordable), None

    def _state(self, labels: dict, attempted: set) -> PoolState:
        probs, arrays = None, {}
        if labels:
            probs = self.learner.predict_proba(np.arange(len(self.pool)))
            if self.extra_arrays is not None:
                arrays = dict(self.extra_arrays(self.learner))
        ids = np.array(sorted(labels), dtype=np.int64)
        return PoolState(size=len(self.pool), labeled=np.array(sorted(attempted), dtype=np.int64),
                         labels=[labels[i] for i in ids] if len(ids) == len(attempted) else None,
                         index=self.index, probs=probs, arrays=arrays, pool=self.pool)

    def _fit(self, labels: dict) -> None:
        ids = np.array(sorted(labels), dtype=np.int64)
        self.learner.fit(ids, [labels[i] for i in ids.tolist()])

    def _result(self, reason: str, history: History, labels: dict, waiting: bool = False) -> LoopResult:
        curve = [{"round": r.round, "labels": r.labels, "spent": r.spent, "metric": r.metric} for r in history.rounds]
        return LoopResult(reason, history, dict(labels), self.ledger, self.run_dir, waiting, curve)


def _describe(strategy: Strategy) -> str:
    inner = getattr(strategy, "scorer", None)
    measure = getattr(inner, "measure", None)
    return type(strategy).__name__ + (f"({measure})" if measure else "")
