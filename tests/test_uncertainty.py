"""Uncertainty measures against hand-computed values, and the wrappers' behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from curate.acquire import (
    ClassUncertainty,
    Combine,
    CostAware,
    DensityWeighted,
    PoolState,
    Random,
    Subsample,
    TopK,
    TopThenDiverse,
    top_k,
)
from curate.acquire.uncertainty import bald, entropy, kl_disagreement, least_confidence, margin, vote_entropy
from curate.errors import ConfigError
from curate.index import EmbeddingIndex

P = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])


def test_measures_by_hand():
    np.testing.assert_allclose(least_confidence(P), [0.1, 0.6, 2 / 3, 0.5])
    np.testing.assert_allclose(margin(P), [-0.85, -0.05, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(entropy(P)[2], np.log(3))
    np.testing.assert_allclose(entropy(P)[3], np.log(2))
    # Ranking: the uniform row is the most uncertain by every measure.
    for f in (least_confidence, margin, entropy):
        assert np.argmax(f(P)) == 2


def test_bald_and_committee():
    agree = np.array([[[0.5, 0.5]]] * 4)                  # every sample says 50/50: aleatoric, BALD 0
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]] * 2)  # confident samples that disagree: BALD log 2
    np.testing.assert_allclose(bald(agree), [0.0], atol=1e-9)
    np.testing.assert_allclose(bald(disagree), [np.log(2)], atol=1e-6)
    np.testing.assert_allclose(vote_entropy(disagree), [np.log(2)], atol=1e-9)
    np.testing.assert_allclose(vote_entropy(agree), [0.0], atol=1e-9)
    assert kl_disagreement(disagree)[0] > kl_disagreement(agree)[0] + 0.5
    with pytest.raises(ConfigError, match=r"\(T, n, C\)"):
        bald(P)


def test_top_k_breaks_ties_by_rng_and_is_exact():
    scores = np.array([1.0, 3.0, 3.0, 3.0, 2.0, np.nan])
    picks = {tuple(top_k(scores, 2, np.random.default_rng(s))) for s in range(30)}
    assert all(set(p) <= {1, 2, 3} for p in picks) and len(picks) > 1  # ties shared out, not always lowest ids
    assert top_k(scores, 5, np.random.default_rng(0))[-1] == 0  # NaN ranks last, 1.0 before it
    rng = np.random.default_rng(0)
    s = rng.random(10_000)
    np.testing.assert_array_equal(top_k(s, 50, rng), np.argsort(-s)[:50])


def test_topk_margin_picks_the_planted_ties():
    probs = np.array([[0.99, 0.01], [0.5, 0.5], [0.8, 0.2], [0.5, 0.5], [0.6, 0.4]])
    state = PoolState(size=5, probs=probs)
    sel = TopK(ClassUncertainty("margin")).select(state, 2, rng=np.random.default_rng(0))
    assert set(sel.ids.tolist()) == {1, 3}
    assert np.allclose(sel.scores, 0.0)


def test_random_allow_fewer():
    state = PoolState(size=5, labeled=np.array([0, 1]))
    sel = Random(allow_fewer=True).select(state, 10, rng=np.random.default_rng(0))
    assert sorted(sel.ids.tolist()) == [2, 3, 4]


def test_subsample_limits_what_inner_sees():
    state = PoolState(size=1000, probs=np.tile([0.5, 0.5], (1000, 1)))
    seen = []

    class Spy:
        def select(self, s, budget, *, rng):
            seen.append(s.candidates)
            return Random().select(s, budget, rng=rng)

    sel = Subsample(Spy(), size=50).select(state, 5, rng=np.random.default_rng(0))
    assert len(seen[0]) == 50 and np.isin(sel.ids, seen[0]).all()


def _line_state():
    # Two tight clusters; the most uncertain items all sit in cluster A.
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0]) + 0.01 * rng.normal(size=(20, 2))
    b = np.array([0.0, 1.0]) + 0.01 * rng.normal(size=(20, 2))
    index = EmbeddingIndex.from_vectors(np.vstack([a, b]), kind="flat")
    unc = np.r_[np.linspace(0.49, 0.45, 20), np.linspace(0.44, 0.40, 20)]
    probs = np.c_[unc, 1 - unc]
    return PoolState(size=40, index=index, probs=probs)


def test_top_then_diverse_spreads_over_clusters():
    state = _line_state()
    plain = TopK(ClassUncertainty("margin")).select(state, 2, rng=np.random.default_rng(0)).ids
    assert (plain < 20).all()
    diverse = TopThenDiverse(ClassUncertainty("margin"), m=40).select(state, 2, rng=np.random.default_rng(0)).ids
    assert (diverse < 20).sum() == 1  # one from each cluster


def test_combine_weights_and_cost_aware():
    state = PoolState(size=4, probs=np.array([[0.5, 0.5], [0.6, 0.4], [0.9, 0.1], [0.99, 0.01]]))

    class Fixed:
        def __init__(self, v):
            self.v = np.asarray(v, dtype=float)

        def score(self, s, ids):
            return self.v[ids]

    ids = state.candidates
    only_second = Combine([ClassUncertainty("margin"), Fixed([0, 1, 2, 3])], weights=[0.0, 1.0]).score(state, ids)
    assert np.argmax(only_second) == 3
    cheap_last = CostAware(ClassUncertainty("margin"), Fixed([100.0, 1.0, 1.0, 1.0])).score(state, ids)
    assert np.argmax(cheap_last) == 1  # the most uncertain item costs 100x: the next one wins
    with pytest.raises(ConfigError, match="positive expected costs"):
        CostAware(ClassUncertainty("margin"), Fixed([0, 1, 1, 1])).score(state, ids)


def test_density_weighting_prefers_the_dense_region():
    rng = np.random.default_rng(1)
    dense = np.array([1.0, 0.0, 0.0]) + 0.02 * rng.normal(size=(30, 3))
    outliers = rng.normal(size=(10, 3))
    outliers[:, 0] = -np.abs(outliers[:, 0]) - 0.5  # scattered, and away from the dense region
    confident = rng.normal(size=(20, 3))
    index = EmbeddingIndex.from_vectors(np.vstack([dense, outliers, confident]), kind="flat")
    probs = np.tile([0.99, 0.01], (60, 1))  # confident items widen the range of uncertainty
    probs[:30] = [0.52, 0.48]               # the dense items: almost as uncertain as it gets
    probs[30:40] = [0.5, 0.5]               # the outliers: the most uncertain
    state = PoolState(size=60, index=index, probs=probs)
    plain = TopK(ClassUncertainty("entropy")).select(state, 5, rng=np.random.default_rng(0)).ids
    weighted = TopK(DensityWeighted(ClassUncertainty("entropy"), beta=3)).select(state, 5, rng=np.random.default_rng(0)).ids
    assert ((plain >= 30) & (plain < 40)).all() and (weighted < 30).all()
    # Confident items stay last however dense they are: uncertainty still counts.
    scores = DensityWeighted(ClassUncertainty("entropy"), beta=3).score(state, state.candidates)
    assert scores[40:].max() < scores[:30].min()
