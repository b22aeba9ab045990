"""A cheap reward model for the loop: Bradley–Terry logistic regression on sentence embeddings,
with a bootstrap ensemble for disagreement.

The reward of a response is linear in its features, ``r(x, y) = w · φ(x, y)``, and
``P(a ≻ b) = σ(r(x, a) − r(x, b)) = σ(w · (φ(x, a) − φ(x, b)))``: logistic regression on feature
differences with no intercept. Every pair is entered in both orders (``d → 1`` and ``−d → 0``), so
the model cannot learn a position, and a tie enters as a soft target of one half. Cheap enough to
retrain from scratch every round on a CPU.

:func:`reward_features` builds ``φ(x, y) = [e(y), e(x) ⊙ e(y)]`` from MiniLM embeddings of the
prompt and the response, embedded separately so that a long prompt never truncates the response
out of the embedder's window (256 word pieces for MiniLM); the product term lets the reward depend
on the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.errors import ConfigError

from .pairs import check_pair_labels
from .scores import bt_probs, sigmoid

__all__ = ["RewardModelLearner", "embed_pairs", "reward_features"]

_TARGET = {"a": 1.0, "b": 0.0, "tie": 0.5}


def reward_features(prompt_vectors: np.ndarray, response_vectors: np.ndarray) -> np.ndarray:
    """``[e(y), e(x) ⊙ e(y)]`` rows (float32)."""
    x = np.asarray(prompt_vectors, dtype=np.float32)
    y = np.asarray(response_vectors, dtype=np.float32)
    if x.shape != y.shape or x.ndim != 2:
        raise ConfigError(f"reward_features needs two (n, dim) arrays of one shape; got {x.shape} and {y.shape}.")
    return np.hstack([y, x * y])


def embed_pairs(pool, embedder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompt vectors (the shared index is built from these), and the reward features of responses a and b."""
    prompts = embedder.encode(pool.column("prompt"))
    a = embedder.encode(pool.column("response_a"))
    b = embedder.encode(pool.column("response_b"))
    return prompts, reward_features(prompts, a), reward_features(prompts, b)


def _fit_bt(diffs: np.ndarray, targets: np.ndarray, C: float, max_iter: int) -> np.ndarray:
    """Weights of a Bradley–Terry logistic model (no intercept) fitted on both orders of every pair."""
    from sklearn.linear_model import LogisticRegression

    x = np.vstack([diffs, diffs, -diffs, -diffs])
    y = np.concatenate([np.ones(len(diffs)), np.zeros(len(diffs)), np.ones(len(diffs)), np.zeros(len(diffs))])
    w = np.concatenate([targets, 1 - targets, 1 - targets, targets])
    keep = w > 0
    model = LogisticRegression(C=C, fit_intercept=False, max_iter=max_iter)
    model.fit(x[keep], y[keep], sample_weight=w[keep])
    return model.coef_[0].astype(np.float64)


class RewardModelLearner:
    """The loop's learner seam (``fit`` / ``predict_proba``) for pairs, with ``classes = ["a", "b"]``.

    Args:
        features_a / features_b: reward features of responses a and b, one row per pool id.
        members: bootstrap ensemble members for ``committee_probs`` (0 = none).
        C: inverse L2 strength of the logistic regression.
        seed: the bootstrap resamples derive from ``(seed, number of labels)``, so a resumed loop
            refits the same ensemble.
    """

    classes = ["a", "b"]

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"probs", "arrays:margin", *(("arrays:committee_probs",) if self.members else ())})

    def __init__(self, features_a: np.ndarray, features_b: np.ndarray, *, members: int = 5, C: float = 1.0,
                 seed: int = 0, max_iter: int = 1000) -> None:
        if np.shape(features_a) != np.shape(features_b) or np.ndim(features_a) != 2:
            raise ConfigError(f"features_a and features_b must be (size, dim) arrays of one shape; got "
                              f"{np.shape(features_a)} and {np.shape(features_b)}.")
        if isinstance(members, bool) or not isinstance(members, int) or members < 0 or members == 1:
            raise ConfigError(f"The 'members' parameter of RewardModelLearner must be 0 or an int >= 2. Got {members!r} instead.")
        self.features_a = features_a
        self.features_b = features_b
        self.members = members
        self.C = C
        self.seed = seed
        self.max_iter = max_iter
        self.weights_: np.ndarray | None = None
        self.member_weights_: list[np.ndarray] = []

    def _diffs(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return np.asarray(self.features_a[ids], dtype=np.float64) - np.asarray(self.features_b[ids], dtype=np.float64)

    def fit(self, ids: np.ndarray, labels: Sequence[Any]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        check_pair_labels(labels, "RewardModelLearner")
        if len(ids) != len(labels):
            raise ConfigError(f"fit got {len(ids)} ids but {len(labels)} labels.")
        self.member_weights_ = []
        if len(ids) == 0:
            self.weights_ = None
            return
        diffs, targets = self._diffs(ids), np.array([_TARGET[v] for v in labels])
        self.weights_ = _fit_bt(diffs, targets, self.C, self.max_iter)
        rng = np.random.default_rng([self.seed, len(ids)])
        for _ in range(self.members):
            pick = rng.integers(0, len(ids), len(ids))
            self.member_weights_.append(_fit_bt(diffs[pick], targets[pick], self.C, self.max_iter))

    # ---------------------------------------------------------------- predictions

    def margin(self, ids: np.ndarray | None = None) -> np.ndarray:
        """``r(a) − r(b)`` for pool ids (all when None); zero before any label."""
        ids = np.arange(len(self.features_a)) if ids is None else np.asarray(ids, dtype=np.int64)
        if self.weights_ is None:
            return np.zeros(len(ids))
        return self._diffs(ids) @ self.weights_

    def predict_proba(self, ids: np.ndarray | None = None) -> np.ndarray:
        return bt_probs(self.margin(ids))

    def committee_probs(self, ids: np.ndarray | None = None) -> np.ndarray:
        """``(M, n, 2)`` P(a ≻ b) of each bootstrap member."""
        ids = np.arange(len(self.features_a)) if ids is None else np.asarray(ids, dtype=np.int64)
        if not self.member_weights_:
            return np.full((max(self.members, 2), len(ids), 2), 0.5)
        diffs = self._diffs(ids)
        return np.stack([bt_probs(diffs @ w) for w in self.member_weights_])

    def arrays(self) -> dict[str, np.ndarray]:
        """What the strategies read (the loop's ``extra_arrays``)."""
        out = {"margin": self.margin()}
        if self.members:
            out["committee_probs"] = self.committee_probs()
        return out

    def prob_a(self, features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
        """P(a ≻ b) for pairs outside the pool (a held-out test set)."""
        if self.weights_ is None:
            return np.full(len(features_a), 0.5)
        return sigmoid((np.asarray(features_a, dtype=np.float64) - np.asarray(features_b, dtype=np.float64)) @ self.weights_)
