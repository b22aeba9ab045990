"""Low-budget strategies: pick *typical* items while labels are few, uncertain ones after.

At budgets of a few labels per class, picking uncertain or outlying points loses to random: the
model's uncertainty is not yet worth much, and outliers teach little (Hacohen et al. 2022, "Active
Learning on a Budget"). These strategies read only the shared index, so they can choose round 0:

* :class:`TypiClust` — Hacohen et al. 2022: k-means with ``|labelled| + budget`` clusters; from the
  clusters with the fewest labels (largest first), the most *typical* item (the inverse of the mean
  distance to its nearest neighbours inside its cluster).
* :class:`ProbCover` — Yehuda et al. 2022: balls of radius ``delta`` around every item; greedily the
  item whose ball covers the most items that no labelled ball covers yet. ``delta`` is chosen as the
  largest radius whose balls stay *pure* (one k-means cluster, ``k`` = the number of classes) for a
  share ``purity`` of the items, as in the paper.

and two hybrids for the rounds after:

* :class:`TypicalMargin` — TypiClust's choice of cluster, but inside the cluster the item the model is
  least sure of (smallest margin); the most typical one while there are no probabilities.
* :class:`ClusterMargin` — Citovsky et al. 2021: a shortlist of the ``shortlist * budget`` smallest
  margins, clustered, then taken round-robin from the smallest cluster up, most uncertain first.
  The paper clusters the pool once by agglomerative clustering (O(n^2) memory); here the shortlist
  is clustered by k-means each round, which keeps memory linear in the pool.

:class:`BudgetSwitch` runs one strategy while the labels per class are few and another after.

Every random choice (k-means seeds) comes from ``rng``; ties go to the lowest index position.
"""

from __future__ import annotations

import logging

import numpy as np

from curate.acquire.base import PoolState, Selection, Strategy, check_budget
from curate.acquire.diversity import _candidates_by_position, _empty, _index_positions
from curate.errors import ConfigError
from curate.index import kmeans

__all__ = ["BudgetSwitch", "ClusterMargin", "ProbCover", "TypiClust", "TypicalMargin", "typicality"]

logger = logging.getLogger(__name__)


def _positive_int(value, name: str, who: str, *, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"The '{name}' parameter of {who} must be an integer >= {low}. Got {value!r} instead.")
    return int(value)


