"""Uncertainty scores: pure functions of prediction arrays, and the scorers that read them.

Every function returns "higher = more uncertain = acquire first". They work on any model's
class probabilities: a classifier's ``predict_proba``, an LM's option log-probs (``np.exp``), or a
committee's / MC-dropout samples stacked on a leading axis.
"""

from __future__ import annotations

import numpy as np

from curate.acquire.base import PoolState
from curate.errors import ConfigError, did_you_mean

__all__ = [
    "BALD",
    "ArrayScore",
    "ClassUncertainty",
    "Committee",
    "bald",
    "entropy",
    "kl_disagreement",
    "least_confidence",
    "margin",
    "vote_entropy",
]

_EPS = 1e-12


def _probs(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim < 2 or p.shape[-1] < 2:
        raise ConfigError(f"Class probabilities need shape (..., n, C) with C >= 2; got {p.shape}.")
    return p


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - max_c p(c)."""
    return 1.0 - _probs(probs).max(axis=-1)


def margin(probs: np.ndarray) -> np.ndarray:
    """-(p(first) - p(second)): a small gap between the two likeliest classes scores high."""
    p = _probs(probs)
    top2 = np.partition(p, -2, axis=-1)[..., -2:]
    return -(top2[..., 1] - top2[..., 0])


def entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy in nats."""
    p = _probs(probs)
    return -(p * np.log(p + _EPS)).sum(axis=-1)


def bald(samples: np.ndarray) -> np.ndarray:
    """Mutual information between prediction and model (Houlsby et al. 2011) from ``(T, n, C)``
    stochastic forward passes (MC dropout) or ensemble members: H[mean p] - mean H[p]."""
    s = _probs(samples)
    if s.ndim != 3:
        raise ConfigError(f"BALD needs samples of shape (T, n, C); got {s.shape}.")
    return entropy(s.mean(axis=0)) - entropy(s).mean(axis=0)


def vote_entropy(committee: np.ndarray) -> np.ndarray:
    """Entropy of the committee's hard votes, from ``(M, n, C)`` member probabilities."""
    c = _probs(committee)
    votes = c.argmax(axis=-1)  # (M, n)
    counts = np.stack([(votes == k).sum(axis=0) for k in range(c.shape[-1])], axis=-1) / c.shape[0]
    return entropy(counts)


def kl_disagreement(committee: np.ndarray) -> np.ndarray:
    """Mean KL divergence of each member from the consensus (McCallum & Nigam 1998)."""
    c = _probs(committee)
    consensus = c.mean(axis=0)
    kl = (c * (np.log(c + _EPS) - np.log(consensus + _EPS)[None])).sum(axis=-1)
    return kl.mean(axis=0)


_MEASURES = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}
_COMMITTEE = {"vote_entropy": vote_entropy, "kl": kl_disagreement}


class ClassUncertainty:
    """Scores from the current model's class probabilities (``PoolState.probs``)."""

    def __init__(self, measure: str = "entropy") -> None:
        if measure not in _MEASURES:
            raise ConfigError(f"Unknown uncertainty measure '{measure}'. Known: {', '.join(_MEASURES)}."
                              f"{did_you_mean(measure, _MEASURES)}")
        self.measure = measure

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        return _MEASURES[self.measure](state.require_probs(f"{self.measure} uncertainty")[ids])


class BALD:
    """BALD from ``PoolState.arrays['mc_probs']`` of shape ``(T, size, C)``."""

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        return bald(state.require_array("mc_probs", "BALD")[:, ids])


class Committee:
    """Query by committee from ``PoolState.arrays['committee_probs']`` of shape ``(M, size, C)``."""

    def __init__(self, measure: str = "vote_entropy") -> None:
        if measure not in _COMMITTEE:
            raise ConfigError(f"Unknown committee measure '{measure}'. Known: {', '.join(_COMMITTEE)}."
                              f"{did_you_mean(measure, _COMMITTEE)}")
        self.measure = measure

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        return _COMMITTEE[self.measure](state.require_array("committee_probs", "query by committee")[:, ids])


class ArrayScore:
    """A precomputed per-item score by name, e.g. ``"token_entropy"`` (mean token entropy of the
    model's own answers) or ``"perplexity"``; ``sign=-1`` prefers low values."""

    def __init__(self, name: str, sign: float = 1.0) -> None:
        self.name = name
        self.sign = sign

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        return self.sign * np.asarray(state.require_array(self.name, f"ArrayScore('{self.name}')"), dtype=np.float64)[ids]
