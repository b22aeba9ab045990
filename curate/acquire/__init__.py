"""Acquisition: which items to label next.

Every strategy has one method, ``select(state, budget, *, rng) -> Selection``; scorers have
``score(state, ids)``. ``make_strategy(name, **params)`` builds the named ones from the one registry
(:mod:`curate.acquire.registry`: every paradigm's strategies, with what each needs); classes can be
composed directly for anything else.
"""

from __future__ import annotations

from typing import Any

from curate.acquire.base import PoolState, Scorer, Selection, Strategy, check_budget, top_k
from curate.acquire.registry import REGISTRY, StrategyContext, StrategyRegistry, StrategySpec, check_needs
from curate.acquire.strategies import Random, TopK
from curate.acquire.uncertainty import BALD, ArrayScore, ClassUncertainty, Committee
from curate.acquire.wrappers import (
    Combine,
    CostAware,
    DensityWeighted,
    Subsample,
    TextLengthCost,
    TopThenDiverse,
)

__all__ = [
    "BALD", "REGISTRY", "ArrayScore", "ClassUncertainty", "Combine", "Committee", "CostAware", "DensityWeighted",
    "PoolState", "Random", "Scorer", "Selection", "Strategy", "StrategyContext", "StrategyRegistry", "StrategySpec",
    "Subsample", "TextLengthCost", "TopK", "TopThenDiverse", "check_budget", "check_needs", "make_strategy", "top_k",
]


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build a registered strategy, e.g. ``make_strategy("entropy")`` or ``make_strategy("votek", k=10)``.

    Strategies that score with an LM take it as ``backend=``; those that read a response learner
    (``answer_*``) are built by a paradigm through :meth:`StrategyRegistry.build` with its context."""
    return REGISTRY.build(name, params)
