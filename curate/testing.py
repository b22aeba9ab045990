"""Contract suites every part passes, the core's and each paradigm's (and a user's own):
:func:`check_strategy`, :func:`check_annotator`, :func:`check_learner`. Each raises
``AssertionError`` naming the part and the broken rule, so a test is one call.

They are the seams' promises, not one implementation's behaviour: a strategy returns at most
``budget`` unique unlabelled candidates, the same ones for the same seed, and leaves the state as
it found it; an annotator answers each id asked exactly once and never costs more than its worst
case; a learner declares what it can do and does it with the right shapes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.errors import ConfigError

__all__ = ["check_annotator", "check_learner", "check_strategy"]


def _fail(who: Any, rule: str) -> None:
    raise AssertionError(f"{type(who).__name__}: {rule}")


def check_strategy(strategy, state, *, budget: int = 5) -> None:
    """``strategy.select`` on ``state`` (a :class:`~curate.acquire.PoolState` with at least
    ``budget + 1`` candidates and every input the strategy needs)."""
    if len(state.candidates) <= budget:
        raise ValueError(f"check_strategy needs more than {budget} candidates; the state has {len(state.candidates)}.")
    before = copy.deepcopy((state.labeled, state.candidates, state.probs, {k: np.asarray(v) for k, v in state.arrays.items()}))
    sel = strategy.select(state, budget, rng=np.random.default_rng(7))
    ids = np.asarray(sel.ids)
    if ids.dtype != np.int64:
        _fail(strategy, f"ids must be int64, got {ids.dtype}")
    if len(ids) > budget or len(np.unique(ids)) != len(ids):
        _fail(strategy, f"must return at most {budget} unique ids, got {ids.tolist()}")
    if not np.isin(ids, state.candidates).all():
        _fail(strategy, "returned ids that are not candidates (labelled, or outside the pool)")
    if sel.scores is not None and len(sel.scores) != len(ids):
        _fail(strategy, "scores must align with ids")
    again = strategy.select(state, budget, rng=np.random.default_rng(7))
    if not np.array_equal(np.asarray(again.ids), ids):
        _fail(strategy, "must pick the same ids for the same seed")
    after = (state.labeled, state.candidates, state.probs, state.arrays)
    for name, x, y in zip(("labeled", "candidates", "probs"), before[:3], after[:3], strict=True):
        if not (x is None and y is None) and not np.array_equal(x, y):
            _fail(strategy, f"changed the state's {name}")
    for key, value in before[3].items():
        if not np.array_equal(value, np.asarray(after[3][key])):
            _fail(strategy, f"changed the state's arrays['{key}']")
    narrowed = state.candidates[::2]
    if len(narrowed) > budget:
        picked = strategy.select(state.narrowed(narrowed), budget, rng=np.random.default_rng(0)).ids
        if not np.isin(picked, narrowed).all():
            _fail(strategy, "ignored narrowed candidates (a wrapper's Subsample / exact-cost filter)")
    if len(strategy.select(state, 0, rng=np.random.default_rng(0)).ids):
        _fail(strategy, "a budget of 0 must return nothing")
    everything = state.narrowed(np.zeros(0, dtype=np.int64))
    try:
        strategy.select(everything, 1, rng=np.random.default_rng(0))
    except ConfigError:
        pass
    else:
        _fail(strategy, "must refuse to select from no candidates with a ConfigError")


def check_annotator(annotator, pool, ids: Sequence[int], *, prices, labeled: dict | None = None) -> list:
    """``annotator.annotate(pool, ids)``: records for the ids asked and no other, at most one with a
    label per id (others are paid cost records, ``label=None``: an LLM's attempt routed to people),
    every id answered, each id's total within the annotator's worst case (and within its
    ``item_micros`` where it bounds each item: exact for a recorded teacher, the measured prompt for
    an LLM). Returns the records."""
    from curate.annotate.base import Annotation

    asked = [int(i) for i in ids]
    got = list(annotator.annotate(pool, np.asarray(asked, dtype=np.int64), labeled=dict(labeled or {})))
    seen = {a.item_id for a in got}
    labelled = [a.item_id for a in got if a.label is not None]
    if seen != set(asked) or len(labelled) != len(set(labelled)):
        _fail(annotator, f"must answer each id asked, with at most one labelled record each; asked {sorted(asked)}, "
                         f"answered {sorted(a.item_id for a in got)} (labelled {sorted(labelled)})")
    worst = int(annotator.worst_case_micros(prices))
    exact = None
    if callable(getattr(annotator, "item_micros", None)):
        exact = dict(zip(asked, np.asarray(annotator.item_micros(pool, np.asarray(asked), prices)).tolist(),
                         strict=True))
    costs: dict[int, int] = {}
    for a in got:
        if not isinstance(a, Annotation) or not isinstance(a.source, str) or not a.source:
            _fail(annotator, f"must yield Annotation records with a source; got {a!r}")
        if min(a.human_labels, a.input_tokens, a.output_tokens) < 0:
            _fail(annotator, f"negative usage in {a!r}")
        if a.confidence is not None and not 0.0 <= a.confidence <= 1.0:
            _fail(annotator, f"confidence must lie in [0, 1]; got {a.confidence}")
        # Each record is charged on its own, as the loop does.
        costs[a.item_id] = costs.get(a.item_id, 0) + prices.micros(human_labels=a.human_labels,
                                                                   input_tokens=a.input_tokens,
                                                                   output_tokens=a.output_tokens)
    for item, cost in costs.items():
        if cost > worst:
            _fail(annotator, f"item {item} cost {cost} micros, over its worst case {worst}: a batch sized by the "
                             "worst case could overspend the budget")
        if exact is not None and cost > exact[item]:
            _fail(annotator, f"item {item} cost {cost} micros, over the {exact[item]} its item_micros allows: "
                             "batches trimmed to item_micros could overspend the budget")
    return got


def check_learner(learner, ids: Sequence[int], labels: Sequence[Any], *, size: int) -> None:
    """``learner.fit(ids, labels)`` on a pool of ``size`` items, then everything it declares:
    class probabilities (rows over its classes, summing to 1), per-item arrays of the pool's length."""
    from curate.learners import capabilities_of

    caps = capabilities_of(learner)
    unknown = [c for c in caps if c not in ("probs", "responses", "add_rows") and not c.startswith("arrays:")]
    if unknown:
        _fail(learner, f"declares capabilities no strategy reads: {unknown}")
    learner.fit(np.asarray(ids, dtype=np.int64), list(labels))
    if "probs" in caps:
        probe = np.arange(min(size, 12), dtype=np.int64)
        probs = np.asarray(learner.predict_proba(probe))
        if probs.ndim != 2 or len(probs) != len(probe):
            _fail(learner, f"predict_proba({len(probe)} ids) must be (n, classes); got shape {probs.shape}")
        if (probs < -1e-9).any() or (probs > 1 + 1e-9).any() or not np.allclose(probs.sum(1), 1.0, atol=1e-6):
            _fail(learner, "predict_proba rows must be probabilities summing to 1")
    wanted = [c[7:] for c in caps if c.startswith("arrays:")]
    if wanted:
        arrays = learner.arrays()
        for name in wanted:
            if name not in arrays:
                _fail(learner, f"declares arrays:{name} but arrays() has only {sorted(arrays)}")
            value = np.asarray(arrays[name])
            if size not in value.shape[:2]:
                _fail(learner, f"arrays()['{name}'] has shape {value.shape}, not one row per pool item ({size})")
    if "responses" in caps and not callable(getattr(learner, "answers", None)):
        _fail(learner, "declares responses but has no answers(ids)")
    if "add_rows" in caps and not callable(getattr(learner, "add_rows", None)):
        _fail(learner, "declares add_rows but has no add_rows(pool, vectors)")
