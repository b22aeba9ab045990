"""Diversity strategies: pick items that cover the pool, not just the ones the model is unsure of.

* :class:`KCenterGreedy` — CoreSet (Sener & Savarese 2018): repeatedly the candidate farthest from
  every center chosen so far (the labelled items count as centers).
* :class:`KMeansCentroids` — k-means with ``k = budget`` on the candidates; the item nearest each centroid.
* :class:`VoteK` — graph-based selective annotation (Su et al. 2023): items voted for by many
  neighbours that no selected item already represents.
* :class:`BADGE` — Ash et al. 2020: k-means++ seeding on gradient embeddings, uncertainty and diversity
  at once.

All of them read the shared :class:`~curate.index.EmbeddingIndex` (L2-normalised float32 rows) and work
in memory proportional to the candidates' vectors: no strategy builds an N x N, N x L or (for BADGE)
N x (d*C) matrix. Ties go to the candidate that comes first in the index (lowest position), so a
selection depends only on the state and ``rng``.
"""

from __future__ import annotations

import logging

import numpy as np

from curate.acquire.base import PoolState, Selection, check_budget
from curate.errors import ConfigError, DataError
from curate.index import _draw_proportional, kmeans

__all__ = ["BADGE", "KCenterGreedy", "KMeansCentroids", "VoteK", "gradient_sq_distances"]

logger = logging.getLogger(__name__)

# Elements (rows x columns) in one block of a blocked similarity product: 4M float32 = 16 MiB.
_BLOCK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------------------------------- helpers


def _empty() -> Selection:
    return Selection(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))


def _index_positions(index, ids: np.ndarray, who: str, what: str = "candidate") -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    indexed = index.ids
    if len(indexed) > 1 and len(ids) > 1000 and bool((indexed[1:] > indexed[:-1]).all()):
        # Ids in increasing order (the usual case): a vectorised look-up instead of one dict probe per id.
        pos = np.clip(np.searchsorted(indexed, ids), 0, len(indexed) - 1)
        if (indexed[pos] == ids).all():
            return pos.astype(np.int64)
    try:
        return index.positions(ids)
    except DataError as err:
        raise DataError(f"{who} needs every {what} id in the embedding index: {err} "
                        "Index the whole pool, or narrow the candidates to indexed ids.") from None


def _candidates_by_position(index, candidates: np.ndarray, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Unique candidate ids and their index positions, both ordered by position."""
    ids = np.unique(np.asarray(candidates, dtype=np.int64))
    pos = _index_positions(index, ids, who)
    order = np.argsort(pos, kind="stable")
    return ids[order], pos[order]


def _rows(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows]`` for ascending unique ``rows``; a view, not a copy, when they are one contiguous run."""
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):
        return matrix[int(rows[0]) : int(rows[-1]) + 1]
    return matrix[rows]


