"""Composition by wrapping: strategies and scorers built from other strategies and scorers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curate.acquire.base import PoolState, Scorer, Selection, Strategy, check_budget, top_k
from curate.errors import ConfigError

__all__ = ["Combine", "CostAware", "DensityWeighted", "Subsample", "TextLengthCost", "TopThenDiverse", "normalize"]


def normalize(scores: np.ndarray, how: str = "rank") -> np.ndarray:
    """Map scores to [0, 1]: by rank (robust to scale and outliers) or min-max."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return s
    if how == "rank":
        from scipy.stats import rankdata

        # Tied scores share their average rank, so normalising never invents an order.
        return (rankdata(s, method="average") - 1) / max(len(s) - 1, 1)
    if how == "minmax":
        lo, hi = np.nanmin(s), np.nanmax(s)
        return np.zeros_like(s) if hi == lo else (s - lo) / (hi - lo)
    raise ConfigError(f"Unknown normalisation '{how}'. Use 'rank' or 'minmax'.")


class Subsample:
    """Run ``inner`` on a random subset of ``size`` candidates (for costly strategies on big pools)."""

    def __init__(self, inner: Strategy, size: int) -> None:
        if size <= 0:
            raise ConfigError(f"The 'size' parameter of Subsample must be positive. Got {size} instead.")
        self.inner = inner
        self.size = size

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        cands = state.candidates
        if len(cands) > self.size:
            cands = np.sort(rng.choice(cands, size=self.size, replace=False))
        return self.inner.select(state.narrowed(cands), budget, rng=rng)


class TopThenDiverse:
    """The top ``m`` candidates by ``scorer``, then ``budget`` of them chosen for diversity
    (k-center greedy on the index by default): uncertain but not redundant. ``m`` defaults to
    ten times the budget."""

    def __init__(self, scorer: Scorer, m: int | None = None, diverse: Strategy | None = None) -> None:
        self.scorer = scorer
        self.m = m
        self.diverse = diverse

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        k = check_budget(state, budget)
        m = 10 * k if self.m is None else self.m
        if m < k:
            raise ConfigError(f"TopThenDiverse needs m >= budget; got m={m}, budget={k}.")
        cands = state.candidates
        top = cands[top_k(self.scorer.score(state, cands), m, rng)]
        diverse = self.diverse
        if diverse is None:
            from curate.acquire.diversity import KCenterGreedy

            diverse = KCenterGreedy()
        return diverse.select(state.narrowed(np.sort(top)), k, rng=rng)


class Combine:
    """A scorer: the weighted sum of other scorers' normalised scores."""

    def __init__(self, scorers: Sequence[Scorer], weights: Sequence[float] | None = None, how: str = "rank") -> None:
        if not scorers:
            raise ConfigError("Combine needs at least one scorer.")
        weights = [1.0] * len(scorers) if weights is None else list(weights)
        if len(weights) != len(scorers):
            raise ConfigError(f"Combine got {len(scorers)} scorers but {len(weights)} weights.")
        self.scorers = list(scorers)
        self.weights = weights
        self.how = how

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        total = np.zeros(len(ids))
        for scorer, w in zip(self.scorers, self.weights, strict=True):
            total += w * normalize(scorer.score(state, ids), self.how)
        return total


class DensityWeighted:
    """A scorer: normalised ``scorer`` x density on the index ^ ``beta`` (information density,
    Settles & Craven 2008), so that outliers do not crowd out representative items."""

    def __init__(self, scorer: Scorer, beta: float = 1.0, k: int = 10) -> None:
        self.scorer = scorer
        self.beta = beta
        self.k = k
        self._density: tuple[int, int, np.ndarray] | None = None  # (index id, size, density by position)

    def _densities(self, index, ids: np.ndarray) -> np.ndarray:
        # Density depends on the index alone, so it is computed once per index, not every round.
        key = (id(index), len(index))
        if self._density is None or self._density[:2] != key:
            self._density = (*key, index.density(index.ids, k=self.k))
        return self._density[2][index.positions(ids)]

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        index = state.require_index("DensityWeighted")
        density = np.clip(self._densities(index, np.asarray(ids, dtype=np.int64)), 1e-6, None)
        # Min-max keeps how much more uncertain one item is than another (ranks would not, and
        # then density swamps uncertainty: near-duplicates of dense regions win). The floor keeps
        # the least uncertain item's weight above zero.
        uncertainty = 0.01 + 0.99 * normalize(self.scorer.score(state, ids), "minmax")
        return uncertainty * density**self.beta


class TextLengthCost:
    """Expected cost of labelling each item, proportional to its length in (approximate) tokens."""

    def __init__(self, per_token: float = 1.0, fixed: float = 0.0, chars_per_token: float = 4.0) -> None:
        self.per_token = per_token
        self.fixed = fixed
        self.chars_per_token = chars_per_token

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        if state.pool is None:
            raise ConfigError("TextLengthCost needs PoolState.pool to read texts.")
        lengths = np.array([len(t) for t in state.pool.texts(ids)], dtype=np.float64)
        return self.fixed + self.per_token * lengths / self.chars_per_token


class CostAware:
    """A scorer: normalised ``scorer`` per unit of expected cost (``cost`` is a scorer of costs)."""

    def __init__(self, scorer: Scorer, cost: Scorer) -> None:
        self.scorer = scorer
        self.cost = cost

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        costs = np.asarray(self.cost.score(state, ids), dtype=np.float64)
        if (costs <= 0).any():
            raise ConfigError("CostAware needs positive expected costs.")
        # Offset by a small constant so the least useful item still beats nothing on a tie of zero.
        return (normalize(self.scorer.score(state, ids), "minmax") + 1e-3) / costs
