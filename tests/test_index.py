"""The FAISS index: exact results equal brute force, approximate recall, persistence, errors."""

from __future__ import annotations

import numpy as np
import pytest

from curate.errors import ConfigError, DataError
from curate.index import EmbeddingIndex, kmeans


def clustered(n: int, d: int = 24, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    x = centers[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(base: np.ndarray, queries: np.ndarray, k: int):
    sims = queries @ base.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), order


def test_exact_search_equals_numpy_reference():
    x = clustered(2000)
    ids = np.arange(2000, dtype=np.int64) * 3 + 7  # pool ids need not be positions
    index = EmbeddingIndex.from_vectors(x, ids, kind="flat")
    q = clustered(50, seed=1)
    scores, found = index.search(q, 10)
    ref_s, ref_pos = brute_force(x, q, 10)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    # Ties aside (none in continuous data), the same ids in the same order.
    assert (found == ids[ref_pos]).all()
    assert index.factory_ == "Flat"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall(kind):
    data = clustered(6200)
    x, q = data[:6000], data[6000:]  # held-out queries from the same mixture
    exact = EmbeddingIndex.from_vectors(x, kind="flat").search(q, 10)[1]
    approx = EmbeddingIndex.from_vectors(x, kind=kind, nprobe=16).search(q, 10)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95, recall


def test_auto_switches_above_threshold():
    small = EmbeddingIndex.from_vectors(clustered(100), approximate_above=100)
    large = EmbeddingIndex.from_vectors(clustered(101), approximate_above=100)
    assert small.factory_ == "Flat" and large.factory_.startswith("HNSW")


def test_factory_string_and_bad_kind():
    index = EmbeddingIndex.from_vectors(clustered(500), kind="IVF8,Flat")
    assert index.factory_ == "IVF8,Flat"
    with pytest.raises(ConfigError, match="Bad index kind 'nonsense'"):
        EmbeddingIndex.from_vectors(clustered(10), kind="nonsense")


def test_incremental_add_matches_one_shot_build():
    x = clustered(900)
    one = EmbeddingIndex.from_vectors(x, kind="flat")
    inc = EmbeddingIndex(x.shape[1], kind="flat")
    inc.add(x[:300])
    inc.add(x[300:])  # ids continue at 300
    q = clustered(20, seed=3)
    assert (one.search(q, 5)[1] == inc.search(q, 5)[1]).all()
    assert inc.ids.tolist() == list(range(900))
    with pytest.raises(DataError, match="already in the index"):
        inc.add(x[:2], [5, 1000])


def test_neighbors_exclude_self_and_density_matches_numpy():
    x = clustered(400)
    index = EmbeddingIndex.from_vectors(x, kind="flat")
    sims, nbrs = index.neighbors([0, 1, 2], 5)
    assert not (nbrs == np.array([[0], [1], [2]])).any()
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    ref = np.sort(full, axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(sims, ref[:3], atol=1e-5)
    np.testing.assert_allclose(index.density(k=5), ref.mean(axis=1), atol=1e-5)


def test_density_sees_a_planted_dense_cluster():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(200, 8))
    tight = np.ones((20, 8)) + 0.01 * rng.normal(size=(20, 8))
    index = EmbeddingIndex.from_vectors(np.vstack([spread, tight]))
    dens = index.density(k=5)
    assert dens[200:].min() > dens[:200].max()


def test_save_and_load_round_trip(tmp_path):
    x = clustered(3000)
    for kind in ("flat", "hnsw"):
        index = EmbeddingIndex.from_vectors(x, np.arange(3000) + 10, model="m|normalize=True", kind=kind)
        folder = index.save(tmp_path / kind)
        again = EmbeddingIndex.load(folder)
        q = clustered(30, seed=4)
        a, b = index.search(q, 10), again.search(q, 10)
        assert (a[1] == b[1]).all() and np.allclose(a[0], b[0])
        assert again.model == "m|normalize=True" and again.factory_ == index.factory_ and len(again) == 3000
        np.testing.assert_array_equal(again.vectors_of([10, 11]), x[:2])


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="not a saved index"):
        EmbeddingIndex.load(tmp_path)


def test_input_checks():
    index = EmbeddingIndex(4)
    with pytest.raises(DataError, match=r"shape \(n, 4\); got \(2, 3\)"):
        index.add(np.ones((2, 3)))
    with pytest.raises(DataError, match="NaN"):
        index.add(np.array([[1, np.nan, 0, 0]]))
    with pytest.raises(DataError, match="all-zero"):
        index.add(np.zeros((1, 4)))
    with pytest.raises(DataError, match="duplicates"):
        index.add(np.ones((2, 4)), [1, 1])
    with pytest.raises(DataError, match="floating point"):
        index.add(np.ones((1, 4), dtype=np.int64))
    with pytest.raises(ConfigError, match="'k' parameter"):
        index.search(np.ones((1, 4)), 0)
    with pytest.raises(ConfigError, match="'dim' parameter"):
        EmbeddingIndex(0)


def test_empty_index_and_k_beyond_size():
    index = EmbeddingIndex(4)
    s, i = index.search(np.ones((1, 4)), 3)
    assert (i == -1).all()
    index.add(np.eye(4)[:2])
    s, i = index.search(np.eye(4)[:1], 3)
    assert i[0].tolist()[:2] == [0, 1] and i[0, 2] == -1


