"""Learners the loop trains each round, behind one protocol.

Every learner has ``fit(ids, labels)``. What else it can do is *declared*, in a ``capabilities``
set, so that the loop and the recipe checks read it instead of probing for methods:

* ``probs`` — ``predict_proba(ids) -> (n, classes)``: class probabilities (uncertainty strategies);
* ``responses`` — it answers prompts itself (``answers``, ``samples``...): answer-uncertainty strategies;
* ``arrays:<name>`` — ``arrays() -> {name: per-item array}`` (a preference learner's ``margin``);
* ``add_rows`` — ``add_rows(pool, vectors)``: it takes rows appended to the pool (generation).

``EmbeddingClassifier`` lives here; response learners in :mod:`curate.responses`; each paradigm may
bring its own (TRL reward models, DPO) through the same seam.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from curate.learners.classifier import ClassSelfTraining, EmbeddingClassifier

__all__ = ["CAPABILITIES", "ClassSelfTraining", "EmbeddingClassifier", "Learner", "capabilities_of"]

CAPABILITIES = ("probs", "responses", "add_rows", "arrays:<name>")


@runtime_checkable
class Learner(Protocol):
    capabilities: frozenset[str]

    def fit(self, ids: np.ndarray, labels: Sequence[Any]) -> None: ...


def capabilities_of(learner: Any) -> frozenset[str]:
    """What ``learner`` declares it can do. A learner written without a ``capabilities`` set (a
    user's own, in Python) is read by the methods it has, so it keeps working."""
    declared = getattr(learner, "capabilities", None)
    if declared is not None:
        return frozenset(declared)
    found = set()
    if callable(getattr(learner, "predict_proba", None)):
        found.add("probs")
    if callable(getattr(learner, "add_rows", None)):
        found.add("add_rows")
    if callable(getattr(learner, "answers", None)):
        found.add("responses")
    return frozenset(found)