def _as_matrix(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 (float64 kept as is): what BLAS reads at full speed, copied only if needed."""
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    return np.ascontiguousarray(x, dtype=dtype)


# ---------------------------------------------------------------------------------------------- k-center


class KCenterGreedy:
    """Greedy k-center (CoreSet, Sener & Savarese 2018) on the index vectors.

    Every candidate keeps its squared distance to the nearest center; each pick is the candidate
    farthest from all centers, and one matrix-vector product over the candidates' vectors updates
    every distance. The centers start as the labelled ids (compared in blocks of ``chunk`` at a
    time), or, when nothing is labelled, one candidate drawn by ``rng``. Scores are the squared
    distance at pick time (``inf`` for a first center drawn at random).

    For unit vectors ``||x - c||^2 = 2 - 2 x.c``, so the farthest candidate is the one whose largest
    similarity to any center is smallest; only that largest similarity is stored.

    Args:
        allow_fewer: return every candidate when the budget is larger than their number.
        chunk: labelled centers compared per block when starting from many of them.
        reuse_above: when the candidates are at least this share of the index, work on the whole
            index matrix (a view) with the others masked, instead of copying the candidates' rows.
    """

    def __init__(self, *, allow_fewer: bool = False, chunk: int = 1024, reuse_above: float = 0.9) -> None:
        if chunk <= 0:
            raise ConfigError(f"The 'chunk' parameter of KCenterGreedy must be positive. Got {chunk} instead.")
        self.allow_fewer = allow_fewer
        self.chunk = int(chunk)
        self.reuse_above = float(reuse_above)

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        k = check_budget(state, budget, allow_fewer=self.allow_fewer)
        index = state.require_index("KCenterGreedy")
        if k == 0:
            return _empty()
        ids, pos = _candidates_by_position(index, state.candidates, "KCenterGreedy")
        vectors = index.vectors
        if len(pos) >= self.reuse_above * len(index):
            rows = np.arange(len(index))
            x, cand_rows = vectors, pos
        else:
            rows = pos
            x, cand_rows = _rows(vectors, pos), np.arange(len(pos))
        x = _as_matrix(x)
        id_of_row = np.full(len(rows), -1, dtype=np.int64)
        id_of_row[cand_rows] = ids

        # Largest similarity to any center; +inf marks rows that may not be picked (non-candidates, picked).
        sim = np.full(len(rows), np.inf, dtype=np.float32)
        sim[cand_rows] = -np.inf
        labeled = np.unique(state.labeled)
        if len(labeled):
            at = np.sort(_index_positions(index, labeled, "KCenterGreedy", "labelled"))
            centers = _as_matrix(_rows(vectors, at))
            _update_max_similarity(x, sim, centers, self.chunk)
        picks, scores = self._greedy(x, sim, k, cand_rows, labeled_start=len(labeled) > 0, rng=rng)
        logger.info("kcenter: selected %d of %d candidates from %d labelled centers; last distance %.4g",
                    k, len(ids), len(labeled), scores[-1])
        return Selection(id_of_row[picks], scores, {"strategy": "kcenter", "initial_centers": int(len(labeled))})

    @staticmethod
    def _greedy(x: np.ndarray, sim: np.ndarray, k: int, cand_rows: np.ndarray, *, labeled_start: bool,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        picks = np.empty(k, dtype=np.int64)
        scores = np.empty(k, dtype=np.float32)
        buf = np.empty(len(x), dtype=x.dtype)
        for t in range(k):
            if t == 0 and not labeled_start:
                pick = int(cand_rows[rng.integers(len(cand_rows))])
                scores[t] = np.inf
            else:
                pick = int(np.argmin(sim))  # first minimum: ties go to the lowest position
                scores[t] = max(0.0, 2.0 - 2.0 * float(sim[pick]))
            picks[t] = pick
            if t + 1 < k:
                # The one pass over the matrix per pick: a BLAS matrix-vector product (threaded by BLAS).
                np.dot(x, x[pick], out=buf)
                np.maximum(sim, buf, out=sim)
            sim[pick] = np.inf
        return picks, scores


def _update_max_similarity(x: np.ndarray, sim: np.ndarray, centers: np.ndarray, chunk: int) -> None:
    """``sim = max(sim, max_c x.c)`` over many centers, one (rows x chunk) block at a time."""
    cols = max(1, min(chunk, len(centers)))
    block_rows = max(256, _BLOCK_ELEMENTS // cols)
    for c0 in range(0, len(centers), cols):
        ct = np.ascontiguousarray(centers[c0 : c0 + cols].T, dtype=x.dtype)
        for r0 in range(0, len(x), block_rows):
            part = sim[r0 : r0 + block_rows]
            best = (x[r0 : r0 + block_rows] @ ct).max(axis=1)
            # +inf rows (non-candidates) stay +inf: maximum never lowers them.
            np.maximum(part, best, out=part, casting="unsafe")


# ---------------------------------------------------------------------------------------------- k-means


class KMeansCentroids:
    """k-means with ``k = budget`` on the candidates' vectors; the candidate nearest each centroid.

    The clustering is :func:`curate.index.kmeans`: k-means++ seeding drawn by ``rng`` on a sample of
    ``max(32 * budget, 10_000)`` candidates, all when fewer (so that well separated clusters each get
    a centroid), then ``n_iter`` FAISS Lloyd iterations with a seed from ``rng``. Larger clusters come
    first, and claim their nearest candidate first: when two centroids share a nearest item the later
    one takes its next nearest. Scores are cluster sizes.
    """

    def __init__(self, *, n_iter: int = 20, allow_fewer: bool = False) -> None:
        if n_iter < 0:
            raise ConfigError(f"The 'n_iter' parameter of KMeansCentroids must be >= 0. Got {n_iter} instead.")
        self.n_iter = int(n_iter)
        self.allow_fewer = allow_fewer

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        k = check_budget(state, budget, allow_fewer=self.allow_fewer)
        index = state.require_index("KMeansCentroids")
        if k == 0:
            return _empty()
        ids, pos = _candidates_by_position(index, state.candidates, "KMeansCentroids")
        x = np.ascontiguousarray(_rows(index.vectors, pos), dtype=np.float32)
        n, d = x.shape
        if k >= n:
            return Selection(ids.copy(), np.ones(n, dtype=np.float32), {"strategy": "kmeans", "clusters": n})

        import faiss

        centroids, assign = kmeans(x, k, rng=rng, n_iter=self.n_iter)
        flat = faiss.IndexFlatL2(d)
        flat.add(x)
        sizes = np.bincount(assign, minlength=k)
        order = np.lexsort((np.arange(k), -sizes))  # largest cluster first; ties by centroid number
        chosen = _claim_nearest(flat, centroids[order], n)
        logger.info("kmeans: %d clusters over %d candidates (sizes %d..%d)", k, n, sizes.min(), sizes.max())
        return Selection(ids[chosen], sizes[order].astype(np.float32),
                         {"strategy": "kmeans", "clusters": k, "empty_clusters": int((sizes == 0).sum())})


def _claim_nearest(flat, centroids: np.ndarray, n: int) -> np.ndarray:
    """For each centroid in turn, the nearest row not claimed by an earlier one."""
    taken = np.zeros(n, dtype=bool)
    chosen = np.empty(len(centroids), dtype=np.int64)
    depth = min(n, 8)
    _, near = flat.search(centroids, depth)
    for c in range(len(centroids)):
        row = near[c]
        while True:
            free = row[(row >= 0) & ~taken[np.clip(row, 0, None)]]
            if len(free):
                break
            # Every one of its nearest rows is taken: look deeper (rare; only for crowded centroids).
            depth = min(n, 4 * len(row))
            _, deeper = flat.search(centroids[c : c + 1], depth)
            row = deeper[0]
        chosen[c] = free[0]
        taken[free[0]] = True
    return chosen


# ---------------------------------------------------------------------------------------------- vote-k


class VoteK:
    """Vote-k selective annotation (Su et al. 2023, "Selective Annotation Makes Language Models
    Better Few-Shot Learners").

    Each candidate votes for its ``k`` nearest other candidates. The next pick maximises
    ``sum over unselected voters v of rho ** -(number of selected items v votes for)``: an item is
    worth much when many neighbours point at it and none of them is already represented.

    With ``confidence_fraction > 0`` and ``PoolState.probs`` given, that share of the budget comes
    from the paper's second stage: the remaining candidates are ranked by model confidence (max
    probability), the least confident 90% of them (as in the authors' code) are split into that many
    equal-size buckets, and from each bucket, least confident first, the item with the highest vote-k
    score is taken, the discounts updated after every pick. Without probabilities the whole budget
    comes from the graph stage (the selection's ``info`` says so).

    Scores are the vote-k scores at pick time; ties go to the lowest index position.
    """

    def __init__(self, *, k: int = 10, rho: float = 10.0, confidence_fraction: float = 0.0,
                 allow_fewer: bool = False) -> None:
        if k <= 0:
            raise ConfigError(f"The 'k' parameter of VoteK must be positive. Got {k} instead.")
        if not rho >= 1.0:
            raise ConfigError(f"The 'rho' parameter of VoteK must be >= 1. Got {rho} instead.")
        if not 0.0 <= confidence_fraction <= 1.0:
            raise ConfigError("The 'confidence_fraction' parameter of VoteK must lie in [0, 1]. "
                              f"Got {confidence_fraction} instead.")
        self.k = int(k)
        self.rho = float(rho)
        self.confidence_fraction = float(confidence_fraction)
        self.allow_fewer = allow_fewer

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        m = check_budget(state, budget, allow_fewer=self.allow_fewer)
        index = state.require_index("VoteK")
        if m == 0:
            return _empty()
        ids, pos = _candidates_by_position(index, state.candidates, "VoteK")
        n = len(ids)
        k = min(self.k, n - 1)
        graph = _VoteGraph(_candidate_knn(index, ids, pos, k) if k > 0 else np.zeros((n, 0), np.int64), self.rho)

        second = 0
        if self.confidence_fraction > 0 and state.probs is not None:
            second = int(round(self.confidence_fraction * m))
        elif self.confidence_fraction > 0:
            logger.info("votek: no model probabilities given; the whole budget comes from the graph stage")
        picks, scores = [], []
        for _ in range(m - second):
            row = graph.best()
            scores.append(graph.score[row])
            graph.pick(row)
            picks.append(row)
        if second:
            confidence = np.asarray(state.probs)[ids].max(axis=1)
            left = np.flatnonzero(~graph.selected)
            left = left[np.argsort(confidence[left], kind="stable")]  # least confident first
            left = left[: max(second, int(0.9 * len(left)))]
            for bucket in np.array_split(left, second):
                row = int(bucket[np.argmax(graph.score[bucket])])
                scores.append(graph.score[row])
                graph.pick(row)
                picks.append(row)
        logger.info("votek: selected %d of %d candidates (k=%d, %d by confidence buckets)", m, n, k, second)
        return Selection(ids[np.asarray(picks, dtype=np.int64)], np.asarray(scores, dtype=np.float32),
                         {"strategy": "votek", "k": k, "graph_stage": m - second, "confidence_stage": second})


class _VoteGraph:
    """The vote-k state: who votes for whom, and each item's score under the current discounts.

    ``hist[u, j]`` counts the unselected voters of ``u`` that already vote for ``j`` selected items;
    the score is ``sum_j hist[u, j] * rho ** -j``. Scores of the items a pick touches are recomputed
    from these integer counts, not patched with float increments, so equal situations give bit-equal
    scores and ties are real ties.
    """

    def __init__(self, neighbors: np.ndarray, rho: float) -> None:
        n, k = neighbors.shape
        self.neighbors = neighbors
        flat = neighbors.ravel()
        voters = np.repeat(np.arange(n), k)
        keep = flat >= 0
        flat, voters = flat[keep], voters[keep]
        order = np.argsort(flat, kind="stable")
        self.voters = voters[order]
        self.starts = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=n))])
        self.level = np.zeros(n, dtype=np.int64)  # selected items each item votes for
        self.hist = np.zeros((n, k + 1), dtype=np.int32)  # levels 0..k: a voter has k votes
        self.hist[:, 0] = np.diff(self.starts)
        self.powers = rho ** -np.arange(k + 1, dtype=np.float64)
        self.selected = np.zeros(n, dtype=bool)
        self.score = self._scores(np.arange(n))

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return (self.hist[rows] * self.powers).sum(axis=1)

    def best(self) -> int:
        return int(np.argmax(self.score))

    def pick(self, row: int) -> None:
        nb = self.neighbors[row]
        nb = nb[nb >= 0]
        # The picked item stops voting ...
        np.subtract.at(self.hist, (nb, self.level[row]), 1)
        # ... and each of its unselected voters now votes for one more selected item.
        voters = self.voters[self.starts[row] : self.starts[row + 1]]
        voters = voters[~self.selected[voters]]
        targets = self.neighbors[voters]
        lv = np.broadcast_to(self.level[voters][:, None], targets.shape)
        ok = targets >= 0
        t, lv = targets[ok], lv[ok]
        np.subtract.at(self.hist, (t, lv), 1)
        np.add.at(self.hist, (t, lv + 1), 1)
        self.level[self.voters[self.starts[row] : self.starts[row + 1]]] += 1
        self.selected[row] = True
        touched = np.unique(np.concatenate([nb, t]))
        self.score[touched] = self._scores(touched)
        self.score[touched[self.selected[touched]]] = -np.inf
        self.score[row] = -np.inf


def _candidate_knn(index, ids: np.ndarray, pos: np.ndarray, k: int, *, batch: int = 8192) -> np.ndarray:
    """Each candidate's ``k`` nearest other candidates, as rows into ``ids`` (``-1`` where missing).

    Uses the index's own search, asking for more neighbours than ``k`` when the index also holds
    non-candidates and dropping those; rows still short after a few widenings (candidates are a small
    share of the index) get an exact search among the candidates.
    """
    n = len(ids)
    out = np.full((n, k), -1, dtype=np.int64)
    sorter = np.argsort(ids, kind="stable")
    sorted_ids = ids[sorter]

    def to_rows(found: np.ndarray) -> np.ndarray:
        at = np.clip(np.searchsorted(sorted_ids, found), 0, n - 1)
        return np.where((found >= 0) & (sorted_ids[at] == found), sorter[at], -1)

    others = len(index) - n
    widest = min(len(index), 64 * (k + 1))
    width = min(widest, k + 1 + min(others, k + 1))
    todo = np.arange(n)
    vectors = index.vectors
    while True:
        short = []
        for b0 in range(0, len(todo), batch):
            rows = todo[b0 : b0 + batch]
            _, found = index.search(_rows(vectors, pos[rows]), width)  # pos[rows] is ascending
            cand = to_rows(found)
            cand[cand == rows[:, None]] = -1
            valid = cand >= 0
            first = np.argsort(~valid, axis=1, kind="stable")[:, :k]
            out[rows] = np.take_along_axis(np.where(valid, cand, -1), first, axis=1)
            short.append(rows[valid.sum(axis=1) < k])
        todo = np.concatenate(short)
        if not len(todo) or width >= widest:
            break
        width = min(widest, 4 * width)
    if len(todo):
        _exact_knn(_as_matrix(_rows(vectors, pos)), todo, k, out)
    return out


def _exact_knn(x: np.ndarray, rows: np.ndarray, k: int, out: np.ndarray) -> None:
    """Exact ``k`` nearest other rows of ``x`` for ``rows``, written into ``out``; blocked, never n x n."""
    block = max(1, _BLOCK_ELEMENTS // len(x))
    for b0 in range(0, len(rows), block):
        r = rows[b0 : b0 + block]
        sims = x[r] @ x.T
        sims[np.arange(len(r)), r] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[r] = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)


# ---------------------------------------------------------------------------------------------- BADGE


class _GradientEmbedding:
    """Implicit gradient embeddings ``g_x = a_x (x) h_x`` with ``a_x = p_x - onehot(argmax p_x)``.

    ``||g_x - g_y||^2 = ||a_x||^2 ||h_x||^2 + ||a_y||^2 ||h_y||^2 - 2 (a_x . a_y)(h_x . h_y)``, so
    distances cost one product with the ``(n, d)`` features and one with the ``(n, C)`` residuals; the
    ``(n, d*C)`` embeddings are never built.
    """

    def __init__(self, probs: np.ndarray, h: np.ndarray) -> None:
        a = np.array(probs, dtype=np.float64)  # a copy: the state's probabilities stay untouched
        if a.ndim != 2 or a.shape[1] < 2:
            raise ConfigError(f"BADGE needs class probabilities of shape (n, C) with C >= 2; got {a.shape}.")
        a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0  # the predicted class's -1 term
        self.a = a
        self.h = _as_matrix(h)
        self.sq_norms = (a * a).sum(axis=1) * np.einsum("ij,ij->i", self.h, self.h).astype(np.float64)

    def sq_distances_to(self, row: int) -> np.ndarray:
        hh = (self.h @ self.h[row]).astype(np.float64)
        aa = self.a @ self.a[row]
        return np.clip(self.sq_norms + self.sq_norms[row] - 2.0 * aa * hh, 0.0, None)


def gradient_sq_distances(probs: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Squared distances ``(n, len(rows))`` between BADGE gradient embeddings of every item and of ``rows``.

    ``probs`` is ``(n, C)``, ``h`` the ``(n, d)`` penultimate-layer features (or embeddings).
    """
    emb = _GradientEmbedding(probs, h)
    return np.stack([emb.sq_distances_to(int(r)) for r in np.asarray(rows)], axis=1)


class BADGE:
    """BADGE (Ash et al. 2020): k-means++ seeding over gradient embeddings.

    ``g_x = (p_x - onehot(argmax p_x)) (x) h_x`` with ``p = PoolState.probs`` and ``h`` the features in
    ``PoolState.arrays['features']`` (``(size, d)``, by pool id) when given, else the index vector.
    The first pick is the largest ``||g_x||``; each next one is drawn by ``rng`` with probability
    proportional to its squared distance to the nearest pick. Scores are that squared distance at pick
    time (the squared norm for the first). Memory stays O(n (d + C)).
    """

    def __init__(self, *, allow_fewer: bool = False) -> None:
        self.allow_fewer = allow_fewer

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        m = check_budget(state, budget, allow_fewer=self.allow_fewer)
        probs = state.require_probs("BADGE")
        if "features" in state.arrays:
            ids = np.unique(np.asarray(state.candidates, dtype=np.int64))
            features = np.asarray(state.arrays["features"])
            if features.ndim != 2 or len(features) != state.size:
                raise ConfigError(f"BADGE needs PoolState.arrays['features'] of shape ({state.size}, d); "
                                  f"got {features.shape}.")
            h = _rows(features, ids)
        elif state.index is not None:
            ids, pos = _candidates_by_position(state.index, state.candidates, "BADGE")
            h = _rows(state.index.vectors, pos)
        else:
            raise ConfigError("BADGE needs features: PoolState.arrays['features'] or the shared embedding "
                              "index (PoolState.index); neither was given.")
        if m == 0:
            return _empty()
        emb = _GradientEmbedding(probs[ids], h)
        n = len(ids)
        picks = np.empty(m, dtype=np.int64)
        scores = np.empty(m, dtype=np.float32)
        picks[0] = int(np.argmax(emb.sq_norms))
        scores[0] = emb.sq_norms[picks[0]]
        d2 = np.full(n, np.inf)
        for t in range(1, m):
            np.minimum(d2, emb.sq_distances_to(int(picks[t - 1])), out=d2)
            d2[picks[:t]] = 0.0
            picks[t] = _draw_proportional(d2, picks[:t], rng)
            scores[t] = d2[picks[t]]
        logger.info("badge: selected %d of %d candidates (C=%d)", m, n, probs.shape[1])
        return Selection(ids[picks], scores, {"strategy": "badge", "classes": int(probs.shape[1])})