def test_hnsw_search_effort_grows_with_size():
    small = EmbeddingIndex.from_vectors(clustered(300), kind="hnsw")
    assert small.ef_search == 128
    pinned = EmbeddingIndex.from_vectors(clustered(300), kind="hnsw", ef_search=40)
    assert pinned.ef_search == 40 and pinned._index.hnsw.efSearch == 40


# ---------------------------------------------------------------------------------------------- k-means


def blobs(sizes, d: int = 8, spread: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around centers 10 apart; returns (float32 rows, blob of each row), rows shuffled."""
    rng = np.random.default_rng(seed)
    centers = 10.0 * rng.standard_normal((len(sizes), d))
    label = np.repeat(np.arange(len(sizes)), sizes)
    x = centers[label] + spread * rng.standard_normal((len(label), d))
    perm = rng.permutation(len(label))
    return x[perm].astype(np.float32), label[perm]


@pytest.mark.parametrize("seed", range(8))
def test_kmeans_gives_each_planted_blob_one_centroid(seed):
    # One blob of 8 among three of 150: uniform seeding (FAISS's default) usually misses it.
    sizes = [150, 150, 150, 8]
    x, label = blobs(sizes, seed=seed)
    centroids, assign = kmeans(x, 4, rng=np.random.default_rng(seed))
    assert centroids.shape == (4, 8) and centroids.dtype == np.float32 and centroids.flags.c_contiguous
    assert assign.shape == (len(x),) and assign.dtype == np.int64
    # The clustering is the planted partition: each blob's rows all share one cluster, its own.
    blob_of_cluster = {}
    for b in range(4):
        got = np.unique(assign[label == b])
        assert len(got) == 1, (b, got)
        blob_of_cluster[int(got[0])] = b
    assert sorted(blob_of_cluster) == [0, 1, 2, 3]
    # ... and every centroid sits on its blob's mean.
    for c, b in blob_of_cluster.items():
        np.testing.assert_allclose(centroids[c], x[label == b].astype(np.float64).mean(axis=0), atol=1e-4)


def test_kmeans_is_a_function_of_the_data_and_rng():
    x, _ = blobs([60, 60, 60, 60], seed=1)
    a = kmeans(x, 6, rng=np.random.default_rng(3))
    b = kmeans(x, 6, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # Float64 and non-contiguous input is the same data: the same result.
    c = kmeans(np.asfortranarray(x.astype(np.float64)), 6, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], c[0])
    np.testing.assert_array_equal(a[1], c[1])
    # A different rng draws different seeds (6 centroids over 4 blobs: no single right answer).
    others = [kmeans(x, 6, rng=np.random.default_rng(s))[0] for s in range(4, 8)]
    assert any(not np.array_equal(a[0], o) for o in others)


def test_kmeans_seeds_are_rows_and_each_row_goes_to_its_nearest_centroid():
    x, label = blobs([30, 30, 30, 30], seed=2)
    seeds, assign = kmeans(x, 4, rng=np.random.default_rng(0), n_iter=0)
    # k-means++ seeds are data rows, one per blob (they are drawn from a sample of 50 rows here).
    again, _ = kmeans(x, 4, rng=np.random.default_rng(0), n_iter=0, seed_sample=50)
    for s in (seeds, again):
        rows = [int(np.flatnonzero((x == c).all(axis=1))[0]) for c in s]
        assert sorted(label[rows].tolist()) == [0, 1, 2, 3]
    d2 = ((x[:, None, :].astype(np.float64) - seeds[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(assign, d2.argmin(axis=1))
    # k = n: every row is its own cluster.
    small = x[:5]
    centroids, assign = kmeans(small, 5, rng=np.random.default_rng(0))
    assert sorted(assign.tolist()) == [0, 1, 2, 3, 4]


def test_kmeans_input_checks():
    x, _ = blobs([10, 10], d=3)
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match=r"'vectors' .* 2-D array"):
        kmeans(x[0], 2, rng=rng)
    with pytest.raises(DataError, match=r"'vectors' .* floating point"):
        kmeans(np.ones((4, 3), dtype=np.int64), 2, rng=rng)
    with pytest.raises(DataError, match="NaN or infinite"):
        kmeans(np.where(np.arange(3) == 1, np.nan, x), 2, rng=rng)
    with pytest.raises(DataError, match="at least one vector"):
        kmeans(np.zeros((0, 3), dtype=np.float32), 1, rng=rng)
    for bad in (0, 21):
        with pytest.raises(ConfigError, match=rf"'k' parameter of kmeans must be between 1 and the number of vectors \(20\)\. Got {bad}"):
            kmeans(x, bad, rng=rng)
    with pytest.raises(ConfigError, match="'k' parameter of kmeans must be an integer"):
        kmeans(x, 2.5, rng=rng)
    with pytest.raises(ConfigError, match="'n_iter' parameter of kmeans must be >= 0"):
        kmeans(x, 2, rng=rng, n_iter=-1)
    with pytest.raises(ConfigError, match=r"'seed_sample' parameter of kmeans must be at least k \(3\)"):
        kmeans(x, 3, rng=rng, seed_sample=2)
    with pytest.raises(ConfigError, match="'rng' parameter of kmeans must be a numpy Generator"):
        kmeans(x, 2, rng=0)
    # numpy integers are integers.
    assert kmeans(x, np.int64(2), rng=rng)[0].shape == (2, 3)
