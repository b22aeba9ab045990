"""The speed table: selection time and peak memory per strategy at large pool sizes, on synthetic data.

Unit vectors from a Gaussian mixture (dim 384 by default; 1M x 384 float32 = 1.5 GB) and model-like
class probabilities stand in for a real pool: a selection's cost depends on the pool's size and
shape, not on what the texts say. Each strategy selects ``budget`` items once (best of ``repeats``)
after ``labeled`` random items are labelled; peak memory is the tracemalloc peak of one call (numpy
and Python allocations; BLAS and FAISS work buffers are not counted). Strategies (peers included,
``small-text:...``) above their ``max_size`` are skipped and marked so. Pin BLAS threads for stable
numbers (``curate bench speed --threads 1``); the machine's load average is recorded with each row.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["mixture", "probabilities", "run_speed"]

MIB = 1024 * 1024


def mixture(n: int, d: int, seed: int, clusters: int = 1000, spread: float = 0.6) -> np.ndarray:
    """Unit vectors from a Gaussian mixture, generated in float32 blocks (no float64 N x d copy)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        block = centers[rng.integers(clusters, size=e - s)]
        block += (spread / np.sqrt(d)) * rng.standard_normal((e - s, d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[s:e] = block
    return x


def probabilities(n: int, c: int, seed: int) -> np.ndarray:
    """Model-like float32 class probabilities (a softmax of scaled Gaussian logits)."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.standard_normal((n, c), dtype=np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return p


def _measure(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best wall seconds of ``repeats`` calls, tracemalloc peak MiB of one more call)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        clock = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - clock)
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return best, peak / MIB


def run_speed(speed, out: str | Path, *, strategy_factory: Callable[[str], object] | None = None,
              progress: Callable[[str], None] | None = None, sizes: list[int] | None = None):
    """Time every strategy of ``speed`` (a :class:`~curate.bench.config.SpeedConfig`) at every size; writes
    ``speed.parquet`` and ``speed.csv`` under ``out`` and returns the table."""
    import pandas as pd

    from curate.acquire.base import PoolState
    from curate.index import EmbeddingIndex

    say = progress or (lambda line: None)
    factory = strategy_factory or _default_factory
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sizes or speed.sizes:
        wanted = [s for s in speed.strategies if n <= speed.max_size.get(s, n)]
        skipped = [s for s in speed.strategies if s not in wanted]
        for s in skipped:
            rows.append(_row(speed, s, n, float("nan"), float("nan"), skipped=True,
                             note=f"above max_size {speed.max_size[s]:,}"))
        if not wanted:
            continue
        clock = time.perf_counter()
        x = mixture(n, speed.dim, seed=0)
        probs = probabilities(n, speed.classes, seed=1)
        index = EmbeddingIndex.from_vectors(x, kind="flat")
        labeled = np.sort(np.random.default_rng(2).choice(n, size=min(speed.labeled, n - speed.budget), replace=False))
        state = PoolState(size=n, labeled=labeled, index=index, probs=probs)
        say(f"[speed N={n:,}] data ready in {time.perf_counter() - clock:.1f}s; load {_load()}")
        for s in wanted:
            strategy = factory(s)

            def call(strategy=strategy, state=state):
                return strategy.select(state, speed.budget, rng=np.random.default_rng(0))

            seconds, peak = _measure(call, speed.repeats)
            rows.append(_row(speed, s, n, seconds, peak))
            say(f"[speed N={n:,}] {s:<28} {seconds:9.3f} s  peak {peak:9.1f} MiB  (load {_load()})")
        del x, probs, index, state
        gc.collect()
        _write(pd.DataFrame(rows), out)
    table = pd.DataFrame(rows)
    _write(table, out)
    return table


def _default_factory(name: str):
    from curate.bench.cells import PEER_PREFIX

    if name.startswith(PEER_PREFIX):
        from curate.bench.peers import SmallTextStrategy

        return SmallTextStrategy(name[len(PEER_PREFIX):])
    from curate.acquire import make_strategy

    return make_strategy(name)


def _row(speed, strategy: str, n: int, seconds: float, peak: float, *, skipped: bool = False, note: str = "") -> dict:
    return {"strategy": strategy, "size": n, "seconds": seconds, "peak_mib": peak, "budget": speed.budget,
            "labeled": speed.labeled, "dim": speed.dim, "classes": speed.classes, "repeats": speed.repeats,
            "skipped": skipped, "note": note, "load_average": _load()}


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _write(table, out: Path) -> None:
    for suffix, write in ((".parquet", lambda p: table.to_parquet(p, index=False)),
                          (".csv", lambda p: table.to_csv(p, index=False))):
        tmp = out / f"speed{suffix}.tmp"
        write(tmp)
        tmp.replace(out / f"speed{suffix}")
