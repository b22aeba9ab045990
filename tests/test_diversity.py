"""Diversity strategies against slow, obviously correct references on data with known geometry."""

from __future__ import annotations

import numpy as np
import pytest

from curate.acquire import PoolState, make_strategy
from curate.acquire import diversity as div
from curate.acquire.diversity import BADGE, KCenterGreedy, KMeansCentroids, VoteK, gradient_sq_distances
from curate.errors import ConfigError, DataError
from curate.index import EmbeddingIndex


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gaussian(n: int, d: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, d)))


def planted(sizes: list[int], d: int = 32, noise: float = 0.02, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tight clusters around random unit centers; returns (vectors, cluster of each row), rows shuffled."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((len(sizes), d)))
    label = np.repeat(np.arange(len(sizes)), sizes)
    x = unit(centers[label] + noise * rng.standard_normal((len(label), d)))
    perm = rng.permutation(len(label))
    return x[perm], label[perm]


def flat(x: np.ndarray, ids=None) -> EmbeddingIndex:
    return EmbeddingIndex.from_vectors(x, ids, kind="flat")


# ---------------------------------------------------------------------------------------------- references


def kcenter_reference(x: np.ndarray, cand: np.ndarray, centers: list[int], k: int) -> tuple[list[int], list[float]]:
    """Greedy k-center on the full float64 distance matrix; rows are positions, ties to the lowest."""
    x = x.astype(np.float64)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    mind = dist[:, centers].min(axis=1) if centers else np.full(len(x), np.inf)
    picks, scores = [], []
    alive = np.zeros(len(x), dtype=bool)
    alive[cand] = True
    for _ in range(k):
        pick = int(np.argmax(np.where(alive, mind, -np.inf)))
        picks.append(pick)
        scores.append(float(mind[pick]))
        alive[pick] = False
        mind = np.minimum(mind, dist[:, pick])
    return picks, scores


def votek_reference(x: np.ndarray, k: int, rho: float, budget: int, confidence=None,
                    second: int = 0) -> tuple[list[int], list[float]]:
    """Vote-k straight from its definition, every score recomputed from scratch at every step."""
    n = len(x)
    sims = x.astype(np.float64) @ x.astype(np.float64).T
    np.fill_diagonal(sims, -np.inf)
    votes_for = [set(np.argsort(-sims[v])[:k].tolist()) for v in range(n)]  # v votes for these
    selected: list[int] = []

    def score(u: int) -> float:
        total = 0.0
        for v in range(n):
            if u in votes_for[v] and v not in selected:
                total += rho ** -len(votes_for[v] & set(selected))
        return total

    def best(rows) -> int:
        s = {u: score(u) for u in rows if u not in selected}
        top = max(s.values())
        return min(u for u in s if s[u] >= top - 1e-12)  # ties (up to float rounding) to the lowest row

    picks, scores = [], []
    for _ in range(budget - second):
        u = best(range(n))
        picks.append(u)
        scores.append(score(u))
        selected.append(u)
    if second:
        left = sorted((u for u in range(n) if u not in selected), key=lambda u: (confidence[u], u))
        left = left[: max(second, int(0.9 * len(left)))]
        for bucket in np.array_split(np.array(left), second):
            u = best(bucket.tolist())
            picks.append(u)
            scores.append(score(u))
            selected.append(u)
    return picks, scores


def materialised_gradients(probs: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The (n, C*d) BADGE embeddings, built outright: row x = (p_x - onehot(argmax p_x)) outer h_x."""
    p = probs.astype(np.float64)
    onehot = np.eye(p.shape[1])[p.argmax(axis=1)]
    return ((p - onehot)[:, :, None] * h.astype(np.float64)[:, None, :]).reshape(len(p), -1)


def kmeanspp_reference(g: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k-means++ on explicit vectors: first the largest norm, then draws proportional to D^2."""
    d2 = ((g[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
    picks = [int(np.argmax((g * g).sum(axis=1)))]
    while len(picks) < k:
        w = d2[:, picks].min(axis=1)
        w[picks] = 0.0
        cum = np.cumsum(w)
        picks.append(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")))
    return picks


# ---------------------------------------------------------------------------------------------- k-center


@pytest.mark.parametrize("reuse_above", [0.0, 2.0])  # whole index matrix masked / candidate rows copied
def test_kcenter_matches_bruteforce_from_the_same_start(reuse_above):
    x = gaussian(150, 12, seed=1)
    state = PoolState(size=150, index=flat(x))
    sel = KCenterGreedy(reuse_above=reuse_above).select(state, 25, rng=np.random.default_rng(3))
    picks, scores = kcenter_reference(x, np.arange(150), [int(sel.ids[0])], 24)
    assert sel.ids[1:].tolist() == picks
    np.testing.assert_allclose(sel.scores[1:], scores, rtol=1e-5, atol=1e-6)
    assert np.isinf(sel.scores[0])
    again = KCenterGreedy(reuse_above=reuse_above).select(state, 25, rng=np.random.default_rng(3))
    assert again.ids.tolist() == sel.ids.tolist()


@pytest.mark.parametrize("reuse_above", [0.0, 2.0])
def test_kcenter_starts_from_labelled_centers_in_chunks(reuse_above, monkeypatch):
    monkeypatch.setattr(div, "_BLOCK_ELEMENTS", 64)  # many row blocks as well as many center chunks
    x = gaussian(200, 10, seed=2)
    labeled = np.array([3, 17, 40, 41, 99, 150, 151, 152, 190, 7, 8])
    state = PoolState(size=200, index=flat(x), labeled=labeled)
    sel = KCenterGreedy(chunk=3, reuse_above=reuse_above).select(state, 30, rng=np.random.default_rng(0))
    picks, scores = kcenter_reference(x, state.candidates, labeled.tolist(), 30)
    assert sel.ids.tolist() == picks
    np.testing.assert_allclose(sel.scores, scores, rtol=1e-5, atol=1e-6)
    assert not np.isin(sel.ids, labeled).any()


def test_kcenter_covers_each_planted_cluster_first():
    x, label = planted([20, 20, 20, 20, 20])
    sel = make_strategy("kcenter").select(PoolState(size=100, index=flat(x)), 5, rng=np.random.default_rng(0))
    assert sorted(label[sel.ids].tolist()) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- k-means


def test_kmeans_picks_the_item_nearest_each_planted_mean_largest_cluster_first():
    sizes = [12, 50, 25, 40, 18, 33]
    x, label = planted(sizes, seed=4)
    state = PoolState(size=len(x), index=flat(x))
    sel = KMeansCentroids().select(state, 6, rng=np.random.default_rng(0))
    order = np.argsort(sizes)[::-1]
    assert label[sel.ids].tolist() == order.tolist()
    assert sel.scores.tolist() == sorted(sizes, reverse=True)
    for cluster, item in zip(order, sel.ids, strict=True):
        members = np.flatnonzero(label == cluster)
        mean = x[members].astype(np.float64).mean(axis=0)
        assert item == members[np.argmin(((x[members] - mean) ** 2).sum(axis=1))]
    again = KMeansCentroids().select(state, 6, rng=np.random.default_rng(0))
    assert again.ids.tolist() == sel.ids.tolist()


def test_kmeans_picks_are_unique_when_centroids_crowd():
    x = np.repeat(gaussian(4, 8, seed=5), 10, axis=0) + 1e-4 * np.random.default_rng(0).standard_normal((40, 8))
    x = unit(x)  # 4 tight groups but 12 centroids: several centroids share nearest items
    sel = KMeansCentroids().select(PoolState(size=40, index=flat(x)), 12, rng=np.random.default_rng(1))
    assert len(set(sel.ids.tolist())) == 12


# ---------------------------------------------------------------------------------------------- vote-k


@pytest.mark.parametrize(("k", "rho"), [(5, 10.0), (3, 2.0)])
def test_votek_matches_direct_recomputation(k, rho):
    x = gaussian(80, 6, seed=6)
    sel = VoteK(k=k, rho=rho).select(PoolState(size=80, index=flat(x)), 15, rng=np.random.default_rng(0))
    picks, scores = votek_reference(x, k, rho, 15)
    assert sel.ids.tolist() == picks
    np.testing.assert_allclose(sel.scores, scores, rtol=1e-6)  # float32 scores


def test_votek_confidence_stage_matches_direct_recomputation():
    x = gaussian(70, 6, seed=7)
    probs = np.random.default_rng(8).dirichlet(np.ones(3), size=70)
    state = PoolState(size=70, index=flat(x), probs=probs)
    sel = VoteK(k=4, confidence_fraction=0.6).select(state, 10, rng=np.random.default_rng(0))
    picks, scores = votek_reference(x, 4, 10.0, 10, confidence=probs.max(axis=1), second=6)
    assert sel.ids.tolist() == picks
    np.testing.assert_allclose(sel.scores, scores, rtol=1e-6)  # float32 scores
    assert sel.info["confidence_stage"] == 6
    # Without probabilities the whole budget comes from the graph.
    plain = VoteK(k=4, confidence_fraction=0.6).select(PoolState(size=70, index=flat(x)), 10,
                                                       rng=np.random.default_rng(0))
    assert plain.ids.tolist() == votek_reference(x, 4, 10.0, 10)[0]


@pytest.mark.parametrize(("n", "n_cand", "k", "exact"), [(60, 55, 4, False), (60, 12, 4, False), (1000, 6, 2, True)])
def test_votek_graph_is_restricted_to_candidates(n, n_cand, k, exact, monkeypatch):
    """Few non-candidates: a wider index search; candidates a small share: exact search among them."""
    calls = []
    real = div._exact_knn
    monkeypatch.setattr(div, "_exact_knn", lambda *a: calls.append(1) or real(*a))
    x = gaussian(n, 6, seed=9)
    cand = np.sort(np.random.default_rng(1).choice(n, size=n_cand, replace=False))
    state = PoolState(size=n, index=flat(x), candidates=cand)
    sel = VoteK(k=k).select(state, 6, rng=np.random.default_rng(0))
    picks, _ = votek_reference(x[cand], k, 10.0, 6)
    assert sel.ids.tolist() == cand[picks].tolist()
    assert bool(calls) == exact


# ---------------------------------------------------------------------------------------------- BADGE


def test_badge_distances_equal_the_materialised_embeddings():
    rng = np.random.default_rng(10)
    probs = rng.dirichlet(np.ones(5), size=40)
    h = rng.standard_normal((40, 7))
    g = materialised_gradients(probs, h)
    rows = np.array([0, 5, 39])
    want = ((g[:, None, :] - g[None, rows, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(gradient_sq_distances(probs, h, rows), want, rtol=1e-10, atol=1e-12)
    # The predicted class carries the -1: a = p - onehot(argmax p), so [0.9, 0.1] -> [-0.1, 0.1] and
    # [0.5, 0.5] -> [-0.5, 0.5] (ties: the first class); with h = ones(3), ||g_0 - g_1||^2 = 0.32 * 3.
    two = gradient_sq_distances(np.array([[0.9, 0.1], [0.5, 0.5]]), np.ones((2, 3)), [1])
    assert two[0, 0] == pytest.approx(((np.array([-0.1, 0.1]) - np.array([-0.5, 0.5])) ** 2).sum() * 3)


@pytest.mark.parametrize("source", ["features", "index"])
def test_badge_equals_kmeanspp_on_materialised_embeddings(source):
    rng = np.random.default_rng(11)
    n, d, c = 90, 6, 4
    x = gaussian(n, d, seed=12)
    probs = rng.dirichlet(0.5 * np.ones(c), size=n)
    labeled = np.array([2, 50])
    if source == "features":
        features = rng.standard_normal((n, d))
        state = PoolState(size=n, labeled=labeled, probs=probs, arrays={"features": features})
        h = features
    else:
        state = PoolState(size=n, labeled=labeled, probs=probs, index=flat(x))
        h = x
    before = probs.copy()
    sel = BADGE().select(state, 12, rng=np.random.default_rng(5))
    cand = state.candidates
    want = kmeanspp_reference(materialised_gradients(probs[cand], h[cand]), 12, np.random.default_rng(5))
    assert sel.ids.tolist() == cand[want].tolist()
    np.testing.assert_array_equal(state.probs, before)


# ---------------------------------------------------------------------------------------------- the contract


STRATEGIES = {
    "kcenter": lambda: KCenterGreedy(),
    "kmeans": lambda: KMeansCentroids(n_iter=5),
    "votek": lambda: VoteK(k=4),
    "badge": lambda: BADGE(),
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_ids_are_pool_ids_when_index_ids_are_not_positions(name):
    n = 60
    x = gaussian(n, 8, seed=13)
    index_ids = np.arange(n) * 3 + 5
    labeled = index_ids[[0, 7, 20]]
    cand = np.setdiff1d(index_ids, labeled)
    probs = np.random.default_rng(14).dirichlet(np.ones(3), size=3 * n + 5)
    state = PoolState(size=3 * n + 5, labeled=labeled, candidates=cand, index=flat(x, index_ids), probs=probs)
    sel = STRATEGIES[name]().select(state, 9, rng=np.random.default_rng(0))
    assert sel.ids.dtype == np.int64 and len(sel.ids) == 9 and len(set(sel.ids.tolist())) == 9
    assert np.isin(sel.ids, cand).all()
    assert sel.scores is not None and len(sel.scores) == 9
    again = STRATEGIES[name]().select(state, 9, rng=np.random.default_rng(0))
    assert again.ids.tolist() == sel.ids.tolist()
    if name == "kcenter":
        picks, _ = kcenter_reference(x, np.setdiff1d(np.arange(n), [0, 7, 20]), [0, 7, 20], 9)  # positions
        assert sel.ids.tolist() == (np.array(picks) * 3 + 5).tolist()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_budget_larger_than_candidates(name):
    x = gaussian(12, 5, seed=15)
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=12)
    state = PoolState(size=12, labeled=[0, 1, 2, 3, 4], index=flat(x), probs=probs)
    with pytest.raises(ConfigError, match="only 7 unlabelled candidates"):
        STRATEGIES[name]().select(state, 8, rng=np.random.default_rng(0))
    strategy = STRATEGIES[name]()
    strategy.allow_fewer = True
    sel = strategy.select(state, 8, rng=np.random.default_rng(0))
    assert sorted(sel.ids.tolist()) == list(range(5, 12))
    assert len(strategy.select(state, 0, rng=np.random.default_rng(0))) == 0


@pytest.mark.parametrize("name", ["kcenter", "kmeans", "votek"])
def test_missing_index_is_a_clear_error(name):
    with pytest.raises(ConfigError, match="embedding index"):
        STRATEGIES[name]().select(PoolState(size=10), 2, rng=np.random.default_rng(0))


def test_badge_needs_probs_and_features():
    x = gaussian(10, 4, seed=16)
    with pytest.raises(ConfigError, match="class probabilities"):
        BADGE().select(PoolState(size=10, index=flat(x)), 2, rng=np.random.default_rng(0))
    probs = np.full((10, 2), 0.5)
    with pytest.raises(ConfigError, match="features"):
        BADGE().select(PoolState(size=10, probs=probs), 2, rng=np.random.default_rng(0))


def test_candidates_missing_from_the_index_are_named():
    x = gaussian(10, 4, seed=17)
    state = PoolState(size=12, index=flat(x))  # ids 10 and 11 are candidates but not indexed
    with pytest.raises(DataError, match="not in the index"):
        KCenterGreedy().select(state, 2, rng=np.random.default_rng(0))


@pytest.mark.parametrize("shuffled", [False, True])
def test_position_lookup_fast_path_agrees_with_the_index(shuffled):
    ids = np.arange(1500) * 7 + 2
    if shuffled:
        ids = np.random.default_rng(0).permutation(ids)
    index = flat(gaussian(1500, 4, seed=18), ids)
    query = np.random.default_rng(1).permutation(ids)[:1200]
    assert div._index_positions(index, query, "t").tolist() == index.positions(query).tolist()
    with pytest.raises(DataError, match="not in the index"):
        div._index_positions(index, np.r_[query, 3], "t")


def test_registry_builds_the_diversity_strategies():
    assert isinstance(make_strategy("kcenter"), KCenterGreedy)
    assert isinstance(make_strategy("kmeans", n_iter=3), KMeansCentroids)
    assert isinstance(make_strategy("votek", k=5), VoteK)
    assert isinstance(make_strategy("badge"), BADGE)


@pytest.mark.parametrize("bad", [{"k": 0}, {"rho": 0.5}, {"confidence_fraction": 1.5}])
def test_votek_rejects_bad_parameters(bad):
    with pytest.raises(ConfigError):
        VoteK(**bad)
