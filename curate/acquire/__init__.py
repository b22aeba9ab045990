"""Acquisition: which items to label next.

Every strategy has one method, ``select(state, budget, *, rng) -> Selection``; scorers have
``score(state, ids)``. ``make_strategy(name, **params)`` builds the named ones (an explicit table,
no import-time registration); classes can be composed directly for anything else.
"""

from __future__ import annotations

from typing import Any

from curate.acquire.base import PoolState, Scorer, Selection, Strategy, check_budget, top_k
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
from curate.errors import ConfigError, did_you_mean

__all__ = [
    "BALD", "ArrayScore", "ClassUncertainty", "Combine", "Committee", "CostAware", "DensityWeighted",
    "PoolState", "Random", "STRATEGIES", "Scorer", "Selection", "Strategy", "Subsample", "TextLengthCost",
    "TopK", "TopThenDiverse", "check_budget", "make_strategy", "top_k",
]


def _diversity(name: str):
    from curate.acquire import diversity

    return getattr(diversity, name)


def _llm(name: str):
    from curate.acquire import llm

    return getattr(llm, name)


# name -> (factory, what it needs). Factories take the strategy's parameters as keywords.
STRATEGIES: dict[str, tuple[Any, str]] = {
    "random": (lambda: Random(), "nothing"),
    "least_confidence": (lambda: TopK(ClassUncertainty("least_confidence")), "probs"),
    "margin": (lambda: TopK(ClassUncertainty("margin")), "probs"),
    "entropy": (lambda: TopK(ClassUncertainty("entropy")), "probs"),
    "bald": (lambda: TopK(BALD()), "arrays['mc_probs']"),
    "vote_entropy": (lambda: TopK(Committee("vote_entropy")), "arrays['committee_probs']"),
    "kl_disagreement": (lambda: TopK(Committee("kl")), "arrays['committee_probs']"),
    "token_entropy": (lambda: TopK(ArrayScore("token_entropy")), "arrays['token_entropy']"),
    "perplexity": (lambda: TopK(ArrayScore("perplexity")), "arrays['perplexity']"),
    "density_entropy": (lambda beta=1.0, k=10: TopK(DensityWeighted(ClassUncertainty("entropy"), beta, k)),
                        "probs, index"),
    "entropy_kcenter": (lambda m=None: TopThenDiverse(ClassUncertainty("entropy"), m), "probs, index"),
    "kcenter": (lambda: _diversity("KCenterGreedy")(), "index"),
    "kmeans": (lambda **p: _diversity("KMeansCentroids")(**p), "index"),
    "votek": (lambda **p: _diversity("VoteK")(**p), "index"),
    "badge": (lambda: _diversity("BADGE")(), "probs, index"),
    "ask_llm": (lambda **p: TopK(_llm("AskLLM")(**p)), "pool, backend"),
    "select_llm": (lambda **p: _llm("SelectLLM")(**p), "pool, index, backend"),
    "ifd": (lambda **p: TopK(_llm("IFD")(**p)), "pool with prompt/response, backend"),
}


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build a named strategy, e.g. ``make_strategy("entropy")`` or ``make_strategy("votek", k=10)``."""
    if name not in STRATEGIES:
        raise ConfigError(f"Unknown strategy '{name}'. Known: {', '.join(STRATEGIES)}.{did_you_mean(name, STRATEGIES)}")
    factory, _ = STRATEGIES[name]
    try:
        return factory(**params)
    except TypeError as err:
        raise ConfigError(f"Bad parameters for strategy '{name}': {err}.") from None