def typicality(x: np.ndarray, k: int = 20, *, reference: np.ndarray | None = None) -> np.ndarray:
    """``1 / mean L2 distance to the k nearest other rows`` for each row of ``x``: TypiClust's density.

    Neighbours are searched among the rows of ``x`` itself, or among ``x[reference]`` (row numbers of
    ``x``; a sample of a large cluster). A row never counts as its own neighbour. ``k`` is cut to the
    neighbours there are; a row with none gets 1.
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    ref_rows = np.arange(len(x)) if reference is None else np.asarray(reference, dtype=np.int64)
    k = min(int(k), len(ref_rows) - 1)
    if k <= 0:
        return np.ones(len(x), dtype=np.float64)
    flat = faiss.IndexFlatL2(x.shape[1])
    flat.add(x[ref_rows])
    d2, found = flat.search(x, k + 1)
    # Drop each row's own match where it is among the reference rows, else the farthest of the k + 1.
    own = ref_rows[np.clip(found, 0, None)] == np.arange(len(x))[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(len(x)), drop] = False
    dist = np.sqrt(np.maximum(d2[keep].reshape(len(x), k), 0.0), dtype=np.float64)
    return 1.0 / (dist.mean(axis=1) + 1e-12)


def _margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row (small = unsure)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[1] < 2:
        return np.zeros(len(p))
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


class _Clusters:
    """The pool's k-means clusters for one selection: who is in each, and TypiClust's cluster order."""

    def __init__(self, state: PoolState, k: int, who: str, *, rng: np.random.Generator, n_iter: int,
                 min_size: int) -> None:
        index = state.require_index(who)
        self.x = index.vectors
        self.cand_ids, self.cand_pos = _candidates_by_position(index, state.candidates, who)
        labeled = np.unique(np.asarray(state.labeled, dtype=np.int64))
        labeled = labeled[np.isin(labeled, index.ids)]
        n = len(self.x)
        self.n_clusters = min(k, n)
        _, self.assign = kmeans(self.x, self.n_clusters, rng=rng, n_iter=n_iter)
        self.sizes = np.bincount(self.assign, minlength=self.n_clusters)
        lab_pos = _index_positions(index, labeled, who, "labelled") if len(labeled) else np.zeros(0, np.int64)
        self.labeled = np.bincount(self.assign[lab_pos], minlength=self.n_clusters)
        self.free = np.zeros(n, dtype=bool)
        self.free[self.cand_pos] = True
        self.free_count = np.bincount(self.assign[self.cand_pos], minlength=self.n_clusters)
        self.id_of_pos = np.full(n, -1, dtype=np.int64)
        self.id_of_pos[self.cand_pos] = self.cand_ids
        self.min_size = min_size
        order = np.argsort(self.assign, kind="stable")
        starts = np.searchsorted(self.assign[order], np.arange(self.n_clusters + 1))
        self._members = [order[starts[c]:starts[c + 1]] for c in range(self.n_clusters)]

    def members(self, c: int) -> np.ndarray:
        return self._members[c]

    def next_cluster(self) -> int:
        """The cluster with the fewest labels (largest first, then lowest number) that still has a free
        candidate; clusters under ``min_size`` only when no other is left (TypiClust skips tiny ones)."""
        open_ = self.free_count > 0
        big = open_ & (self.sizes >= self.min_size)
        allowed = big if big.any() else open_
        c = np.flatnonzero(allowed)
        best = np.lexsort((c, -self.sizes[c], self.labeled[c]))[0]
        return int(c[best])

    def take(self, c: int, pos: int) -> int:
        self.free[pos] = False
        self.free_count[c] -= 1
        self.labeled[c] += 1
        return int(self.id_of_pos[pos])


class _ClusterPicker:
    """TypiClust's loop, with the choice inside a cluster left to :meth:`_pick`."""

    who = "TypiClust"

    def __init__(self, *, k: int = 20, min_cluster_size: int = 5, max_clusters: int = 500, n_iter: int = 20,
                 typicality_sample: int = 20_000, allow_fewer: bool = False) -> None:
        self.k = _positive_int(k, "k", self.who)
        self.min_cluster_size = _positive_int(min_cluster_size, "min_cluster_size", self.who)
        self.max_clusters = _positive_int(max_clusters, "max_clusters", self.who)
        self.n_iter = _positive_int(n_iter, "n_iter", self.who, low=0)
        # Typicality is a k-NN search inside one cluster: O(m^2) for m members. Above this many, the
        # neighbours are searched among a sample of the members (the density estimate barely moves).
        self.typicality_sample = _positive_int(typicality_sample, "typicality_sample", self.who, low=2)
        self.allow_fewer = allow_fewer

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        b = check_budget(state, budget, allow_fewer=self.allow_fewer)
        state.require_index(self.who)
        if b == 0:
            return _empty()
        # The paper's K = |L| + B, capped (Hacohen et al. cap it too) so that large budgets do not
        # split the pool into clusters of a few items, where "typical" means nothing.
        n_clusters = min(len(np.unique(state.labeled)) + b, self.max_clusters)
        clusters = _Clusters(state, n_clusters, self.who, rng=rng, n_iter=self.n_iter,
                             min_size=self.min_cluster_size)
        ids = np.empty(b, dtype=np.int64)
        scores = np.empty(b, dtype=np.float32)
        self._typical: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for t in range(b):
            c = clusters.next_cluster()
            pos, score = self._pick(state, clusters, c, rng)
            ids[t] = clusters.take(c, pos)
            scores[t] = score
        logger.info("%s: %d picks over %d clusters (sizes %d..%d)", self.who.lower(), b, clusters.n_clusters,
                    clusters.sizes.min(), clusters.sizes.max())
        return Selection(ids, scores, {"strategy": self.who.lower(), "clusters": clusters.n_clusters})

    def _typicalities(self, clusters: _Clusters, c: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(positions of cluster c's members, their typicality), computed once per cluster and selection."""
        if c not in self._typical:
            members = clusters.members(c)
            reference = None
            if len(members) > self.typicality_sample:
                reference = np.sort(rng.choice(len(members), self.typicality_sample, replace=False))
            typ = typicality(clusters.x[members], self.k, reference=reference)
            self._typical[c] = (members, typ)
        return self._typical[c]

    def _pick(self, state, clusters, c, rng) -> tuple[int, float]:
        members, typ = self._typicalities(clusters, c, rng)
        free = clusters.free[members]
        best = int(np.argmax(np.where(free, typ, -np.inf)))   # first maximum: the lowest position
        return int(members[best]), float(typ[best])


class TypiClust(_ClusterPicker):
    """TypiClust (Hacohen et al. 2022): the most typical unlabelled item of the least-labelled clusters.

    Clusters: k-means (:func:`curate.index.kmeans`, seeded by ``rng``) of the whole index into
    ``min(|labelled| + budget, max_clusters)`` clusters. Each pick goes to the cluster with the fewest
    labelled items (the largest on a tie), skipping clusters under ``min_cluster_size`` while others
    remain, and takes its candidate of highest typicality: ``1 / mean distance to its k nearest
    neighbours in the cluster``. Scores are typicalities. Needs no model: it can choose round 0.
    """

    who = "TypiClust"


class TypicalMargin(_ClusterPicker):
    """TypiClust's clusters and cluster order, and inside each cluster the candidate with the smallest
    margin (top-1 minus top-2 probability). Without probabilities (round 0) it is TypiClust.
    Scores are ``1 - margin`` (typicality without probabilities)."""

    who = "TypicalMargin"

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        self._margin = None if state.probs is None else _margins(state.require_probs(self.who))
        return super().select(state, budget, rng=rng)

    def _pick(self, state, clusters, c, rng) -> tuple[int, float]:
        if self._margin is None:
            return super()._pick(state, clusters, c, rng)
        members = clusters.members(c)
        free = members[clusters.free[members]]
        m = self._margin[clusters.id_of_pos[free]]
        best = int(np.argmin(m))
        return int(free[best]), float(1.0 - m[best])


class ProbCover:
    """ProbCover (Yehuda et al. 2022): greedy maximum coverage by balls of radius ``delta``.

    Item j's ball holds every item within L2 distance ``delta`` of it (on the index's unit vectors).
    Each pick is the candidate whose ball holds the most items not yet covered by the ball of a
    labelled or picked item; ties go to the lowest position, and once everything is covered the rest
    are drawn by ``rng``. Scores are the newly covered counts.

    ``delta=None`` chooses it as the paper does: the largest radius (to 0.01) at which a share
    ``purity`` of sampled items have balls inside one k-means cluster, with ``n_classes`` clusters.
    ``n_classes`` defaults to the width of the model's probabilities or the number of distinct labels;
    at round 0 with neither, give it. The ball graph is built once per index and radius and kept
    between rounds; it is an exact range search, O(n^2 d) time, so above ~10^5 items expect minutes.
    """

    def __init__(self, *, delta: float | None = None, purity: float = 0.95, n_classes: int | None = None,
                 purity_sample: int = 2000, allow_fewer: bool = False) -> None:
        if delta is not None and (isinstance(delta, bool) or not isinstance(delta, (int, float))
                                  or not 0 < delta <= 2):
            raise ConfigError(f"The 'delta' parameter of ProbCover must be in (0, 2] (an L2 distance between unit "
                              f"vectors) or null to choose it. Got {delta!r} instead.")
        if isinstance(purity, bool) or not isinstance(purity, (int, float)) or not 0 < purity <= 1:
            raise ConfigError(f"The 'purity' parameter of ProbCover must be in (0, 1]. Got {purity!r} instead.")
        self.delta = None if delta is None else float(delta)
        self.purity = float(purity)
        self.n_classes = None if n_classes is None else _positive_int(n_classes, "n_classes", "ProbCover", low=2)
        self.purity_sample = _positive_int(purity_sample, "purity_sample", "ProbCover", low=10)
        self.allow_fewer = allow_fewer
        self._graph: tuple | None = None   # (index, n, delta, offsets, neighbours, owners)

    def _classes(self, state: PoolState) -> int:
        if self.n_classes is not None:
            return self.n_classes
        if state.probs is not None:
            return max(2, int(np.asarray(state.probs).shape[1]))
        if state.labels is not None and len({str(v) for v in state.labels}) >= 2:
            return len({str(v) for v in state.labels})
        raise ConfigError("ProbCover chooses its radius from the number of classes, and round 0 has neither "
                          "labels nor a model: give n_classes (or delta) in the strategy's parameters.")

    def choose_delta(self, x: np.ndarray, n_classes: int, rng: np.random.Generator) -> float:
        """The largest radius in (0, 2] whose balls are pure for ``purity`` of a sample (bisection)."""
        import faiss

        _, assign = kmeans(x, min(n_classes, len(x)), rng=rng)
        sample = np.sort(rng.choice(len(x), min(self.purity_sample, len(x)), replace=False))
        flat = faiss.IndexFlatIP(x.shape[1])
        flat.add(x)

        def pure_share(delta: float) -> float:
            lims, _, found = flat.range_search(x[sample], 1.0 - delta * delta / 2.0)
            owner = np.repeat(np.arange(len(sample)), np.diff(lims.astype(np.int64)))
            impure = np.zeros(len(sample), dtype=bool)
            impure[owner[assign[found] != assign[sample][owner]]] = True
            return 1.0 - impure.mean()

        low, high = 0.0, 2.0
        while high - low > 0.01:
            mid = (low + high) / 2
            low, high = (mid, high) if pure_share(mid) >= self.purity else (low, mid)
        return max(low, 0.01)

    def _ball_graph(self, index, x: np.ndarray, state: PoolState):
        delta = self.delta
        cached = self._graph
        if cached is not None and cached[0] is index and cached[1] == len(x) and (delta is None or cached[2] == delta):
            return cached
        import faiss

        if delta is None:
            # Its own generator: the radius depends on the pool alone, and a cached graph leaves the
            # caller's rng stream as an uncached one would.
            delta = self.choose_delta(x, self._classes(state), np.random.default_rng(0))
        flat = faiss.IndexFlatIP(x.shape[1])
        flat.add(x)
        lims, _, found = flat.range_search(x, 1.0 - delta * delta / 2.0)
        lims = lims.astype(np.int64)
        owner = np.repeat(np.arange(len(x)), np.diff(lims))   # edge e: owner[e]'s ball holds found[e]
        self._graph = (index, len(x), delta, lims, found.astype(np.int64), owner)
        logger.info("probcover: delta %.3f, %.1f neighbours per item on average", delta, len(found) / max(1, len(x)))
        return self._graph

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        b = check_budget(state, budget, allow_fewer=self.allow_fewer)
        index = state.require_index("ProbCover")
        if b == 0:
            return _empty()
        x = np.ascontiguousarray(index.vectors, dtype=np.float32)
        _, _, delta, lims, found, owner = self._ball_graph(index, x, state)
        n = len(x)
        cand_ids, cand_pos = _candidates_by_position(index, state.candidates, "ProbCover")
        id_of_pos = np.full(n, -1, dtype=np.int64)
        id_of_pos[cand_pos] = cand_ids
        covered = np.zeros(n, dtype=bool)
        labeled = np.unique(np.asarray(state.labeled, dtype=np.int64))
        labeled = labeled[np.isin(labeled, index.ids)]
        if len(labeled):
            lab_pos = _index_positions(index, labeled, "ProbCover", "labelled")
            covered[found[np.isin(owner, lab_pos)]] = True
        # gain[v] = items in v's ball not yet covered; balls are symmetric (distance is), so covering u
        # lowers the gain of every v in u's ball by one.
        gain = np.bincount(owner[~covered[found]], minlength=n).astype(np.int64)
        allowed = np.zeros(n, dtype=bool)
        allowed[cand_pos] = True
        picks, scores = [], []
        for _ in range(b):
            score = np.where(allowed, gain, -1)
            best = int(np.argmax(score))
            if score[best] <= 0:
                break
            fresh = found[lims[best]:lims[best + 1]]
            fresh = fresh[~covered[fresh]]
            covered[fresh] = True
            hit = np.concatenate([found[lims[u]:lims[u + 1]] for u in fresh]) if len(fresh) else fresh
            np.subtract.at(gain, hit, 1)
            allowed[best] = False
            picks.append(best)
            scores.append(float(score[best]))
        if len(picks) < b:   # everything is covered: the paper's fallback, random candidates
            rest = rng.permutation(np.flatnonzero(allowed))[: b - len(picks)]
            picks.extend(int(p) for p in rest)
            scores.extend([0.0] * len(rest))
        logger.info("probcover: %d picks, %.1f%% of the pool covered", b, 100 * covered.mean())
        return Selection(id_of_pos[np.array(picks, dtype=np.int64)], np.array(scores, dtype=np.float32),
                         {"strategy": "probcover", "delta": delta, "coverage": float(covered.mean())})


class ClusterMargin:
    """Cluster-Margin (Citovsky et al. 2021) with k-means on the shortlist.

    The ``shortlist * budget`` candidates of smallest margin are clustered into ``budget`` k-means
    clusters (seeded by ``rng``); picks go round-robin over the clusters from the smallest up, each
    cluster giving its most uncertain item left. Large batches stay diverse without a pool-wide
    clustering. Scores are ``1 - margin``.
    """

    def __init__(self, *, shortlist: int = 10, n_iter: int = 20, allow_fewer: bool = False) -> None:
        self.shortlist = _positive_int(shortlist, "shortlist", "ClusterMargin")
        self.n_iter = _positive_int(n_iter, "n_iter", "ClusterMargin", low=0)
        self.allow_fewer = allow_fewer

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        b = check_budget(state, budget, allow_fewer=self.allow_fewer)
        probs = state.require_probs("ClusterMargin")
        index = state.require_index("ClusterMargin")
        if b == 0:
            return _empty()
        ids, pos = _candidates_by_position(index, state.candidates, "ClusterMargin")
        m = _margins(probs[ids])
        short = np.lexsort((pos, m))[: min(len(ids), self.shortlist * b)]   # smallest margin, then position
        _, assign = kmeans(np.ascontiguousarray(index.vectors[pos[short]], dtype=np.float32), min(b, len(short)),
                           rng=rng, n_iter=self.n_iter)
        sizes = np.bincount(assign)
        queues = [short[assign == c] for c in np.lexsort((np.arange(len(sizes)), sizes)) if sizes[c]]
        picks: list[int] = []
        depth = 0
        while len(picks) < b:
            for q in queues:
                if depth < len(q) and len(picks) < b:
                    picks.append(int(q[depth]))
            depth += 1
        chosen = np.array(picks, dtype=np.int64)
        return Selection(ids[chosen], (1.0 - m[chosen]).astype(np.float32),
                         {"strategy": "cluster_margin", "clusters": len(queues)})


class BudgetSwitch:
    """One strategy while labels are few, another after: ``low`` while the labelled items number fewer
    than ``per_class`` times the number of classes (or ``at`` labels when given), ``high`` after.

    The classes are the width of the model's probabilities (none at round 0: ``low``). The crossover
    from typical to uncertain picks depends on the data (Hacohen et al. 2022 find it at a few to tens
    of labels per class); ``per_class=10`` is a starting point, not a tuned constant.
    """

    def __init__(self, low: Strategy, high: Strategy, *, per_class: int = 10, at: int | None = None) -> None:
        self.low, self.high = low, high
        self.per_class = _positive_int(per_class, "per_class", "BudgetSwitch")
        self.at = None if at is None else _positive_int(at, "at", "BudgetSwitch", low=0)

    def threshold(self, state: PoolState) -> int | None:
        if self.at is not None:
            return self.at
        if state.probs is None:
            return None
        return self.per_class * int(np.asarray(state.probs).shape[1])

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        limit = self.threshold(state)
        labelled = len(np.unique(state.labeled))
        use_low = state.probs is None or limit is None or labelled < limit
        chosen = self.low if use_low else self.high
        sel = chosen.select(state, budget, rng=rng)
        return Selection(sel.ids, sel.scores, {**sel.info, "phase": "low" if use_low else "high", "switch_at": limit})
