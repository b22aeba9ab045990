"""Embedding cache (content hash + model name) at the embedder seam, and the real MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from curate.embed import CachedEmbedder, EmbeddingCache, load_embedder


class CountingEmbedder:
    """A deterministic fake at the seam: a text's vector depends on its characters only."""

    def __init__(self, name: str = "fake", dim: int = 8) -> None:
        self.name = name
        self._dim = dim
        self.seen: list[str] = []

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts):
        self.seen += list(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for c in t.encode():
                out[r, c % self._dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_rerun_embeds_nothing_twice(tmp_path):
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, EmbeddingCache(tmp_path / "e.sqlite"))
    first = cached.encode(["a", "bb", "a", "ccc"])
    assert inner.seen == ["a", "bb", "ccc"]  # duplicates within a call embedded once
    again = cached.encode(["ccc", "a", "dddd"])
    assert inner.seen == ["a", "bb", "ccc", "dddd"]
    assert cached.last_hits == 2
    np.testing.assert_array_equal(again[:2], first[[3, 0]])


def test_cache_persists_across_instances_and_separates_models(tmp_path):
    path = tmp_path / "e.sqlite"
    CachedEmbedder(CountingEmbedder("m1"), EmbeddingCache(path)).encode(["x", "y"])
    second = CountingEmbedder("m1")
    CachedEmbedder(second, EmbeddingCache(path)).encode(["x", "y"])
    assert second.seen == []
    other = CountingEmbedder("m2")
    CachedEmbedder(other, EmbeddingCache(path)).encode(["x"])
    assert other.seen == ["x"]
    assert EmbeddingCache(path).count("m1") == 2 and EmbeddingCache(path).count() == 3


def test_non_string_input_is_an_error(tmp_path):
    cached = CachedEmbedder(CountingEmbedder(), EmbeddingCache(tmp_path / "e.sqlite"))
    with pytest.raises(ValueError, match="item 1 is int"):
        cached.encode(["ok", 3])
    assert cached.encode([]).shape == (0, 8)


@pytest.mark.real
def test_real_minilm(tmp_path):
    embedder = load_embedder(cache=tmp_path / "e.sqlite")
    texts = ["A wonderful, moving film.", "A beautiful and touching movie.", "The invoice is due on Friday."]
    v = embedder.encode(texts)
    assert v.shape == (3, 384) and v.dtype == np.float32 and embedder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    np.testing.assert_array_equal(embedder.encode(texts[:1]), v[:1])  # from the cache, bit-identical
    assert embedder.last_hits == 1


@pytest.mark.real
def test_index_from_pool_with_real_embedder(tmp_path):
    from curate.index import EmbeddingIndex
    from curate.pool import load_pool

    pool = load_pool([{"text": t} for t in ["cats purr", "dogs bark", "kittens meow softly", "stock prices fell"]])
    index = EmbeddingIndex.from_pool(pool, load_embedder(cache=tmp_path / "e.sqlite"))
    _, nbrs = index.neighbors([0], 1)
    assert nbrs[0, 0] == 2 and index.model.startswith("all-MiniLM-L6-v2")
