"""``EmbeddingClassifier``: logistic regression on the shared index's vectors, cheap enough to
retrain from scratch every round on a CPU, and the standard learner of active-learning benchmarks
on sentence embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.errors import ConfigError
from curate.pseudo import pseudo_cap

__all__ = ["ClassSelfTraining", "EmbeddingClassifier"]


@dataclass(frozen=True)
class ClassSelfTraining:
    """Pseudo-labels for the unlabelled items the classifier is already sure of.

    After each fit on the bought labels, every unlabelled item whose top class probability is at
    least ``threshold`` is a candidate; the most confident of them (ties by id), at most
    ``max_fraction`` of the training rows (:func:`curate.pseudo.pseudo_cap`), get their predicted class
    as a pseudo-label, and the classifier is fitted again on both. Pseudo-labels are recomputed from
    the bought labels every round (none carries over, so a wrong one cannot entrench itself), are
    never billed, and are exported marked ``source: pseudo``.
    """

    threshold: float = 0.9
    max_fraction: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0 < self.threshold <= 1:
            raise ConfigError(f"learner.self_training.threshold must be a probability in (0, 1]. "
                              f"Got {self.threshold!r} instead.")
        if isinstance(self.max_fraction, bool) or not isinstance(self.max_fraction, (int, float)) \
                or not 0 <= self.max_fraction < 1:
            raise ConfigError(f"learner.self_training.max_fraction must lie in [0, 1). Got {self.max_fraction!r} instead.")

    @classmethod
    def of(cls, spec: Mapping[str, Any] | ClassSelfTraining | None) -> ClassSelfTraining | None:
        """From a recipe's ``learner.self_training`` mapping (None: off)."""
        if spec is None or isinstance(spec, ClassSelfTraining):
            return spec
        from curate.config import from_dict

        return from_dict(cls, dict(spec), "learner.self_training")


class EmbeddingClassifier:
    """Multinomial logistic regression on embedding vectors (rows of ``features`` by pool id).

    ``C`` defaults to 10, not scikit-learn's 1: unit-norm sentence embeddings give small logits,
    and with C=1 and a few dozen labels the intercept dominates (0.50 vs 0.83 accuracy on the
    shipped reviews with 40 labels).

    Before two classes have been seen there is nothing to discriminate: it predicts the label
    frequencies seen so far (uniform with none), so uncertainty strategies still run.
    """

    capabilities = frozenset({"probs", "add_rows"})

    def __init__(self, features: np.ndarray, classes: Sequence[Any], *, C: float = 10.0, max_iter: int = 1000,
                 self_training: ClassSelfTraining | Mapping[str, Any] | None = None) -> None:
        if len(classes) < 2:
            raise ConfigError(f"EmbeddingClassifier needs at least two classes; got {list(classes)}.")
        self.features = features
        self.classes = list(classes)
        self.C = C
        self.max_iter = max_iter
        self.self_training = ClassSelfTraining.of(self_training)
        self.model_ = None
        self.prior_ = np.full(len(self.classes), 1.0 / len(self.classes))
        self.pseudo_: dict[int, tuple[Any, float]] = {}   # id -> (pseudo-label, its probability), latest fit

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
        ids = np.asarray(ids, dtype=np.int64)
        y = self._targets(labels)
        counts = np.bincount(y, minlength=len(self.classes))
        self.prior_ = (counts + 1.0) / (counts.sum() + len(self.classes))
        self.pseudo_ = {}
        present = np.flatnonzero(counts)
        if len(present) < 2:
            self.model_ = None
            return
        self.model_ = self._logreg(self.features[ids], y)
        if self.self_training is not None:
            self._self_train(ids, y)

    def _logreg(self, x: np.ndarray, y: np.ndarray):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=self.max_iter).fit(x, y)

    def _self_train(self, ids: np.ndarray, y: np.ndarray) -> None:
        st = self.self_training
        unlabelled = np.setdiff1d(np.arange(len(self.features)), ids)
        cap = min(pseudo_cap(st.max_fraction, len(ids)), len(unlabelled))
        if cap == 0:
            return
        probs = self.predict_proba(unlabelled)
        top, guess = probs.max(axis=1), probs.argmax(axis=1)
        sure = np.flatnonzero(top >= st.threshold)
        chosen = sure[np.lexsort((unlabelled[sure], -top[sure]))][:cap]   # most confident, ties by id
        if len(chosen) == 0:
            return
        self.pseudo_ = {int(unlabelled[i]): (self.classes[guess[i]], float(top[i])) for i in chosen}
        self.model_ = self._logreg(self.features[np.concatenate([ids, unlabelled[chosen]])],
                                   np.concatenate([y, guess[chosen]]))

    def pseudo_rows(self) -> list[dict[str, Any]]:
        """The latest fit's pseudo-labels, ``{id, label, probability}`` by id (what an export marks pseudo)."""
        return [{"id": i, "label": label, "probability": p} for i, (label, p) in sorted(self.pseudo_.items())]

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

