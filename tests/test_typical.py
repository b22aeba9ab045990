"""Low-budget strategies on planted geometry, where the right picks are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from curate.acquire import PoolState, make_strategy
from curate.acquire.typical import (
    BudgetSwitch,
    ClusterMargin,
    ProbCover,
    TypicalMargin,
    TypiClust,
    typicality,
)
from curate.bench.config import BenchConfig, Cell
from curate.config import from_dict
from curate.errors import ConfigError
from curate.index import EmbeddingIndex


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _blob(center, n, radius, rng):
    """A planted point at ``center`` and ``n`` points at one distance from it in random tangent
    directions (so ~radius * sqrt(2) from each other on average): with every member as a neighbour
    (k >= n), the centre is the one most typical point of its blob."""
    c = _unit(center)
    noise = rng.normal(size=(n, len(c)))
    noise -= (noise @ c)[:, None] * c          # tangent directions
    ring = _unit(c + radius * _unit(noise))
    return np.vstack([c, ring])


def planted(sizes=(60, 40, 20), radius=0.08, seed=0):
    """Blobs around orthogonal axes of R^8; returns (vectors, centre ids, blob of each id)."""
    rng = np.random.default_rng(seed)
    parts, centers, blob_of = [], [], []
    for b, n in enumerate(sizes):
        axis = np.zeros(8)
        axis[b] = 1.0
        centers.append(sum(len(p) for p in parts))
        parts.append(_blob(axis, n, radius, rng))
        blob_of += [b] * (n + 1)
    return np.vstack(parts).astype(np.float32), np.array(centers), np.array(blob_of)


def _state(x, labeled=(), probs=None, candidates=None):
    index = EmbeddingIndex.from_vectors(x, kind="flat")
    return PoolState(size=len(x), labeled=np.array(labeled, dtype=np.int64), index=index, probs=probs,
                     candidates=candidates)


def test_typicality_is_inverse_mean_neighbour_distance_without_self():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=np.float32)
    # row 0: neighbours at 1 and 3 (k=2) -> 1/2; row 2: at 2 and 3 -> 1/2.5
    np.testing.assert_allclose(typicality(x, 2), [1 / 2.0, 1 / 1.5, 1 / 2.5], rtol=1e-6)
    # k is cut to the neighbours there are, and a reference sample never counts a row as its own neighbour
    np.testing.assert_allclose(typicality(x, 5), typicality(x, 2), rtol=1e-6)
    np.testing.assert_allclose(typicality(x, 1, reference=np.array([0, 1])), [1.0, 1.0, 1 / 2.0], rtol=1e-6)


def test_typiclust_picks_each_blob_centre_largest_blob_first():
    x, centers, _ = planted()
    sel = TypiClust(k=100).select(_state(x), 3, rng=np.random.default_rng(0))
    assert sel.ids.tolist() == centers.tolist()


def test_typiclust_goes_to_the_blobs_with_fewest_labels():
    x, centers, blob_of = planted()
    labelled_in_big = np.flatnonzero(blob_of == 0)[1:3]       # two ring points of the largest blob
    sel = TypiClust(k=100).select(_state(x, labeled=labelled_in_big), 2, rng=np.random.default_rng(1))
    # K = 2 labelled + 2 = 4 clusters over 3 blobs: the unlabelled blobs come first, biggest first.
    assert sel.ids.tolist() == [centers[1], centers[2]]


def test_typical_margin_takes_the_least_sure_item_of_the_cluster_typiclust_chose():
    x, centers, blob_of = planted()
    probs = np.tile([0.9, 0.1], (len(x), 1))
    unsure = [int(np.flatnonzero(blob_of == b)[5]) for b in range(3)]
    probs[unsure] = [0.55, 0.45]
    sel = TypicalMargin(k=100).select(_state(x, probs=probs), 3, rng=np.random.default_rng(0))
    assert sel.ids.tolist() == unsure
    # without probabilities it is TypiClust
    assert TypicalMargin(k=100).select(_state(x), 3, rng=np.random.default_rng(0)).ids.tolist() == centers.tolist()


def test_probcover_covers_the_biggest_ball_first_and_only_centres_cover_a_whole_blob():
    x, centers, _ = planted(radius=0.08)
    # delta between the centre-to-ring distance (~0.08) and the ring diameter (~0.16)
    sel = ProbCover(delta=0.1).select(_state(x), 3, rng=np.random.default_rng(0))
    assert sel.ids.tolist() == centers.tolist()
    assert sel.scores.tolist() == [61.0, 41.0, 21.0]
    assert sel.info["coverage"] == 1.0


def test_probcover_counts_what_labelled_balls_already_cover():
    x, centers, _ = planted(radius=0.08)
    sel = ProbCover(delta=0.1).select(_state(x, labeled=[centers[0]]), 2, rng=np.random.default_rng(0))
    assert sel.ids.tolist() == [centers[1], centers[2]]


def test_probcover_falls_back_to_random_once_all_is_covered():
    x, centers, _ = planted(radius=0.08)
    sel = ProbCover(delta=0.1).select(_state(x), 5, rng=np.random.default_rng(0))
    assert sel.ids[:3].tolist() == centers.tolist() and sel.scores[3:].tolist() == [0.0, 0.0]
    assert len(np.unique(sel.ids)) == 5


def test_probcover_chooses_a_pure_radius_between_blob_size_and_gap():
    x, _, _ = planted(radius=0.08)
    delta = ProbCover(n_classes=3).choose_delta(x, 3, np.random.default_rng(0))
    # blobs ~0.16 across, ~1.41 apart (orthogonal axes): pure balls up to the gap
    assert 0.16 < delta < 1.42


def test_probcover_at_round_zero_needs_the_number_of_classes():
    x, _, _ = planted()
    with pytest.raises(ConfigError, match="n_classes"):
        ProbCover().select(_state(x), 2, rng=np.random.default_rng(0))


def test_cluster_margin_goes_round_robin_from_the_smallest_cluster():
    x, centers, blob_of = planted(sizes=(30, 10), radius=0.05)
    n = len(x)
    margin = np.linspace(0.05, 0.95, n)               # uncertainty falls with the id
    probs = np.stack([(1 + margin) / 2, (1 - margin) / 2], axis=1)
    sel = ClusterMargin(shortlist=10).select(_state(x, probs=probs), 4, rng=np.random.default_rng(0))
    big, small = np.flatnonzero(blob_of == 0), np.flatnonzero(blob_of == 1)
    # shortlist = the 40 smallest margins = ids 0..39: 31 of the big blob, 9 of the small one. Four
    # k-means clusters over two tight blobs; round-robin from the smallest cluster, most unsure first.
    assert set(sel.ids) <= set(range(40))
    assert np.isin(sel.ids, small).any() and np.isin(sel.ids, big).any()
    np.testing.assert_allclose(sel.scores, 1 - margin[sel.ids], rtol=1e-6)


def test_budget_switch_changes_strategy_at_labels_per_class():
    x, _, _ = planted()
    probs = np.tile([0.7, 0.3], (len(x), 1))
    probs[::7] = [0.5, 0.5]
    switch = BudgetSwitch(TypiClust(k=100), make_strategy("margin"), per_class=3)
    few = switch.select(_state(x, labeled=range(5), probs=probs), 2, rng=np.random.default_rng(0))
    many = switch.select(_state(x, labeled=range(6), probs=probs), 2, rng=np.random.default_rng(0))
    assert few.info["phase"] == "low" and many.info["phase"] == "high" and many.info["switch_at"] == 6
    assert np.all(probs[many.ids] == [0.5, 0.5])
    # round 0 (no model) always uses the low-budget strategy
    assert switch.select(_state(x), 2, rng=np.random.default_rng(0)).info["phase"] == "low"


def test_budget_switch_from_the_registry_validates_its_parts():
    assert isinstance(make_strategy("budget_switch", low="probcover", high="entropy", low_params={"n_classes": 3}),
                      BudgetSwitch)
    with pytest.raises(ConfigError, match="'high' must name another strategy"):
        make_strategy("budget_switch", high="margn")


def test_bench_arm_may_choose_its_own_round_zero():
    config = from_dict(BenchConfig, {
        "grid": {"paradigm": ["classification"], "dataset": ["d"], "strategy": ["random", "typiclust", "switch"]},
        "datasets": {"d": {"source": "synthetic"}},
        "strategies": {"typiclust": {"name": "typiclust", "init": "same"},
                       "switch": {"name": "budget_switch", "init": "typiclust"}},
        "schedules": {"default": {"init": 10, "batch": 10, "rounds": 2}},
    })
    cell = lambda s: Cell("classification", "d", s, "default", "gold", 0)   # noqa: E731
    assert [config.init_for(cell(s)) for s in ("random", "typiclust", "switch")] == ["random", "typiclust", "typiclust"]
