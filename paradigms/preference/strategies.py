"""Which pairs to label: acquisition over prompts and pairs, on curate's acquisition protocol.

Every learner of this paradigm exposes, through the loop's ``extra_arrays`` seam, per-pair arrays
indexed by pool id:

* ``margin`` — the learner's reward margin ``r(a) − r(b)``: the DPO implicit-reward margin for
  :class:`~curate.paradigms.preference.dpo.DPOLearner`, the reward model's for the others;
* ``committee_probs`` — ``(M, size, 2)`` P(a ≻ b) of an ensemble (bootstrap reward models);
* ``prompt_entropy`` — the policy's predictive entropy of each pair's prompt.

The strategies (higher score = acquire first, as everywhere in curate):

* ``margin``: small |margin| first — the pairs the learner cannot call;
* ``disagreement``: the spread of P(a ≻ b) across the ensemble;
* ``entropy_certainty``: Muldrew et al. 2024 (APL): the prompts the policy is least sure how to
  answer (high predictive entropy), then among them the pairs the learner is *most* sure about
  (large |margin|), whose labels correct the learner most when it is wrong;
* ``prompt_diversity``: k-center on the shared index (built over prompt embeddings);
* ``margin_diverse``: the most uncertain pairs, spread out by k-center;
* ``random``: the baseline.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from curate.acquire.base import PoolState, Selection, check_budget, top_k
from curate.acquire.strategies import TopK
from curate.acquire.wrappers import TopThenDiverse
from curate.errors import ConfigError, did_you_mean

__all__ = ["ALIASES", "SPECS", "STRATEGIES", "EnsembleDisagreement", "EntropyCertainty", "MarginUncertainty",
           "make_preference_strategy"]


class MarginUncertainty:
    """A scorer: ``−|margin|``, so the pairs whose reward margin is closest to zero come first."""

    def __init__(self, array: str = "margin") -> None:
        self.array = array

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        return -np.abs(state.require_array(self.array, "MarginUncertainty").astype(np.float64)[ids])


class EnsembleDisagreement:
    """A scorer: the standard deviation of P(a ≻ b) across ensemble members, from
    ``arrays['committee_probs']`` of shape ``(M, size, 2)``."""

    def __init__(self, array: str = "committee_probs") -> None:
        self.array = array

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        members = state.require_array(self.array, "EnsembleDisagreement")
        if members.ndim != 3 or members.shape[0] < 2:
            raise ConfigError(f"EnsembleDisagreement needs arrays['{self.array}'] of shape (M >= 2, size, 2); "
                              f"got {members.shape}.")
        return members[:, ids, 0].astype(np.float64).std(axis=0)


class EntropyCertainty:
    """Muldrew et al. 2024: shortlist the ``shortlist × budget`` candidates whose prompt has the
    highest predictive entropy under the policy, then take the ``budget`` of them with the largest
    |margin| (preference certainty).

    Args:
        shortlist: size of the entropy shortlist as a multiple of the budget (>= 1).
        entropy / margin: the array names to read.
    """

    def __init__(self, shortlist: float = 4.0, *, entropy: str = "prompt_entropy", margin: str = "margin",
                 allow_fewer: bool = False) -> None:
        if not (isinstance(shortlist, (int, float)) and shortlist >= 1):
            raise ConfigError(f"The 'shortlist' parameter of EntropyCertainty must be a number >= 1. Got {shortlist!r} instead.")
        self.shortlist = shortlist
        self.entropy = entropy
        self.margin = margin
        self.allow_fewer = allow_fewer

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        k = check_budget(state, budget, allow_fewer=self.allow_fewer)
        cands = state.candidates
        entropy = state.require_array(self.entropy, "EntropyCertainty").astype(np.float64)[cands]
        margin = state.require_array(self.margin, "EntropyCertainty").astype(np.float64)
        m = min(len(cands), math.ceil(self.shortlist * k))
        positions = top_k(entropy, m, rng)
        short = cands[positions]
        certainty = np.abs(margin[short])
        order = top_k(certainty, k, rng)
        info = {"shortlist": int(m), "mean_entropy_shortlist": float(np.mean(entropy[positions])) if m else 0.0}
        return Selection(short[order], certainty[order].astype(np.float32), info)


def _spec(name: str, build, needs: str, summary: str):
    from curate.acquire.registry import StrategySpec

    return StrategySpec(name, build, frozenset(needs.split()), summary, owner="prefs")


# The paradigm's strategies in the one registry (curate.acquire.registry), added when it is loaded.
SPECS = (
    _spec("reward_margin", lambda ctx, array="margin": TopK(MarginUncertainty(array)), "arrays:margin",
          "pairs whose reward margin is closest to zero"),
    _spec("ensemble_disagreement", lambda ctx, array="committee_probs": TopK(EnsembleDisagreement(array)),
          "arrays:committee_probs", "spread of P(a > b) across a reward-model ensemble"),
    _spec("entropy_certainty", lambda ctx, **p: EntropyCertainty(**p), "arrays:prompt_entropy arrays:margin",
          "uncertain prompts, then the pairs the learner is surest about (Muldrew et al. 2024)"),
    _spec("reward_margin_kcenter", lambda ctx, m=None: TopThenDiverse(MarginUncertainty(), m), "arrays:margin index",
          "the most uncertain pairs, spread out by k-center"),
)

# A prefs recipe's names: its own short ones, and registry names they stand for.
ALIASES = {"margin": "reward_margin", "disagreement": "ensemble_disagreement", "prompt_diversity": "kcenter",
           "margin_diverse": "reward_margin_kcenter"}
STRATEGIES = ("random", "margin", "disagreement", "entropy_certainty", "prompt_diversity", "margin_diverse")


def make_preference_strategy(name: str, *, available=None, **params: Any):
    """Build a strategy by a prefs recipe's name, e.g. ``make_preference_strategy("entropy_certainty",
    shortlist=4)``; with ``available`` (:func:`curate.build.available_for`) refused first when the
    run cannot feed it."""
    from curate.acquire.registry import REGISTRY

    REGISTRY.add_all(SPECS)  # as the plugin loader does; adding them again changes nothing
    if name not in REGISTRY and name not in ALIASES:
        raise ConfigError(f"Unknown preference strategy '{name}'. Known: {', '.join(STRATEGIES)}."
                          f"{did_you_mean(name, STRATEGIES)}")
    return REGISTRY.build(name, params, available=available, aliases=ALIASES, who="a prefs run")
