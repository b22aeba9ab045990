"""small-text's query strategies as curate strategies, so that a benchmark compares them on the same work.

``SmallTextStrategy("BreakingTies")`` answers curate's ``select(state, budget, rng=...)`` by calling
small-text's ``query(clf, dataset, indices_unlabeled, indices_labeled, y, n)`` with the loop's own
predictions (the same learner's class probabilities) and the same index vectors. small-text is a
benchmark-only peer (``pip install 'curate[bench]'``), imported when a peer is first used.

Supported: the confidence-based strategies (``LeastConfidence``, ``PredictionEntropy``,
``BreakingTies``) and the embedding-based ones that need nothing but vectors (``GreedyCoreset``,
``LightweightCoreset``, ``EmbeddingKMeans``). small-text returns its picks unordered (argpartition);
they are returned as they come, since a round buys all of them.
"""

from __future__ import annotations

import warnings

import numpy as np

from curate.acquire.base import PoolState, Selection, check_budget
from curate.errors import ConfigError, MissingDependencyError, did_you_mean

__all__ = ["CONFIDENCE", "EMBEDDING", "SmallTextStrategy", "check_peer"]

CONFIDENCE = ("LeastConfidence", "PredictionEntropy", "BreakingTies")
EMBEDDING = ("GreedyCoreset", "LightweightCoreset", "EmbeddingKMeans")


def _query_strategies():
    try:
        import small_text.query_strategies as qs
    except ImportError as err:
        raise MissingDependencyError(
            f"small-text is needed for the peer strategies ('small-text:...') but cannot be imported ({err}). "
            "Install the benchmark extra: pip install 'curate[bench]' (or pip install small-text==1.4.1).") from None
    return qs


def check_peer(name: str) -> None:
    """Raise a clear error now (before a benchmark starts) for a peer that cannot run."""
    known = (*CONFIDENCE, *EMBEDDING)
    if name not in known:
        raise ConfigError(f"'small-text:{name}' is not a supported peer strategy. Supported: "
                          f"{', '.join('small-text:' + k for k in known)}.{did_you_mean(name, known)}")
    _query_strategies()


class _Rows:
    """The 'dataset' small-text's strategies pass around: rows of the pool, by position."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item) -> _Rows:
        return _Rows(self.ids[item])


class _Predictions:
    """The 'classifier' small-text asks for probabilities: the loop's learner's, already computed."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def predict_proba(self, dataset: _Rows) -> np.ndarray:
        return self.probs[dataset.ids]


class SmallTextStrategy:
    """One of small-text's query strategies behind curate's strategy interface.

    Args:
        name: the small-text class name (see :data:`CONFIDENCE` and :data:`EMBEDDING`).
        **params: passed to that class, e.g. ``GreedyCoreset(distance_metric="cosine")``.
    """

    def __init__(self, name: str, **params) -> None:
        check_peer(name)
        self.name = name
        self.params = dict(params)

    def __repr__(self) -> str:
        return f"SmallTextStrategy({self.name!r})"

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        k = check_budget(state, budget)
        qs = _query_strategies()
        try:
            with warnings.catch_warnings():
                # GreedyCoreset warns on every construction that its default metric changed in 1.2.
                warnings.filterwarnings("ignore", message="Default distance metric has changed")
                strategy = getattr(qs, self.name)(**self.params)
        except TypeError as err:
            raise ConfigError(f"Bad parameters for small-text's {self.name}: {err}.") from None
        unlabeled = np.asarray(state.candidates, dtype=np.int64)
        labeled = np.asarray(state.labeled, dtype=np.int64)
        y = np.zeros(len(labeled), dtype=np.int64)  # neither family reads the labels
        if k == 0:
            return Selection(np.zeros(0, dtype=np.int64), info={"peer": f"small-text:{self.name}"})
        if self.name in ("LightweightCoreset", "EmbeddingKMeans"):
            # They draw from numpy's global generator (EmbeddingKMeans through scikit-learn's KMeans with
            # no random_state): seed it from this round's rng, so that a cell repeats exactly.
            np.random.seed(int(rng.integers(2**32 - 1)))
        if self.name in CONFIDENCE:
            probs = state.require_probs(f"small-text's {self.name}")
            picked = strategy.query(_Predictions(np.asarray(probs)), _Rows(np.arange(state.size)), unlabeled, labeled, y, n=k)
        else:
            vectors = state.require_index(f"small-text's {self.name}").vectors
            both = np.concatenate([unlabeled, labeled])
            # Given embeddings, small-text indexes them like its subset: unlabelled rows first, then labelled.
            picked = strategy.query(None, _Rows(np.arange(state.size)), unlabeled, labeled, y, n=k,
                                    embeddings=np.asarray(vectors[both], dtype=np.float32), pbar=None)
        picked = np.asarray(picked, dtype=np.int64)
        if len(np.unique(picked)) != len(picked) or np.isin(picked, labeled).any():
            raise ConfigError(f"small-text's {self.name} returned repeated or labelled ids; this adapter cannot use them.")
        return Selection(picked, info={"peer": f"small-text:{self.name}"})
