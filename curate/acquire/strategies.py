"""Strategies that rank by a score, and the random baseline."""

from __future__ import annotations

import numpy as np

from curate.acquire.base import PoolState, Scorer, Selection, check_budget, top_k

__all__ = ["Random", "TopK"]


class TopK:
    """The ``budget`` candidates with the highest ``scorer`` scores (ties broken by ``rng``)."""

    def __init__(self, scorer: Scorer, *, allow_fewer: bool = False) -> None:
        self.scorer = scorer
        self.allow_fewer = allow_fewer

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        k = check_budget(state, budget, allow_fewer=self.allow_fewer)
        cands = state.candidates
        scores = np.asarray(self.scorer.score(state, cands), dtype=np.float64)
        order = top_k(scores, k, rng)
        return Selection(cands[order], scores[order].astype(np.float32),
                         {"scorer": type(self.scorer).__name__, "mean_score": float(np.nanmean(scores)) if len(scores) else 0.0})


class Random:
    """Uniformly random candidates: the baseline every strategy is compared against."""

    def __init__(self, *, allow_fewer: bool = False) -> None:
        self.allow_fewer = allow_fewer

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        k = check_budget(state, budget, allow_fewer=self.allow_fewer)
        return Selection(rng.choice(state.candidates, size=k, replace=False).astype(np.int64))
