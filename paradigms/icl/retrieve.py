"""Demonstrations for each test input, from a labelled set.

``knn`` (KATE, Liu et al. 2022) takes the ``candidates`` labelled examples nearest to the input by
cosine similarity of their index vectors, then chooses ``k`` of them in preference order:

* preference is similarity, or with ``rerank`` the lower perplexity (in-pool selection, Margatina
  et al. 2023; Gonen et al. 2023): of the demonstration itself (``demo_perplexity``, computed once
  per example and cached) or of the input given the demonstration (``input_perplexity``, one score
  per pair);
* ``balance_labels`` caps each label at ``ceil(k / labels among the candidates)``;
* ``mmr`` (lambda) picks greedily by ``lambda * sim(input, d) - (1 - lambda) * max sim(d, chosen)``.

The chosen demonstrations come back most relevant first, relevance being similarity to the input
(so the prompt can put the most similar next to the input, and drop the least similar first when it
must). ``random`` draws ``k`` per input, ``fixed`` one draw for every input (relevance = draw order,
so every prompt shows the same demonstrations in the same order), ``zero_shot`` none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from curate.errors import ConfigError, DataError

from .config import RetrieveConfig
from .prompts import Demo

__all__ = ["DemonstrationRetriever"]

logger = logging.getLogger(__name__)

_QUERY_BLOCK = 1024  # queries compared with the labelled set per matrix product


class DemonstrationRetriever:
    """Chooses demonstrations from a labelled set.

    Args:
        config: :class:`~curate.paradigms.icl.config.RetrieveConfig`.
        index: an :class:`~curate.index.EmbeddingIndex` holding (at least) the labelled ids' vectors;
            only ``knn`` reads it (None is fine for ``random``, ``fixed`` and ``zero_shot``).
        ids / labels / texts: the labelled set, aligned.
        backend: the LM, for ``rerank`` (its ``perplexity``).
        builder: the :class:`~curate.paradigms.icl.prompts.PromptBuilder`, which renders what is
            scored when re-ranking by perplexity.
    """

    def __init__(self, config: RetrieveConfig, *, index, ids: Sequence[int] | np.ndarray, labels: Sequence[str],
                 texts: Sequence[str], backend=None, builder=None) -> None:
        self.config = config
        self.index = index
        self.ids = np.asarray(ids, dtype=np.int64)
        self.labels = [str(label) for label in labels]
        self.texts = list(texts)
        self.backend = backend
        self.builder = builder
        if not len(self.ids) == len(self.labels) == len(self.texts):
            raise DataError(f"ids, labels and texts of the labelled set must align; got {len(self.ids)}, "
                            f"{len(self.labels)} and {len(self.texts)}.")
        if len(np.unique(self.ids)) != len(self.ids):
            raise DataError("The labelled set's ids must be unique.")
        if config.rerank != "none" and (backend is None or builder is None):
            raise ConfigError(f"retrieve.rerank '{config.rerank}' needs the LM backend and the prompt builder "
                              "(backend=..., builder=...).")
        self.perplexity_: dict[int, float] = {}  # demo_perplexity per labelled id, filled on use

    # ---------------------------------------------------------------- public

    def retrieve(self, query_vectors: np.ndarray | None, *, query_texts: Sequence[str] | None = None,
                 exclude: Sequence[int | None] | None = None, rng: np.random.Generator | None = None) -> list[list[Demo]]:
        """Demonstrations for each query, most relevant first.

        Args:
            query_vectors: ``(n, dim)`` embeddings of the test inputs (``knn``; may be None otherwise,
                with ``query_texts`` giving n).
            query_texts: the inputs' texts (``input_perplexity`` scores them; otherwise they only count).
            exclude: per query, a labelled id it may not use (the query itself), or None.
            rng: draws for ``random`` and ``fixed``.
        """
        cfg = self.config
        n = len(query_vectors) if query_vectors is not None else len(query_texts or [])
        exclude = [None] * n if exclude is None else list(exclude)
        if len(exclude) != n:
            raise ConfigError(f"'exclude' must have one entry per query ({n}); got {len(exclude)}.")
        if cfg.method == "zero_shot" or cfg.k == 0:
            return [[] for _ in range(n)]
        if len(self.ids) == 0:
            raise DataError("The labelled set is empty: there is nothing to take demonstrations from.")
        if cfg.method in ("random", "fixed"):
            if rng is None:
                raise ConfigError(f"retrieve.method '{cfg.method}' needs an rng (np.random.Generator).")
            return self._random(n, exclude, rng)
        if query_vectors is None:
            raise ConfigError("retrieve.method 'knn' needs the query vectors.")
        if cfg.rerank == "input_perplexity" and (query_texts is None or len(query_texts) != n):
            raise ConfigError("retrieve.rerank 'input_perplexity' needs the query texts, one per query vector.")
        sims, cands = self._nearest(np.asarray(query_vectors), min(cfg.candidates, len(self.ids)), exclude)
        preference = self._preference(sims, cands, query_texts)
        out = []
        for row in range(n):
            usable = [p for p in preference[row] if cands[row][p] >= 0]  # -1 pads a short labelled set
            chosen = self._choose(usable, sims[row], cands[row])
            chosen.sort(key=lambda p: (-sims[row][p], cands[row][p]))  # relevance: most similar first
            out.append([self._demo(cands[row][p]) for p in chosen])
        return out

    # ---------------------------------------------------------------- steps

    def _demo(self, position: int) -> Demo:
        return Demo(int(self.ids[position]), self.texts[position], self.labels[position])

    def _nearest(self, queries: np.ndarray, m: int, exclude: list[int | None]) -> tuple[np.ndarray, np.ndarray]:
        """Similarities and labelled-set positions of each query's ``m`` nearest (``-1`` pads).

        When the index holds exactly the labelled set, its own search answers (exact for a flat
        index, HNSW/IVF at scale); otherwise the labelled vectors are compared with the queries
        directly, block by block.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        dim = self.index.dim
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise DataError(f"query vectors must have shape (n, {dim}); got {queries.shape}.")
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        position_of = {int(i): p for p, i in enumerate(self.ids.tolist())}
        sims = np.full((len(queries), m), -np.inf, dtype=np.float32)
        cands = np.full((len(queries), m), -1, dtype=np.int64)
        if self._index_is_labelled_set():
            width = min(m + 1, len(self.ids))  # one spare for an excluded id
            scores, found = self.index.search(queries, width)
            for r, own in enumerate(exclude):
                keep = [(s, position_of[int(i)]) for s, i in zip(scores[r], found[r], strict=True)
                        if i >= 0 and (own is None or int(i) != int(own))][:m]
                for c, (s, p) in enumerate(keep):
                    sims[r, c], cands[r, c] = s, p
            return sims, cands
        vectors = self._vectors()
        for b0 in range(0, len(queries), _QUERY_BLOCK):
            block = queries[b0:b0 + _QUERY_BLOCK] @ vectors.T
            for r, own in enumerate(exclude[b0:b0 + _QUERY_BLOCK]):
                if own is not None and int(own) in position_of:
                    block[r, position_of[int(own)]] = -np.inf
            top = np.argpartition(-block, m - 1, axis=1)[:, :m] if m < block.shape[1] else \
                np.broadcast_to(np.arange(block.shape[1]), block.shape).copy()
            s = np.take_along_axis(block, top, axis=1)
            # Best first; equal similarities in labelled-set order.
            order = np.lexsort((top, -s), axis=1)
            top, s = np.take_along_axis(top, order, axis=1), np.take_along_axis(s, order, axis=1)
            ok = np.isfinite(s)
            sims[b0:b0 + len(block)] = np.where(ok, s, -np.inf)
            cands[b0:b0 + len(block)] = np.where(ok, top, -1)
        return sims, cands

    def _index_is_labelled_set(self) -> bool:
        if getattr(self, "_same_ids_", None) is None:
            self._same_ids_ = len(self.index) == len(self.ids) and bool(
                np.array_equal(np.sort(self.index.ids), np.sort(self.ids)))
        return self._same_ids_

    def _vectors(self) -> np.ndarray:
        if getattr(self, "_vectors_", None) is None:
            try:
                self._vectors_ = np.ascontiguousarray(self.index.vectors_of(self.ids), dtype=np.float32)
            except DataError as err:
                raise DataError(f"Every labelled id must be in the embedding index: {err} Index the labelled "
                                "set (or the whole pool) first.") from None
        return self._vectors_

    def _preference(self, sims: np.ndarray, cands: np.ndarray, query_texts) -> list[list[int]]:
        """Per query, candidate columns in preference order (best first)."""
        rerank = self.config.rerank
        if rerank == "none":
            return [list(range(sims.shape[1])) for _ in range(len(sims))]  # already by similarity
        if rerank == "demo_perplexity":
            self._demo_perplexities({int(p) for p in cands[cands >= 0].tolist()})
            ppl = np.array([[self.perplexity_.get(int(self.ids[p]), np.inf) if p >= 0 else np.inf for p in row]
                            for row in cands])
        else:
            ppl = self._input_perplexities(cands, query_texts)
        # Lower perplexity first; equal perplexities keep the similarity order.
        return [list(np.lexsort((np.arange(len(row)), row))) for row in ppl]

    def _demo_perplexities(self, positions: set[int]) -> None:
        todo = sorted(p for p in positions if int(self.ids[p]) not in self.perplexity_)
        if not todo:
            return
        texts = [self.builder.demonstration(self._demo(p)) for p in todo]
        values = np.asarray(self.backend.perplexity(texts), dtype=np.float64)
        self.perplexity_.update({int(self.ids[p]): float(v) for p, v in zip(todo, values, strict=True)})
        logger.info("demo perplexity: scored %d labelled examples (%d cached)", len(todo), len(self.perplexity_))

    def _input_perplexities(self, cands: np.ndarray, query_texts) -> np.ndarray:
        pairs = [(r, c) for r in range(cands.shape[0]) for c in range(cands.shape[1]) if cands[r, c] >= 0]
        sep = self.builder.config.separator
        prompts = [self.builder.demonstration(self._demo(cands[r, c])) + sep for r, c in pairs]
        texts = [self.builder.query(query_texts[r]) for r, _ in pairs]
        values = np.asarray(self.backend.perplexity(texts, prompts), dtype=np.float64) if pairs else np.zeros(0)
        out = np.full(cands.shape, np.inf)
        for (r, c), v in zip(pairs, values, strict=True):
            out[r, c] = v
        return out

    def _choose(self, preference: list[int], sims: np.ndarray, cands: np.ndarray) -> list[int]:
        """``k`` candidate columns: in preference order, or by MMR; label caps when balancing."""
        cfg = self.config
        k = min(cfg.k, len(preference))
        cap = self._cap([cands[p] for p in preference], k)
        mmr = cfg.mmr
        vectors = self._vectors()[cands[preference]] if mmr is not None and preference else None
        chosen: list[int] = []
        counts: dict[str, int] = {}
        closest = np.full(len(preference), -np.inf)  # MMR: max similarity to anything chosen so far
        while len(chosen) < k:
            free = [j for j, p in enumerate(preference) if p not in chosen]
            allowed = [j for j in free if counts.get(self.labels[cands[preference[j]]], 0) < cap] or free
            if mmr is None:
                j = allowed[0]
            else:
                gains = [mmr * sims[preference[j]] - (1 - mmr) * (closest[j] if chosen else 0.0) for j in allowed]
                j = allowed[int(np.argmax(gains))]  # first maximum: ties keep the preference order
                np.maximum(closest, vectors @ vectors[j], out=closest)
            p = preference[j]
            chosen.append(p)
            label = self.labels[cands[p]]
            counts[label] = counts.get(label, 0) + 1
        return chosen

    def _cap(self, positions: Sequence[int], k: int) -> int:
        if not self.config.balance_labels:
            return k
        present = len({self.labels[p] for p in positions})
        return max(1, math.ceil(k / max(present, 1)))

    def _random(self, n: int, exclude: list[int | None], rng: np.random.Generator) -> list[list[Demo]]:
        cfg = self.config
        if cfg.method == "fixed":
            draw = self._draw(rng, None)
            return [list(draw) for _ in range(n)]
        return [self._draw(rng, own) for own in exclude]

    def _draw(self, rng: np.random.Generator, own: int | None) -> list[Demo]:
        """``k`` labelled examples in a random order (label caps when balancing); draw order = relevance."""
        order = rng.permutation(len(self.ids))
        if own is not None:
            order = order[self.ids[order] != int(own)]
        k = min(self.config.k, len(order))
        cap = self._cap(order.tolist(), k)
        chosen, counts = [], {}
        for p in order.tolist():
            if counts.get(self.labels[p], 0) < cap:
                chosen.append(p)
                counts[self.labels[p]] = counts.get(self.labels[p], 0) + 1
                if len(chosen) == k:
                    break
        for p in order.tolist():  # caps that cannot all be met (too few labels): fill with the rest
            if len(chosen) == k:
                break
            if p not in chosen:
                chosen.append(p)
        return [self._demo(p) for p in chosen]
