"""LLM first, people for the rest: route by confidence (and an optional verifier), calibrate the
threshold on a gold subset, and measure agreement between two labellers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from curate.annotate.base import Annotation, Annotator
from curate.budget import Prices
from curate.errors import ConfigError
from curate.stopping import cohen_kappa

__all__ = ["ROUTED", "Agreement", "Calibration", "HybridAnnotator", "agreement", "calibrate_threshold"]

logger = logging.getLogger(__name__)

ROUTED = "routed to human"


class HybridAnnotator:
    """Keep the LLM's label where it is sure; send the rest to people.

    For each id the LLM labels, in order:

    1. confidence >= ``threshold``: the LLM's annotation is yielded as it is (the labelled record);
    2. else, with a ``verifier``: the LLM's annotation is yielded as a cost record (``label=None``,
       note ``"below threshold; sent to verifier"``) and the verifier labels the item; if it agrees,
       the verifier's annotation is yielded with the label (note ``"verified: agrees with llm"``),
       else as a cost record with note ``"routed to human"``;
    3. else (no verifier, or it disagreed, or the LLM failed): the LLM's annotation is yielded as a
       cost record with note ``"routed to human"``, and later the human annotator's annotation
       for the id.

    So the loop sees every paid record (charge each one by its tokens and ``human_labels``) and
    exactly one labelled record per id that got a label; a record with ``label=None`` is never the
    last word while its id is routed. The human annotator may raise ``AwaitingHumanLabels`` after
    yielding the answers it has: ids routed to people are remembered in ``routed_`` and go straight
    to them when asked again, so the LLM is not paid twice. After a restart, restore ``routed_``
    from the journal: the ids of records whose note is :data:`ROUTED`.
    """

    name = "hybrid"

    def __init__(self, llm: Annotator, human: Annotator, *, threshold: float,
                 verifier: Annotator | None = None) -> None:
        self.llm = llm
        self.human = human
        self.threshold = threshold
        self.verifier = verifier
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
            raise ConfigError(f"The 'threshold' parameter of HybridAnnotator must be a number. Got {threshold!r} instead.")
        self.routed_: set[int] = set()

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        fresh = np.array([i for i in ids.tolist() if i not in self.routed_], dtype=np.int64)
        unsure: dict[int, Annotation] = {}
        kept = 0
        for a in self.llm.annotate(pool, fresh, labeled=labeled):
            if a.ok and a.confidence is not None and a.confidence >= self.threshold:
                kept += 1
                yield a
            elif self.verifier is not None and a.ok:
                unsure[a.item_id] = a
                yield replace(a, label=None, note="below threshold; sent to verifier")
            else:
                self.routed_.add(a.item_id)
                yield replace(a, label=None, note=ROUTED)
        verified = 0
        if unsure:
            for v in self.verifier.annotate(pool, np.array(list(unsure), dtype=np.int64), labeled=labeled):
                if v.ok and v.label == unsure[v.item_id].label:
                    verified += 1
                    yield replace(v, note="verified: agrees with llm")
                else:
                    self.routed_.add(v.item_id)
                    yield replace(v, label=None, note=ROUTED)
        to_human = np.array([i for i in ids.tolist() if i in self.routed_], dtype=np.int64)
        logger.info("hybrid: %d of %d kept from the llm, %d verified, %d routed to people",
                    kept, len(fresh), verified, len(to_human))
        if len(to_human):
            for h in self.human.annotate(pool, to_human, labeled=labeled):
                if h.ok:
                    self.routed_.discard(h.item_id)
                yield h

    @property
    def item_micros(self):
        """Per-item bounds (the LLM's measured prompt + a person's label) where the LLM has them,
        else absent (the loop sizes batches by :meth:`worst_case_micros`)."""
        llm = getattr(self.llm, "item_micros", None)
        if not callable(llm) or self.verifier is not None:
            raise AttributeError("item_micros")

        def bound(pool, ids, prices):
            return np.asarray(llm(pool, ids, prices), dtype=np.int64) + int(self.human.worst_case_micros(prices))

        return bound

    def worst_case_micros(self, prices: Prices) -> int:
        total = self.llm.worst_case_micros(prices) + self.human.worst_case_micros(prices)
        return total + (self.verifier.worst_case_micros(prices) if self.verifier is not None else 0)


class Calibration(NamedTuple):
    threshold: float      # math.inf when no threshold reaches the target: route everything to people
    accuracy: float       # of the kept LLM labels on the gold subset (nan when none are kept)
    kept_fraction: float  # share of the gold subset the LLM would keep
    kept: int


def calibrate_threshold(confidences: Sequence[float | None], llm_labels: Sequence[Any], gold_labels: Sequence[Any],
                        target_accuracy: float, *, min_kept: int = 1) -> Calibration:
    """The lowest confidence threshold at which the LLM labels kept (confidence >= threshold) are
    at least ``target_accuracy`` right on a gold subset, keeping at least ``min_kept`` of them.

    A missing confidence (or label) is never kept. Lower thresholds keep more, so the lowest one
    that reaches the target saves the most human labels.
    """
    n = len(confidences)
    if not (len(llm_labels) == n == len(gold_labels)) or n == 0:
        raise ConfigError(f"calibrate_threshold needs three non-empty sequences of equal length; got {n}, "
                          f"{len(llm_labels)} and {len(gold_labels)}.")
    if not 0.0 <= target_accuracy <= 1.0:
        raise ConfigError(f"The 'target_accuracy' parameter must be in [0, 1]. Got {target_accuracy!r} instead.")
    conf = np.array([-np.inf if c is None or math.isnan(c) else float(c) for c in confidences])
    right = np.array([p is not None and p == g for p, g in zip(llm_labels, gold_labels, strict=True)])
    conf[np.array([p is None for p in llm_labels])] = -np.inf
    order = np.argsort(-conf, kind="stable")
    conf_sorted, right_sorted = conf[order], right[order]
    correct = np.cumsum(right_sorted)
    # A threshold t keeps every item with conf >= t: the prefix ending at the last tie of t.
    best: Calibration | None = None
    for end in range(n):
        t = conf_sorted[end]
        if not np.isfinite(t) or (end + 1 < n and conf_sorted[end + 1] == t):
            continue
        kept = end + 1
        accuracy = correct[end] / kept
        if kept >= min_kept and accuracy >= target_accuracy:
            best = Calibration(float(t), float(accuracy), kept / n, kept)
    return best if best is not None else Calibration(math.inf, float("nan"), 0.0, 0)


class Agreement(NamedTuple):
    accuracy: float  # share of items both labelled the same
    kappa: float     # Cohen's kappa
    n: int           # items compared (pairs where either label is None are left out)


def agreement(labels_a: Sequence[Any], labels_b: Sequence[Any]) -> Agreement:
    """How far two labellers agree: raw accuracy and Cohen's kappa over the items both labelled."""
    if len(labels_a) != len(labels_b):
        raise ConfigError(f"agreement needs two sequences of equal length; got {len(labels_a)} and {len(labels_b)}.")
    pairs = [(str(a), str(b)) for a, b in zip(labels_a, labels_b, strict=True) if a is not None and b is not None]
    if not pairs:
        raise ConfigError("agreement needs at least one item labelled by both; every pair has a None.")
    a, b = zip(*pairs, strict=True)
    return Agreement(float(np.mean([x == y for x, y in pairs])), cohen_kappa(list(a), list(b)), len(pairs))
