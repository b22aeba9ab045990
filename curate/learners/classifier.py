"""``EmbeddingClassifier``: logistic regression on the shared index's vectors, cheap enough to
retrain from scratch every round on a CPU, and the standard learner of active-learning benchmarks
on sentence embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.errors import ConfigError

__all__ = ["EmbeddingClassifier"]

class EmbeddingClassifier:
    """Multinomial logistic regression on embedding vectors (rows of ``features`` by pool id).

    ``C`` defaults to 10, not scikit-learn's 1: unit-norm sentence embeddings give small logits,
    and with C=1 and a few dozen labels the intercept dominates (0.50 vs 0.83 accuracy on the
    shipped reviews with 40 labels).

    Before two classes have been seen there is nothing to discriminate: it predicts the label
    frequencies seen so far (uniform with none), so uncertainty strategies still run.
    """

    capabilities = frozenset({"probs", "add_rows"})

    def __init__(self, features: np.ndarray, classes: Sequence[Any], *, C: float = 10.0, max_iter: int = 1000) -> None:
        if len(classes) < 2:
            raise ConfigError(f"EmbeddingClassifier needs at least two classes; got {list(classes)}.")
        self.features = features
        self.classes = list(classes)
        self.C = C
        self.max_iter = max_iter
        self.model_ = None
        self.prior_ = np.full(len(self.classes), 1.0 / len(self.classes))

    def add_rows(self, pool, vectors: np.ndarray) -> None:
        """Feature rows for ids appended to the pool (generated examples), in id order."""
        vectors = np.asarray(vectors, dtype=self.features.dtype)
        if vectors.ndim != 2 or vectors.shape[1] != self.features.shape[1]:
            raise ConfigError(f"add_rows got vectors of shape {vectors.shape}; the features are {self.features.shape[1]}-d.")
        if len(self.features) + len(vectors) != len(pool):
            raise ConfigError(f"add_rows: {len(self.features)} feature rows + {len(vectors)} new ones do not match the "
                              f"pool's {len(pool)} rows.")
        self.features = np.vstack([self.features, vectors])

    def _targets(self, labels: Sequence[Any]) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.classes)}
        try:
            return np.array([lookup[y] for y in labels], dtype=np.int64)
        except KeyError as err:
            raise ConfigError(f"Label {err.args[0]!r} is not one of the classes {self.classes}.") from None

    def fit(self, ids: np.ndarray, labels: Sequence[Any]) -> None:
        from sklearn.linear_model import LogisticRegression

        y = self._targets(labels)
        counts = np.bincount(y, minlength=len(self.classes))
        self.prior_ = (counts + 1.0) / (counts.sum() + len(self.classes))
        present = np.flatnonzero(counts)
        if len(present) < 2:
            self.model_ = None
            return
        model = LogisticRegression(C=self.C, max_iter=self.max_iter)
        model.fit(self.features[np.asarray(ids, dtype=np.int64)], y)
        self.model_ = model

    def predict_proba(self, ids: np.ndarray | None = None) -> np.ndarray:
        x = self.features if ids is None else self.features[np.asarray(ids, dtype=np.int64)]
        return self.predict_proba_vectors(x)

    def predict_proba_vectors(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for feature rows that are not in the pool (a test set)."""
        if self.model_ is None:
            return np.tile(self.prior_, (len(x), 1))
        out = np.zeros((len(x), len(self.classes)))
        out[:, self.model_.classes_] = self.model_.predict_proba(x)  # classes never seen get 0
        return out

    def predict(self, ids: np.ndarray | None = None) -> list:
        return [self.classes[i] for i in self.predict_proba(ids).argmax(1)]
