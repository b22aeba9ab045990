"""One FAISS-backed embedding index shared by every strategy and paradigm.

Vectors are L2-normalised float32, so inner product is cosine similarity. Below
``approximate_above`` vectors the index is exact (``IndexFlatIP``); above it, HNSW (or any FAISS
``index_factory`` string given as ``kind``). The raw vectors are kept alongside FAISS because
diversity strategies (k-center, k-means, BADGE) need them, and they make ``save``/``load`` exact.

FAISS positions are 0..n-1 in insertion order; ``ids`` maps them to pool ids, and ``-1`` means
"no neighbour", as in FAISS.

:func:`kmeans` is the one k-means of the project (k-means++ seeding, then FAISS Lloyd iterations):
the k-means strategy, SelectLLM's groups and the coverage report all cluster with it.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import ConfigError, DataError

__all__ = ["EmbeddingIndex", "kmeans"]

_FORMAT_VERSION = 1


def _faiss():
    import faiss

    return faiss


class EmbeddingIndex:
    """A cosine-similarity index over pool items.

    Args:
        dim: vector dimension.
        model: name of the embedder the vectors came from (stored, and checked on ``add_texts``).
        kind: ``"auto"`` (exact below ``approximate_above`` vectors at build time, HNSW above),
            ``"flat"``, ``"hnsw"``, ``"ivf"``, or a FAISS ``index_factory`` string.
        approximate_above: the size at which ``"auto"`` switches to an approximate index.
        ef_search / nprobe: query-time accuracy knobs of HNSW / IVF. ``ef_search=None`` picks by
            size at build time: 128 up to 200k vectors, 512 above (measured on 384-d clustered
            data: recall@10 0.956 at 100k with 128; at 1M, 0.914 with 128 and 0.964 with 512).
    """

    def __init__(self, dim: int, *, model: str = "", kind: str = "auto", approximate_above: int = 50_000,
                 ef_search: int | None = None, nprobe: int = 32, normalize: bool = True) -> None:
        if dim <= 0:
            raise ConfigError(f"The 'dim' parameter of EmbeddingIndex must be positive. Got {dim} instead.")
        self.dim = int(dim)
        self.model = model
        self.kind = kind
        self.approximate_above = int(approximate_above)
        self.ef_search = None if ef_search is None else int(ef_search)
        self.nprobe = int(nprobe)
        self.normalize = normalize
        self.factory_: str | None = None
        self._index = None
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._pos_of: dict[int, int] = {}

    # ---------------------------------------------------------------- building

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, ids: Sequence[int] | np.ndarray | None = None, **kwargs) -> EmbeddingIndex:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise DataError(f"vectors must be a 2-D array (n, dim); got shape {vectors.shape}.")
        index = cls(vectors.shape[1], **kwargs)
        index.add(vectors, ids)
        return index

    @classmethod
    def from_pool(cls, pool, embedder, **kwargs) -> EmbeddingIndex:
        """Embed every row of ``pool`` (cached by content) and index it under the pool's ids."""
        vectors = embedder.encode(pool.texts())
        return cls.from_vectors(vectors, pool.ids, model=embedder.name, **kwargs)

    def add(self, vectors: np.ndarray, ids: Sequence[int] | np.ndarray | None = None) -> None:
        """Append vectors under ``ids`` (default: continuing 0, 1, 2, ...). Ids must be new."""
        vectors = self._check_vectors(vectors, "vectors")
        if ids is None:
            start = int(self._ids.max()) + 1 if len(self._ids) else 0
            ids = np.arange(start, start + len(vectors), dtype=np.int64)
        ids = np.asarray(ids)
        if ids.ndim != 1 or len(ids) != len(vectors) or not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"ids must be {len(vectors)} integers (one per vector); got shape {ids.shape}, dtype {ids.dtype}.")
        ids = ids.astype(np.int64)
        if (ids < 0).any():
            raise DataError("ids must be non-negative (-1 means 'no neighbour' in results).")
        if len(np.unique(ids)) != len(ids):
            raise DataError("ids passed to add() contain duplicates.")
        clash = [int(i) for i in ids[:1000] if int(i) in self._pos_of] if self._pos_of else []
        if not clash and self._pos_of and len(ids) > 1000:
            clash = [int(i) for i in ids if int(i) in self._pos_of]
        if clash:
            raise DataError(f"ids already in the index: {clash[:5]}.")
        if len(vectors) == 0:
            return
        if self._index is None:
            self._index = self._new_index(len(vectors), vectors)
        self._index.add(vectors)
        base = len(self._ids)
        self._vectors = np.concatenate([self._vectors, vectors]) if len(self._vectors) else vectors
        self._ids = np.concatenate([self._ids, ids])
        self._pos_of.update(zip(ids.tolist(), range(base, base + len(ids)), strict=True))

    def _new_index(self, n: int, train: np.ndarray):
        faiss = _faiss()
        kind = self.kind
        if kind == "auto":
            kind = "flat" if n <= self.approximate_above else "hnsw"
        if kind == "flat":
            factory = "Flat"
        elif kind == "hnsw":
            factory = "HNSW32,Flat"
        elif kind == "ivf":
            nlist = int(min(max(16, 4 * np.sqrt(n)), max(16, n // 39)))  # FAISS wants >= 39 points per list
            factory = f"IVF{nlist},Flat"
        else:
            factory = kind
        try:
            index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise ConfigError(f"Bad index kind '{self.kind}': FAISS could not build '{factory}' ({err}).") from None
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efConstruction = max(80, index.hnsw.efConstruction)
            if self.ef_search is None:
                self.ef_search = 128 if n <= 200_000 else 512
        if not index.is_trained:
            index.train(train)
        self.factory_ = factory
        self._tune(index)
        return index

    def _tune(self, index) -> None:
        faiss = _faiss()
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = self.ef_search or 128
        ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
        if ivf is not None:
            ivf.nprobe = self.nprobe

    def _check_vectors(self, vectors: np.ndarray, what: str) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise DataError(f"{what} must have shape (n, {self.dim}); got {vectors.shape}.")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise DataError(f"{what} must be floating point; got {vectors.dtype}.")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise DataError(f"{what} contain NaN or infinite values.")
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            if (norms == 0).any():
                raise DataError(f"{what} contain all-zero rows, which have no direction to normalise.")
            vectors = vectors / norms
        return vectors

    # ---------------------------------------------------------------- reading

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        return self._ids.copy()

    @property
    def vectors(self) -> np.ndarray:
        """The stored (normalised) vectors, row i belonging to ``ids[i]``. Read-only view."""
        view = self._vectors.view()
        view.flags.writeable = False
        return view

    def positions(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        try:
            return np.fromiter((self._pos_of[int(i)] for i in np.asarray(ids).ravel()), dtype=np.int64)
        except KeyError as err:
            raise DataError(f"id {err.args[0]} is not in the index ({len(self)} ids).") from None

    def vectors_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._vectors[self.positions(ids)]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` cosine similarities and ids for each query row; ``-1`` ids pad missing results."""
        if k <= 0:
            raise ConfigError(f"The 'k' parameter of search must be positive. Got {k} instead.")
        queries = self._check_vectors(queries, "queries")
        if self._index is None or len(self) == 0:
            return (np.full((len(queries), k), -np.inf, dtype=np.float32), np.full((len(queries), k), -1, dtype=np.int64))
        scores, pos = self._index.search(queries, k)
        ids = np.where(pos >= 0, self._ids[np.clip(pos, 0, None)], -1)
        return scores, ids.astype(np.int64)

    def neighbors(self, ids: Sequence[int] | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest other items of each indexed id (the item itself excluded)."""
        ids = np.asarray(ids, dtype=np.int64)
        scores, found = self.search(self.vectors_of(ids), k + 1)
        out_s = np.full((len(ids), k), -np.inf, dtype=np.float32)
        out_i = np.full((len(ids), k), -1, dtype=np.int64)
        for row, own in enumerate(ids):
            keep = found[row] != own
            s, f = scores[row][keep][:k], found[row][keep][:k]
            out_s[row, : len(s)], out_i[row, : len(f)] = s, f
        return out_s, out_i

    def density(self, ids: Sequence[int] | np.ndarray | None = None, k: int = 10) -> np.ndarray:
        """Mean cosine similarity of each item to its ``k`` nearest neighbours (higher = denser region)."""
        ids = self._ids if ids is None else np.asarray(ids, dtype=np.int64)
        k = min(k, len(self) - 1)
        if k <= 0:
            return np.zeros(len(ids), dtype=np.float32)
        scores, found = self.neighbors(ids, k)
        scores = np.where(found >= 0, scores, np.nan)
        return np.nan_to_num(np.nanmean(scores, axis=1)).astype(np.float32)

    # ---------------------------------------------------------------- persistence

    def metadata(self) -> dict[str, Any]:
        return {"format_version": _FORMAT_VERSION, "model": self.model, "dim": self.dim, "normalize": self.normalize,
                "kind": self.kind, "factory": self.factory_, "count": len(self), "approximate_above": self.approximate_above,
                "ef_search": self.ef_search, "nprobe": self.nprobe}

    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``vectors.npy``, ``ids.npy`` and ``meta.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self._index is not None:
            _faiss().write_index(self._index, str(folder / "index.faiss.tmp"))
            os.replace(folder / "index.faiss.tmp", folder / "index.faiss")
        np.save(folder / "vectors.npy", self._vectors)
        np.save(folder / "ids.npy", self._ids)
        # meta.json last: its presence marks a complete save.
        (folder / "meta.json.tmp").write_text(json.dumps(self.metadata(), indent=2))
        os.replace(folder / "meta.json.tmp", folder / "meta.json")
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, mmap: bool = False) -> EmbeddingIndex:
        """A saved index, checked whole: every file there, readable, of the sizes ``meta.json``
        records, or a DataError naming the file and what is wrong (rebuild with ``curate index build``)."""
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not folder.is_dir():
            raise DataError(f"{folder}: not a saved index (no such folder). Build one with `curate index build`.")
        if not meta_path.exists():
            raise DataError(f"{folder}: not a saved index (no meta.json). Build one with `curate index build`.")
        meta = _read_meta(meta_path)
        if meta.get("format_version") != _FORMAT_VERSION:
            raise DataError(f"{folder}: index format {meta.get('format_version')} is not {_FORMAT_VERSION}; rebuild it.")
        try:
            index = cls(int(meta["dim"]), model=str(meta["model"]), kind=str(meta["kind"]),
                        approximate_above=int(meta["approximate_above"]), ef_search=meta["ef_search"],
                        nprobe=int(meta["nprobe"]), normalize=bool(meta["normalize"]))
            count, factory = int(meta["count"]), meta.get("factory")
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{meta_path}: not the metadata curate writes ({type(err).__name__}: {err}); rebuild the "
                            "index with `curate index build`.") from None
        index._vectors = _read_array(folder / "vectors.npy", mmap)
        index._ids = _read_array(folder / "ids.npy", False)
        if index._vectors.ndim != 2 or index._vectors.shape[1] != index.dim or index._ids.ndim != 1:
            raise DataError(f"{folder}: vectors.npy is {index._vectors.shape} and ids.npy {index._ids.shape}, not "
                            f"(count, {index.dim}) and (count,) as meta.json says; rebuild the index.")
        if len(index._ids) != count or len(index._vectors) != count:
            raise DataError(f"{folder}: meta.json says {count} vectors but the files hold "
                            f"{len(index._vectors)} vectors and {len(index._ids)} ids.")
        index._pos_of = dict(zip(index._ids.tolist(), range(len(index._ids)), strict=True))
        if len(index._pos_of) != len(index._ids):
            raise DataError(f"{folder / 'ids.npy'}: ids repeat; rebuild the index.")
        if (folder / "index.faiss").exists():
            try:
                index._index = _faiss().read_index(str(folder / "index.faiss"))
            except RuntimeError as err:
                raise DataError(f"{folder / 'index.faiss'}: FAISS cannot read it ({str(err).splitlines()[0][:200]}); "
                                "rebuild the index with `curate index build`.") from None
            if index._index.ntotal != count or index._index.d != index.dim:
                raise DataError(f"{folder / 'index.faiss'} holds {index._index.ntotal} vectors of dim {index._index.d}, "
                                f"not {count} of dim {index.dim}; rebuild the index.")
            index.factory_ = factory
            index._tune(index._index)
        return index


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: not readable JSON ({err}); rebuild the index with `curate index build`.") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: not the metadata curate writes (a JSON object); rebuild the index.")
    return meta


def _read_array(path: Path, mmap: bool) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path} is missing: the saved index is incomplete; rebuild it with `curate index build`.")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable array ({str(err)[:200]}); the saved index is damaged, rebuild it "
                        "with `curate index build`.") from None


# ---------------------------------------------------------------------------------------------- k-means


def kmeans(vectors: np.ndarray, k: int, *, rng: np.random.Generator, n_iter: int = 20,
           seed_sample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k-means of the rows of ``vectors`` into ``k`` clusters: ``(centroids, assignment)``.

    ``centroids`` is ``(k, d)`` float32, ``assignment`` the ``(n,)`` int64 number of each row's nearest
    centroid (squared L2, exact). The steps, every random choice drawn from ``rng`` so that a result
    depends only on the data and ``rng``:

    1. k-means++ seeding (Arthur & Vassilvitskii 2007) on ``seed_sample`` rows drawn without
       replacement (default ``max(32 * k, 10_000)``, all rows when there are fewer).
    2. ``n_iter`` Lloyd iterations by FAISS from those seeds, with a FAISS seed drawn from ``rng``
       (none is drawn when ``n_iter == 0``: the seeds are the centroids).
    3. The assignment of every row to its nearest centroid.

    Vectors need not be normalised. ``k`` may equal the number of rows. Clusters can come out empty
    (for instance when rows repeat); a caller that needs ``k`` non-empty groups refills them.
    """
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise DataError(f"The 'vectors' passed to kmeans must be a 2-D array (n, d); got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"The 'vectors' passed to kmeans must be floating point; got {x.dtype}.")
    n, d = x.shape
    if n == 0 or d == 0:
        raise DataError(f"kmeans needs at least one vector of at least one dimension; got shape {x.shape}.")
    k = _int_parameter(k, "k")
    if not 1 <= k <= n:
        raise ConfigError(f"The 'k' parameter of kmeans must be between 1 and the number of vectors ({n}). "
                          f"Got {k} instead.")
    n_iter = _int_parameter(n_iter, "n_iter")
    if n_iter < 0:
        raise ConfigError(f"The 'n_iter' parameter of kmeans must be >= 0. Got {n_iter} instead.")
    if seed_sample is None:
        # Seeding is k sequential passes over the sample in numpy, O(m k d): a sample of 32 rows per
        # centroid (10k at least, so small k still seeds on many rows) bounds that on large pools, and
        # the Lloyd iterations then see every row. A cluster with no row in the sample gets no seed.
        seed_sample = max(32 * k, 10_000)
    seed_sample = _int_parameter(seed_sample, "seed_sample")
    if seed_sample < k:
        raise ConfigError(f"The 'seed_sample' parameter of kmeans must be at least k ({k}): k-means++ "
                          f"seeds k distinct rows of the sample. Got {seed_sample} instead.")
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"The 'rng' parameter of kmeans must be a numpy Generator (np.random.default_rng(seed)). "
                          f"Got {type(rng).__name__} instead.")
    # FAISS reads C-contiguous float32 and only asserts on anything else; a copy only when needed.
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError("The 'vectors' passed to kmeans contain NaN or infinite values.")

    # The rng draws below, and their order, are part of the contract: KMeansCentroids' picks (and
    # its tests and benchmarks) depend on them. Seeding is ours rather than FAISS's random init
    # (k rows drawn uniformly): with few, unequal clusters, uniform draws often put two seeds in one
    # big cluster and none in a small one, and Lloyd iterations rarely move a centroid across the gap;
    # k-means++ draws each next seed proportionally to D^2, so well separated clusters each get one.
    # (The k-means++ init of recent FAISS, ``init_method``, draws from FAISS's own generator, on its
    # subsample: it would change KMeansCentroids' picks and not follow ``rng``.)
    sample = np.sort(rng.choice(n, size=min(n, seed_sample), replace=False))
    init = x[sample[_kmeanspp(x[sample], k, rng)]]
    if n_iter > 0:
        faiss = _faiss()
        # min_points_per_centroid=1: small pools are legitimate here, not a reason to warn on stderr.
        # FAISS trains on at most 256 rows per centroid (its default), subsampled with the seed below.
        km = faiss.Kmeans(d, k, niter=n_iter, seed=int(rng.integers(2**31 - 1)), verbose=False,
                          min_points_per_centroid=1)
        km.train(x, init_centroids=init)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    else:
        centroids = np.ascontiguousarray(init)
    return centroids, _nearest_centroid(centroids, x)


def _int_parameter(value, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ConfigError(f"The '{name}' parameter of kmeans must be an integer. Got {value!r} instead.") from None


def _nearest_centroid(centroids: np.ndarray, x: np.ndarray) -> np.ndarray:
    flat = _faiss().IndexFlatL2(centroids.shape[1])
    flat.add(centroids)
    _, found = flat.search(x, 1)
    return found[:, 0].astype(np.int64)


def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): rows of ``x``, each next one drawn with
    probability proportional to its squared distance to the nearest row drawn so far."""
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x).astype(np.float64)
    d2 = np.full(n, np.inf)
    picks = np.empty(k, dtype=np.int64)
    picks[0] = rng.integers(n)
    for t in range(1, k):
        c = picks[t - 1]
        np.minimum(d2, np.clip(sq + sq[c] - 2.0 * (x @ x[c]), 0.0, None), out=d2)
        d2[picks[:t]] = 0.0
        picks[t] = _draw_proportional(d2, picks[:t], rng)
    return picks


def _draw_proportional(weights: np.ndarray, taken: np.ndarray, rng: np.random.Generator) -> int:
    """One row drawn with probability proportional to ``weights`` (0 for the rows in ``taken``); when
    every weight is 0 (all remaining rows coincide with taken ones), uniformly among the others.

    Shared by k-means++ seeding here and BADGE (:mod:`curate.acquire.diversity`)."""
    cum = np.cumsum(weights)
    total = cum[-1]
    if not total > 0:
        free = np.setdiff1d(np.arange(len(weights)), taken)
        return int(free[rng.integers(len(free))])
    # side="right" skips zero-weight rows: a draw lands only where the cumulative sum rises.
    return int(min(np.searchsorted(cum, rng.random() * total, side="right"), len(weights) - 1))
