"""The acquisition seam: one state in, one :class:`Selection` out.

A strategy sees a :class:`PoolState` — the pool size, which ids are labelled, which ids it may
choose among (``candidates``, the unlabelled ones unless a wrapper narrowed them), the shared index,
and the current model's predictions — and returns up to ``budget`` candidate ids in priority order.
Higher score = acquire first; there are no ``reverse`` flags. Strategies never change the state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from curate.errors import ConfigError

__all__ = ["PoolState", "Scorer", "Selection", "Strategy", "check_budget", "top_k"]


@dataclass(frozen=True)
class Selection:
    """Pool ids in priority order (unique, all candidates), their scores, and diagnostics."""

    ids: np.ndarray                      # int64
    scores: np.ndarray | None = None     # float32, aligned with ids
    info: Mapping[str, Any] = field(default_factory=dict)  # diagnostics, never control flow

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class PoolState:
    """What a strategy may look at. Arrays indexed by pool id (row i = id i) cover the whole pool.

    Args:
        size: number of items in the pool (ids are ``0 .. size-1``).
        labeled: ids already labelled.
        labels: labels aligned with ``labeled`` (for strategies that use them), or None.
        candidates: ids the strategy may choose among; default = every unlabelled id.
        index: the shared :class:`~curate.index.EmbeddingIndex` (diversity strategies need it).
        probs: ``(size, C)`` class probabilities of the current model, or None.
        arrays: other per-item predictions by name, e.g. ``"mc_probs"`` ``(T, size, C)`` for BALD,
            ``"committee_probs"`` ``(M, size, C)``, ``"token_entropy"`` ``(size,)``, ``"features"``.
        pool: the :class:`~curate.pool.Pool` itself, for strategies that read text (LLM selection).
    """

    size: int
    labeled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    labels: Sequence[Any] | None = None
    candidates: np.ndarray | None = None
    index: Any = None
    probs: np.ndarray | None = None
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    pool: Any = None

    def __post_init__(self) -> None:
        labeled = np.asarray(self.labeled, dtype=np.int64)
        object.__setattr__(self, "labeled", labeled)
        if labeled.size and (labeled.min() < 0 or labeled.max() >= self.size):
            raise ConfigError(f"labeled ids must lie in 0..{self.size - 1}; got {labeled.min()}..{labeled.max()}.")
        if self.candidates is None:
            mask = np.ones(self.size, dtype=bool)
            mask[labeled] = False
            object.__setattr__(self, "candidates", np.flatnonzero(mask).astype(np.int64))
        else:
            cands = np.asarray(self.candidates, dtype=np.int64)
            if np.isin(cands, labeled).any():
                raise ConfigError("candidates must not include labelled ids.")
            object.__setattr__(self, "candidates", cands)
        if self.probs is not None and len(self.probs) != self.size:
            raise ConfigError(f"probs must have one row per pool item ({self.size}); got {len(self.probs)}.")

    @classmethod
    def of(cls, pool, **kwargs) -> PoolState:
        """A state for a :class:`~curate.pool.Pool`."""
        return cls(size=len(pool), pool=pool, **kwargs)

    def narrowed(self, candidates: np.ndarray) -> PoolState:
        """The same state with fewer candidates (wrappers use this)."""
        return replace(self, candidates=np.asarray(candidates, dtype=np.int64))

    def require_probs(self, who: str) -> np.ndarray:
        if self.probs is None:
            raise ConfigError(f"{who} needs the model's class probabilities (PoolState.probs); none were given.")
        return np.asarray(self.probs)

    def require_array(self, name: str, who: str) -> np.ndarray:
        if name not in self.arrays:
            raise ConfigError(f"{who} needs PoolState.arrays['{name}']; available: {sorted(self.arrays) or 'none'}.")
        return np.asarray(self.arrays[name])

    def require_index(self, who: str):
        if self.index is None:
            raise ConfigError(f"{who} needs the shared embedding index (PoolState.index); none was given.")
        return self.index


@runtime_checkable
class Scorer(Protocol):
    """Pure: the same state and ids give the same scores. Higher = acquire first."""

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Strategy(Protocol):
    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection: ...


def check_budget(state: PoolState, budget: int, *, allow_fewer: bool = False) -> int:
    """The number of ids to return: ``budget``, or all that is left when ``allow_fewer``."""
    if not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ConfigError(f"The 'budget' parameter must be a non-negative integer. Got {budget!r} instead.")
    left = len(state.candidates)
    if left == 0 and budget > 0:
        raise ConfigError("No unlabelled candidates are left in the pool: nothing to select.")
    if budget > left:
        if not allow_fewer:
            raise ConfigError(f"Asked for {budget} items but only {left} unlabelled candidates are left; "
                              "lower the budget or pass allow_fewer=True to take them all.")
        return left
    return int(budget)


def top_k(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first; ties broken at random by ``rng``.

    ``argpartition`` finds the top k in O(n) and only those k are sorted. Ties at the cut are shared
    out by ``rng`` rather than always going to the lowest positions. NaN scores rank last.
    """
    s = np.asarray(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    n = len(s)
    k = min(int(k), n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        # Partition of -s at k puts the k largest first and the (k+1)-th largest at position k;
        # NaN compares as largest in -s, so it stays out. Only when the (k+1)-th ties with the
        # k-th is a pass over all scores needed, to draw among every tied item.
        split = np.argpartition(-s, k)
        part, after = split[:k], s[split[k]]
        cut = s[part].min()
        if after == cut:
            keep = part[s[part] > cut]
            tied = rng.permutation(np.flatnonzero(s == cut))[: k - len(keep)]
            part = np.concatenate([keep, tied])
    else:
        part = np.arange(n)
    vals = s[part]
    vals = np.where(np.isnan(vals), -np.inf, vals)
    order = np.lexsort((rng.random(len(part)), -vals))
    return part[order].astype(np.int64)
