"""Sentence embedders, with a persistent cache keyed by content hash and model name.

``load_embedder()`` gives the embedded all-MiniLM-L6-v2 (or any sentence-transformers model id or
path) wrapped in a :class:`CachedEmbedder`, so a re-run embeds nothing twice. Vectors are float32
and L2-normalised, so inner product is cosine similarity throughout curate.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from curate.errors import ConfigError
from curate.models import DEFAULT_EMBEDDER, cache_dir, resolve_embedder
from curate.progress import enabled as progress_enabled

__all__ = ["CachedEmbedder", "Embedder", "EmbeddingCache", "ExecutorEmbedder", "SentenceTransformerEmbedder",
           "load_embedder"]


@runtime_checkable
class Embedder(Protocol):
    """Texts in, ``(n, dim)`` float32 rows out; ``name`` identifies the model for caching."""

    name: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """Any sentence-transformers model; the model loads on first use, not at construction."""

    def __init__(self, model: str = DEFAULT_EMBEDDER, *, device: str | None = None, batch_size: int = 64,
                 normalize: bool = True) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self._st = None

    @property
    def name(self) -> str:
        return f"{self.model}|normalize={self.normalize}"

    def _load(self):
        if self._st is None:
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(resolve_embedder(self.model), device=self.device)
        return self._st

    @property
    def dim(self) -> int:
        model = self._load()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._load().encode(
            texts, batch_size=self.batch_size, normalize_embeddings=self.normalize,
            convert_to_numpy=True, show_progress_bar=progress_enabled() and len(texts) > 256,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class ExecutorEmbedder:
    """A :class:`SentenceTransformerEmbedder` whose ``encode`` runs on an executor's workers
    (:mod:`curate.executor`), each loading the model by name; same name, same vectors."""

    def __init__(self, embedder: SentenceTransformerEmbedder, executor) -> None:
        self.embedder = embedder
        self.executor = executor

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from curate.executor import embed_texts

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        e = self.embedder
        return embed_texts(texts, e.model, executor=self.executor, normalize=e.normalize, device=e.device,
                           batch_size=e.batch_size)

    def encode_stream(self, texts: Sequence[str]):
        """``(positions, rows)`` of each batch as the workers finish it (for a cache to keep at once)."""
        from curate.executor import embed_texts_stream

        e = self.embedder
        yield from embed_texts_stream(list(texts), e.model, executor=self.executor, normalize=e.normalize,
                                      device=e.device, batch_size=e.batch_size)


class EmbeddingCache:
    """Vectors stored in SQLite by (model name, sha256 of the text).

    SQLite (WAL) rather than loose files: writes are atomic, and several processes may share it.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "embeddings.sqlite"
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT, key BLOB, dim INTEGER, vec BLOB, "
                "PRIMARY KEY (model, key)) WITHOUT ROWID"
            )
            self._local.db = db
        return db

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()

    def get(self, model: str, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        db = self._db()
        chunk = 500  # below SQLite's bound-parameter limit
        for start in range(0, len(keys), chunk):
            part = list(keys[start:start + chunk])
            marks = ",".join("?" * len(part))
            rows = db.execute(f"SELECT key, vec FROM vectors WHERE model = ? AND key IN ({marks})", [model, *part])
            for key, vec in rows:
                found[key] = np.frombuffer(vec, dtype=np.float32)
        return found

    def put(self, model: str, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        rows = [(model, k, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes())
                for k, v in zip(keys, vectors, strict=True)]
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)

    def count(self, model: str | None = None) -> int:
        if model is None:
            return self._db().execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        return self._db().execute("SELECT COUNT(*) FROM vectors WHERE model = ?", [model]).fetchone()[0]


class CachedEmbedder:
    """Wraps any :class:`Embedder`: texts seen before (by content) are read from the cache, and
    identical texts within one call are embedded once."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache | None = None) -> None:
        self.embedder = embedder
        self.cache = cache if cache is not None else EmbeddingCache()
        self.last_hits = 0  # texts served from the cache by the latest encode(), for reporting

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ConfigError(f"encode() takes strings; item {i} is {type(t).__name__}: {t!r}.")
        keys = [EmbeddingCache.key(t) for t in texts]
        found = self.cache.get(self.name, list(dict.fromkeys(keys)))
        self.last_hits = sum(k in found for k in keys)
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if todo:
            todo_keys, todo_texts = list(todo), list(todo.values())
            stream = getattr(self.embedder, "encode_stream", None)
            # An embedder that streams is kept batch by batch as it arrives (a process killed mid-pool
            # embeds only the rest again); any other answers in one batch.
            batches = stream(todo_texts) if callable(stream) else [(np.arange(len(todo_texts)),
                                                                  self.embedder.encode(todo_texts))]
            for pos, rows in batches:
                batch = [todo_keys[p] for p in pos.tolist()]
                self.cache.put(self.name, batch, rows)
                found.update(zip(batch, rows, strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


def load_embedder(model: str = DEFAULT_EMBEDDER, *, cache: bool | str | Path = True, device: str | None = None,
                  batch_size: int = 64, executor=None) -> Embedder:
    """The embedder for ``model`` (default: the embedded all-MiniLM-L6-v2), cached unless ``cache=False``.

    ``cache`` may also be the path of the SQLite file to use. ``executor`` (:mod:`curate.executor`;
    None or local: in process) embeds what the cache lacks on its workers; the cache stays here.
    """
    base = SentenceTransformerEmbedder(model, device=device, batch_size=batch_size)
    if executor is not None and executor.kind != "local":
        base = ExecutorEmbedder(base, executor)
    if cache is False:
        return base
    return CachedEmbedder(base, EmbeddingCache(None if cache is True else cache))
