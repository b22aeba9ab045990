"""One-shot curation of an instruction set, no training loop: score every pair, then take the best
while keeping the picks apart (DEITA's score-first, diversity-aware selection, Liu et al. 2024).

Scores (higher = keep first):

* ``ifd``: instruction-following difficulty, ppl(response | prompt) / ppl(response), computed by a
  small scorer model (Superfiltering, Li et al. 2024: a small model's IFD ranks like a big one's).
  Pairs with IFD >= 1 (the prompt does not help predict the response: often misaligned) are dropped.
* ``ask_llm``: P("yes") that the pair is informative and well-formed, asked of the scorer (Ask-LLM).
* ``length``: the response's length in words (long responses are a strong baseline for alignment data).

With several scores, each is turned into its percentile rank and the ranks are averaged with the
given weights, so no score's scale dominates. Selection walks down the ranking and keeps a pair
only if its prompt embedding's cosine distance to every pair kept so far is above ``min_distance``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from curate.errors import ConfigError
from curate.progress import progress

__all__ = ["SCORES", "combine_scores", "curate_instructions", "diverse_top", "score_pairs"]

logger = logging.getLogger(__name__)

SCORES = ("ifd", "ask_llm", "length")


def score_pairs(pool, names: Sequence[str], *, backend=None, chat: bool = True) -> dict[str, np.ndarray]:
    """Every requested score for every pair of ``pool`` (``prompt`` and ``response`` roles)."""
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise ConfigError(f"Unknown score(s) {unknown}. Known: {', '.join(SCORES)}.")
    if not {"prompt", "response"} <= set(pool.roles):
        raise ConfigError(f"One-shot curation needs 'prompt' and 'response' columns; the pool has roles {pool.roles}.")
    ids = np.arange(len(pool), dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "length":
            out[name] = np.array([len(str(r).split()) for r in pool.column("response")], dtype=np.float64)
            continue
        if backend is None:
            raise ConfigError(f"The '{name}' score needs a scorer LM backend.")
        from curate.acquire.llm import IFD, AskLLM

        scorer = IFD(backend, drop_above=None, chat=chat) if name == "ifd" else AskLLM(backend, chat=chat)
        values = []
        chunks = [ids[k:k + 64] for k in range(0, len(ids), 64)]
        for chunk in progress(chunks, total=len(chunks), desc=f"scoring {name}", unit="chunk"):
            values.append(scorer.values(pool, chunk) if name == "ifd" else
                          scorer.score(_state(pool), chunk))
        out[name] = np.concatenate(values).astype(np.float64)
        if name == "ifd":
            out[name] = np.where(out[name] >= 1.0, -np.inf, out[name])  # the prompt does not help: drop
    return out


def _state(pool):
    from curate.acquire.base import PoolState

    return PoolState.of(pool)


def combine_scores(scores: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Weighted mean of percentile ranks (0..1); ``-inf`` in any score (a dropped pair) stays ``-inf``."""
    if not scores:
        raise ConfigError("combine_scores got no scores.")
    weights = {k: float((weights or {}).get(k, 1.0)) for k in scores}
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"Score weights must be non-negative and not all zero. Got {weights}.")
    n = len(next(iter(scores.values())))
    total = np.zeros(n)
    dropped = np.zeros(n, dtype=bool)
    for name, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        if len(values) != n:
            raise ConfigError(f"Score '{name}' has {len(values)} values; the others have {n}.")
        dropped |= ~np.isfinite(values)
        order = np.argsort(np.argsort(np.where(np.isfinite(values), values, -np.inf), kind="stable"), kind="stable")
        total += weights[name] * order / max(n - 1, 1)
    total /= sum(weights.values())
    return np.where(dropped, -np.inf, total)


def diverse_top(scores: np.ndarray, vectors: np.ndarray, budget: int, *, min_distance: float) -> np.ndarray:
    """Indices of up to ``budget`` rows, best score first, each at cosine distance > ``min_distance``
    from every row taken before it. Rows scored ``-inf`` are never taken."""
    if not 0 <= min_distance < 2:
        raise ConfigError(f"min_distance is a cosine distance in [0, 2). Got {min_distance!r} instead.")
    if budget < 1:
        raise ConfigError(f"The budget must be at least 1. Got {budget} instead.")
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms == 0, 1, norms)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    taken: list[int] = []
    kept = np.empty((min(budget, len(v)), v.shape[1]), dtype=np.float32)
    for i in order:
        if not np.isfinite(scores[i]) or len(taken) == budget:
            break
        if taken and float((kept[: len(taken)] @ v[i]).max()) >= 1.0 - min_distance:
            continue  # too close to a pair already taken
        kept[len(taken)] = v[i]
        taken.append(int(i))
    return np.asarray(taken, dtype=np.int64)


def curate_instructions(pool, *, budget: int, scores: Sequence[str] = ("ifd",), weights: Mapping[str, float] | None = None,
                        min_distance: float = 0.1, backend=None, embedder=None, chat: bool = True):
    """Score, rank and pick ``budget`` pairs; returns the picked rows (a ``datasets.Dataset``) with
    ``id``, ``rank``, ``score`` and one column per score, best first."""
    if embedder is None:
        from curate.embed import load_embedder

        embedder = load_embedder()
    values = score_pairs(pool, list(scores), backend=backend, chat=chat)
    combined = combine_scores(values, weights)
    vectors = embedder.encode([str(p) for p in pool.column("prompt")])
    picked = diverse_top(combined, vectors, budget, min_distance=min_distance)
    if len(picked) < budget:
        logger.warning("only %d pair(s) could be picked (budget %d): the rest were dropped (IFD >= 1) or closer than "
                       "min_distance=%.3g to a pick; lower min_distance for more", len(picked), budget, min_distance)
    rows = pool.select(picked)
    rows = rows.add_column("rank", list(range(1, len(picked) + 1)))
    rows = rows.add_column("score", [float(combined[i]) for i in picked])
    for name, vals in values.items():
        rows = rows.add_column(f"score_{name}", [float(vals[i]) for i in picked])
    return rows
