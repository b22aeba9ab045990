"""Acquisition benchmark: curate's selection strategies beside the plain way and beside small-text,
in one run on this machine, on synthetic unit vectors (a Gaussian mixture, d = 384).

    python -u bench/bench_acquire.py [--sizes 100000,1000000] [--quick] [--sections topk,kcenter,badge,peers]

Sections (for each pool size N unless said otherwise):

* topk: ``top_k`` on precomputed scores vs a bare ``numpy.argpartition`` (+ sorting the k picks), and
  ``TopK(ClassUncertainty(...))`` on given probabilities vs the same measure in plain numpy +
  argpartition; small-text's LeastConfidence / PredictionEntropy on the same probabilities beside them.
* kcenter: ``KCenterGreedy`` with k = 1000 vs the bandwidth floor, k x (N x d x 4 bytes) / bandwidth:
  the time to read the candidate matrix once per pick at the read bandwidth measured on that same
  matrix (the best of a one-thread sum, a two-thread sum, a BLAS and a torch matrix-vector product,
  so the floor is the strictest of them). At 1M (1.5 GB) that is DRAM bandwidth; a matrix that fits
  the L3 cache is read faster, and its floor is lower accordingly.
* badge: ``BADGE`` with C = 2 and 10 classes, k = 100; its peak memory beside the N x (d*C) float32
  matrix it never builds; small-text's BADGE beside it where that matrix fits in memory.
* peers: small-text's ``greedy_coreset`` (N = 10,000, k = 1000; it computes distances to every center
  at every pick) and curate's k-center on the same data from the same labelled center; the picks are
  compared, and any divergence is checked for being a float near-tie.

Memory is reported two ways: ``tracemalloc`` peak (numpy and Python allocations made during the call)
and the rise of the kernel's peak-RSS mark (VmHWM, reset before the call; includes BLAS/FAISS buffers).
Timed calls run without tracemalloc; memory comes from a separate call (or, for the long single runs,
the same call with tracemalloc on: a few small allocations per pick, negligible).

BLAS, OpenMP, torch and FAISS are pinned to THREADS threads. The machine is shared: the load average is
printed at the start and end and beside every long step, and ``others_cpu`` says what share of the CPUs
other processes used during a timed call. Writes everything to bench/out/acquire.json.
"""

from __future__ import annotations

import os

THREADS = 2
# Before numpy / torch / faiss load, so every library sees the same thread count.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(THREADS)
os.environ["CURATE_QUIET"] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

D = 384
SEED = 0
MIB = 1024 * 1024


# ---------------------------------------------------------------------------------------------- helpers


def log(msg: str = "") -> None:
    print(msg, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all processes)."""
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """(result, wall seconds, share of the machine's CPUs used by *other* processes meanwhile)."""
    busy0, own0 = _busy_cpu_s(), sum(os.times()[:2])
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    others = (_busy_cpu_s() - busy0) - (sum(os.times()[:2]) - own0)
    return out, dt, max(0.0, others) / (dt * (os.cpu_count() or 1))


def best_of(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, dict]:
    """Alternate the functions ``reps`` times (rotating who goes first); best and median per name."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    others: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # warm-up
        fns[name]()
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            _, dt, busy = timed(fns[name])
            times[name].append(dt)
            others[name].append(busy)
    return {n: {"best_s": min(times[n]), "median_s": float(np.median(times[n])), "others_cpu": float(np.mean(others[n]))}
            for n in names}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def with_memory(fn: Callable[[], object]) -> tuple[object, float, float, float, float]:
    """Run ``fn`` once under tracemalloc: (result, seconds, others_cpu, tracemalloc peak MiB, VmHWM rise MiB)."""
    gc.collect()
    base_rss = rss_mib()
    reset_peak_rss()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        out, dt, busy = timed(fn)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, dt, busy, peak / MIB, max(0.0, peak_rss_mib() - base_rss)


def versions() -> dict[str, str]:
    import faiss
    import threadpoolctl

    def version(dist: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(dist)
        except Exception:  # noqa: BLE001 - informative only
            return "not installed"

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    blas = [f"{i['internal_api']}:{i['num_threads']}" for i in threadpoolctl.threadpool_info()]
    return {"python": platform.python_version(), "numpy": np.__version__, "faiss": faiss.__version__,
            "torch": version("torch"), "small-text": version("small-text"), "scikit-learn": version("scikit-learn"),
            "curate": version("curate"), "cpu": cpu, "cpu_count": str(os.cpu_count()), "threadpools": ",".join(blas)}


# The synthetic data is curate bench's speed table's, so the two measure the same thing.
from curate.bench.speed import mixture, probabilities  # noqa: E402


def build_index(x: np.ndarray):
    from curate.index import EmbeddingIndex

    return EmbeddingIndex.from_vectors(x, kind="flat")


class FakeClassifier:
    """small-text's strategies ask a classifier for ``predict_proba``; this one returns given numbers."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def predict_proba(self, _dataset) -> np.ndarray:
        return self.probs


# ---------------------------------------------------------------------------------------------- bandwidth


def measure_bandwidth(x: np.ndarray, reps: int) -> dict:
    """Bytes per second reading ``x`` (C-contiguous float32, far larger than the caches) several ways."""
    import torch
    from threadpoolctl import threadpool_limits

    nbytes = x.nbytes
    v = np.ascontiguousarray(x[0])
    out = np.empty(len(x), dtype=np.float32)
    halves = [x[: len(x) // 2], x[len(x) // 2 :]]
    pool = ThreadPoolExecutor(2)

    def two_thread_sum():
        with threadpool_limits(1):
            list(pool.map(lambda part: np.add.reduce(part, axis=None), halves))

    xt, vt, ot = torch.from_numpy(x), torch.from_numpy(v), torch.from_numpy(out)
    res = best_of({
        "numpy sum (1 thread)": lambda: np.add.reduce(x, axis=None),
        "numpy sum (2 threads)": two_thread_sum,
        "BLAS sgemv X@v": lambda: np.dot(x, v, out=out),
        "torch mv": lambda: torch.mv(xt, vt, out=ot),
    }, reps)
    pool.shutdown()
    for name, r in res.items():
        r["gb_per_s"] = nbytes / r["best_s"] / 1e9
        log(f"[bandwidth] {name:<22} best {r['best_s'] * 1e3:7.1f} ms  {r['gb_per_s']:6.2f} GB/s  "
            f"(median {r['median_s'] * 1e3:.1f} ms, others {r['others_cpu']:.0%})")
    best = max(res, key=lambda n: res[n]["gb_per_s"])
    return {"matrix_bytes": nbytes, "methods": res, "best_method": best, "bytes_per_s": res[best]["gb_per_s"] * 1e9}


# ---------------------------------------------------------------------------------------------- top-k


def bench_topk(n: int, index, quick: bool, k: int = 1000) -> dict:
    from curate.acquire import ClassUncertainty, PoolState, TopK, top_k
    from curate.acquire.uncertainty import entropy, least_confidence

    reps = 3 if quick else 7
    probs = probabilities(n, 10, SEED + 1)
    state = PoolState(size=n, probs=probs, index=index)
    scores = entropy(probs)
    rng = np.random.default_rng(SEED)

    def bare_topk(s: np.ndarray) -> np.ndarray:
        part = np.argpartition(-s, k - 1)[:k]
        return part[np.argsort(-s[part], kind="stable")]

    def bare_entropy() -> np.ndarray:
        p = probs.astype(np.float64)
        return bare_topk(-(p * np.log(p + 1e-12)).sum(axis=1))

    def bare_lc() -> np.ndarray:
        return bare_topk(1.0 - probs.max(axis=1).astype(np.float64))

    ent, lc = TopK(ClassUncertainty("entropy")), TopK(ClassUncertainty("least_confidence"))
    fns = {
        "curate top_k(scores)": lambda: top_k(scores, k, rng),
        "argpartition(scores)": lambda: bare_topk(scores),
        "curate TopK(entropy)": lambda: ent.select(state, k, rng=rng),
        "numpy entropy+argpartition": bare_entropy,
        "curate TopK(least_confidence)": lambda: lc.select(state, k, rng=rng),
        "numpy least_conf+argpartition": bare_lc,
    }
    res = best_of(fns, reps)
    for name, fn in fns.items():
        _, _, _, tm, rss = with_memory(fn)
        res[name].update(tracemalloc_peak_mib=tm, rss_rise_mib=rss)

    # Same picks as the bare versions (as sets: ties are absent from continuous scores).
    agree = {
        "top_k": set(top_k(scores, k, rng).tolist()) == set(bare_topk(scores).tolist()),
        "entropy": set(ent.select(state, k, rng=rng).ids.tolist()) == set(bare_entropy().tolist()),
        "least_confidence": set(lc.select(state, k, rng=rng).ids.tolist()) == set(bare_lc().tolist()),
    }
    assert np.allclose(least_confidence(probs[:5]), 1 - probs[:5].max(axis=1))

    peers = {}
    try:
        from small_text.query_strategies import LeastConfidence, PredictionEntropy

        clf, unl, lab = FakeClassifier(probs), np.arange(n), np.zeros(0, dtype=np.int64)
        runs = [("small-text LeastConfidence", LeastConfidence(), lc)]
        if n <= 20_000:  # one scipy call per row: ~1.5 ms a row here, so only small pools (see peers)
            runs.append(("small-text PredictionEntropy", PredictionEntropy(), ent))
        else:
            peers["small-text PredictionEntropy"] = "skipped above N=20,000 (one scipy call per row); see peers"
        for name, strat, ours in runs:
            picked, dt, busy, tm, rss = with_memory(lambda s=strat: s.query(clf, None, unl, lab, None, n=k))
            same = set(np.asarray(picked).tolist()) == set(ours.select(state, k, rng=rng).ids.tolist())
            peers[name] = {"s": dt, "others_cpu": busy, "tracemalloc_peak_mib": tm, "rss_rise_mib": rss, "same_picks": same}
    except ImportError as err:
        peers["skipped"] = f"small-text not installed ({err})"

    for name, r in res.items():
        log(f"[topk N={n:,}] {name:<32} best {r['best_s'] * 1e3:8.2f} ms (median {r['median_s'] * 1e3:7.2f})  "
            f"tracemalloc {r['tracemalloc_peak_mib']:7.1f} MiB  rss+ {r['rss_rise_mib']:6.1f} MiB  others {r['others_cpu']:.0%}")
    for name, r in peers.items():
        if isinstance(r, dict):
            log(f"[topk N={n:,}] {name:<32} once {r['s'] * 1e3:8.2f} ms                     "
                f"tracemalloc {r['tracemalloc_peak_mib']:7.1f} MiB  rss+ {r['rss_rise_mib']:6.1f} MiB  same picks: {r['same_picks']}")
        else:
            log(f"[topk N={n:,}] {name}: {r}")
    log(f"[topk N={n:,}] picks equal to the bare versions: {agree}")
    return {
        "k": k, "classes": 10, "results": res, "peers": peers, "same_picks": agree,
        "summary": {
            f"topk.{n}.scores_ratio": res["curate top_k(scores)"]["best_s"] / res["argpartition(scores)"]["best_s"],
            f"topk.{n}.entropy_ratio": res["curate TopK(entropy)"]["best_s"] / res["numpy entropy+argpartition"]["best_s"],
            f"topk.{n}.lc_ratio": res["curate TopK(least_confidence)"]["best_s"] / res["numpy least_conf+argpartition"]["best_s"],
        },
    }


# ---------------------------------------------------------------------------------------------- k-center


def bench_kcenter(n: int, index, bandwidth: float, k: int) -> dict:
    from curate.acquire import PoolState
    from curate.acquire.diversity import KCenterGreedy

    state = PoolState(size=n, index=index)
    log(f"[kcenter N={n:,}] k={k}: running (load {loadavg()}) ...")
    sel, dt, busy, tm, rss = with_memory(lambda: KCenterGreedy().select(state, k, rng=np.random.default_rng(SEED)))
    # The machine is shared: read the matrix again right after, and hold the run to the better rate.
    after = measure_bandwidth(np.asarray(index.vectors), 3)["bytes_per_s"]
    log(f"[kcenter N={n:,}] bandwidth before {bandwidth / 1e9:.2f} GB/s, after {after / 1e9:.2f} GB/s: using the higher")
    bandwidth = max(bandwidth, after)
    floor = k * n * D * 4 / bandwidth
    matrix_mib = n * D * 4 / MIB
    log(f"[kcenter N={n:,}] {dt:8.2f} s; floor {floor:8.2f} s (k x {matrix_mib:,.0f} MiB at {bandwidth / 1e9:.2f} GB/s); "
        f"ratio {dt / floor:.3f}; tracemalloc {tm:,.1f} MiB, rss+ {rss:,.1f} MiB (matrix {matrix_mib:,.0f} MiB); "
        f"others {busy:.0%}; load {loadavg()}")
    return {"k": k, "s": dt, "floor_s": floor, "bandwidth_used": bandwidth, "bandwidth_after": after, "others_cpu": busy, "tracemalloc_peak_mib": tm, "rss_rise_mib": rss,
            "matrix_mib": matrix_mib, "last_score": float(sel.scores[-1]),
            "summary": {f"kcenter.{n}.floor_ratio": dt / floor}}


# ---------------------------------------------------------------------------------------------- BADGE


def bench_badge(n: int, index, k: int, classes: Sequence[int]) -> dict:
    from curate.acquire import PoolState
    from curate.acquire.diversity import BADGE

    out: dict = {"k": k, "summary": {}}
    avail_mib = _available_mib()
    for c in classes:
        probs = probabilities(n, c, SEED + c)
        state = PoolState(size=n, probs=probs, index=index)
        materialised_mib = n * D * c * 4 / MIB
        sel, dt, busy, tm, rss = with_memory(lambda s=state: BADGE().select(s, k, rng=np.random.default_rng(SEED)))
        row = {"s": dt, "others_cpu": busy, "tracemalloc_peak_mib": tm, "rss_rise_mib": rss,
               "materialised_float32_mib": materialised_mib, "picks": len(sel)}
        log(f"[badge N={n:,} C={c}] curate {dt:7.2f} s  tracemalloc {tm:8.1f} MiB  rss+ {rss:8.1f} MiB  "
            f"(N x d*C float32 would be {materialised_mib:,.0f} MiB)  others {busy:.0%}")
        # small-text builds the N x d*C embeddings in float64 (and copies the features per class).
        need_mib = n * D * max(c, 1) * 8 / MIB * (2 if c > 2 else 1) + n * D * 4 / MIB
        peer: dict
        if need_mib > 0.6 * avail_mib:
            peer = {"skipped": f"needs ~{need_mib:,.0f} MiB (N x d*C float64 + copies), {avail_mib:,.0f} MiB available"}
            log(f"[badge N={n:,} C={c}] small-text BADGE skipped: {peer['skipped']}")
        else:
            try:
                from small_text.integrations.pytorch.query_strategies import BADGE as StBADGE

                x = index.vectors
                unl, lab = np.arange(n), np.zeros(0, dtype=np.int64)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _, pdt, pbusy, ptm, prss = with_memory(
                        lambda p=probs, cc=c, u=unl, lb=lab, e=x: StBADGE(cc).sample(None, None, u, lb, None, k, e,
                                                                                    embeddings_proba=p))
                peer = {"s": pdt, "others_cpu": pbusy, "tracemalloc_peak_mib": ptm, "rss_rise_mib": prss}
                log(f"[badge N={n:,} C={c}] small-text {pdt:7.2f} s  tracemalloc {ptm:8.1f} MiB  rss+ {prss:8.1f} MiB  "
                    f"others {pbusy:.0%}")
            except ImportError as err:
                peer = {"skipped": f"small-text[pytorch] not importable ({err})"}
        row["small_text"] = peer
        out[f"C={c}"] = row
        out["summary"][f"badge.{n}.C{c}.memory_ratio"] = tm / materialised_mib
        del state, probs
        gc.collect()
    return out


def l3_cache_mib() -> float:
    try:
        for cache in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            if (cache / "level").read_text().strip() == "3":
                size = (cache / "size").read_text().strip()
                return float(size[:-1]) / 1024 if size.endswith("K") else float(size[:-1])
    except (OSError, ValueError):
        pass
    return float("nan")


def _available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------- peers


def bench_peers(n: int, k: int) -> dict:
    """small-text's greedy_coreset and curate's k-center, same data, same labelled start (the last row:
    small-text indexes new centers relative to the unlabelled ids, which equals x's rows only when the
    unlabelled ids are 0..n-2)."""
    from curate.acquire import PoolState
    from curate.acquire.diversity import KCenterGreedy

    x = mixture(n, D, SEED + 7)
    index = build_index(x)
    x = np.asarray(index.vectors)
    state = PoolState(size=n, index=index, labeled=[n - 1])
    ours, dt, busy, tm, rss = with_memory(lambda: KCenterGreedy().select(state, k, rng=np.random.default_rng(SEED)))
    log(f"[peers N={n:,}] curate k-center k={k}: {dt:.3f} s  tracemalloc {tm:.1f} MiB  rss+ {rss:.1f} MiB")
    out: dict = {"n": n, "k": k, "curate": {"s": dt, "others_cpu": busy, "tracemalloc_peak_mib": tm, "rss_rise_mib": rss}}
    try:
        from small_text.query_strategies.coresets import greedy_coreset
    except ImportError as err:
        out["small_text"] = {"skipped": f"small-text not installed ({err})"}
        return out
    log(f"[peers N={n:,}] small-text greedy_coreset k={k}: running (load {loadavg()}) ...")
    theirs, pdt, pbusy, ptm, prss = with_memory(lambda: greedy_coreset(
        x, np.arange(n - 1), np.array([n - 1]), k, distance_metric="euclidean", normalized=True))
    theirs = np.asarray(theirs, dtype=np.int64)
    log(f"[peers N={n:,}] small-text greedy_coreset: {pdt:.1f} s  tracemalloc {ptm:.1f} MiB  rss+ {prss:.1f} MiB  "
        f"others {pbusy:.0%}")
    agreement = compare_kcenter(x, [n - 1], ours.ids, theirs)
    log(f"[peers N={n:,}] picks: {agreement['verdict']}")
    out["small_text"] = {"s": pdt, "others_cpu": pbusy, "tracemalloc_peak_mib": ptm, "rss_rise_mib": prss}
    out["agreement"] = agreement
    out["summary"] = {f"peers.{n}.speedup_vs_small_text": pdt / dt,
                      f"peers.{n}.picks_agree": 1.0 if agreement["agree"] else 0.0}
    out["entropy"] = peer_entropy(n, index, k)
    return out


def peer_entropy(n: int, index, k: int) -> dict:
    """small-text's PredictionEntropy (one scipy call per row) beside curate's TopK(entropy), same probs."""
    from small_text.query_strategies import PredictionEntropy

    from curate.acquire import ClassUncertainty, PoolState, TopK

    probs = probabilities(n, 10, SEED + 1)
    state = PoolState(size=n, probs=probs, index=index)
    ours, dt, _, tm, _ = with_memory(lambda: TopK(ClassUncertainty("entropy")).select(state, k, rng=np.random.default_rng(0)))
    theirs, pdt, pbusy, ptm, _ = with_memory(lambda: PredictionEntropy().query(
        FakeClassifier(probs), None, np.arange(n), np.zeros(0, dtype=np.int64), None, n=k))
    same = set(np.asarray(theirs).tolist()) == set(ours.ids.tolist())
    log(f"[peers N={n:,}] entropy top-{k}: curate {dt * 1e3:.2f} ms ({tm:.1f} MiB), small-text PredictionEntropy "
        f"{pdt * 1e3:,.0f} ms ({ptm:.1f} MiB), same picks: {same}")
    return {"curate_s": dt, "small_text_s": pdt, "others_cpu": pbusy, "same_picks": same,
            "curate_tracemalloc_mib": tm, "small_text_tracemalloc_mib": ptm}


def compare_kcenter(x: np.ndarray, start: list[int], a: np.ndarray, b: np.ndarray, rel_tol: float = 1e-5) -> dict:
    """Where two k-center pick sequences first differ, and whether that step was a float near-tie
    (both picks at the same min distance to the shared centers, within ``rel_tol``)."""
    same = int(np.argmin(np.r_[a == b, False])) if len(a) == len(b) else 0
    if same == len(a):
        return {"agree": True, "identical": True, "common_prefix": same, "verdict": f"identical ({same} picks)"}
    centers = x[np.r_[start, a[:same]].astype(np.int64)].astype(np.float64)

    def min_dist(i: int) -> float:
        return float((((centers - x[i].astype(np.float64)) ** 2).sum(axis=1)).min())

    da, db = min_dist(int(a[same])), min_dist(int(b[same]))
    near_tie = abs(da - db) <= rel_tol * max(da, db)
    verdict = (f"first {same} picks identical; at pick {same} curate {a[same]} (min dist {da:.7f}) vs small-text "
               f"{b[same]} ({db:.7f}): {'a float near-tie' if near_tie else 'NOT a near-tie'}; "
               f"set overlap {len(set(a.tolist()) & set(b.tolist()))}/{len(a)}")
    return {"agree": bool(near_tie), "identical": False, "common_prefix": same, "curate_dist": da,
            "small_text_dist": db, "verdict": verdict}


# ---------------------------------------------------------------------------------------------- main

TARGETS = {
    "topk.scores_ratio": ("top_k / argpartition time", "<=", 1.5),
    "topk.entropy_ratio": ("TopK(entropy) / numpy entropy+argpartition", "<=", 1.5),
    "topk.lc_ratio": ("TopK(least_conf) / numpy least_conf+argpartition", "<=", 1.5),
    "kcenter.floor_ratio": ("k-center time / bandwidth floor", "<=", 1.5),
    "badge.memory_ratio": ("BADGE tracemalloc peak / (N x d*C float32)", "<=", 0.5),
    "peers.speedup_vs_small_text": ("k-center speed-up over small-text greedy_coreset", ">=", 1.0),
    "peers.picks_agree": ("k-center picks = small-text's (up to float near-ties)", ">=", 1.0),
}


def target_of(key: str) -> tuple[str, str, float]:
    parts = key.split(".")
    generic = f"{parts[0]}.{parts[-1]}"
    desc, op, threshold = TARGETS[generic]
    label = f"{parts[0]} N={int(parts[1]):,}" + (f" C={parts[2][1:]}" if len(parts) == 4 else "")
    return f"{label}: {desc}", op, threshold


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and picks: a smoke run")
    parser.add_argument("--sizes", default=None, help="pool sizes, e.g. 100000,1000000 (default; --quick: 20000)")
    parser.add_argument("--sections", default="topk,kcenter,badge,peers", help="comma list of topk, kcenter, badge, peers")
    parser.add_argument("--kcenter-k", type=int, default=None, help="k-center picks (default 1000; --quick 100)")
    parser.add_argument("--peer-n", type=int, default=None, help="pool size for small-text greedy_coreset (default 10000)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "acquire.json"))
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"topk", "kcenter", "badge", "peers"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; available: topk, kcenter, badge, peers")
    sizes = [int(s.replace("_", "")) for s in (args.sizes or ("20000" if args.quick else "100000,1000000")).split(",")]
    k_center = args.kcenter_k or (100 if args.quick else 1000)
    peer_n = args.peer_n or (2000 if args.quick else 10_000)
    peer_k = 200 if args.quick else 1000
    badge_k = 20 if args.quick else 100

    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(THREADS)
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    load_start = loadavg()
    info = versions()
    log(f"bench_acquire  {time.strftime('%Y-%m-%d %H:%M:%S')}  quick={args.quick} sections={sections} sizes={sizes} "
        f"threads={THREADS}")
    log("versions: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    log(f"load average at start (1/5/15 min): {load_start}")
    results: dict = {"args": vars(args), "versions": info, "threads": THREADS, "loadavg_start": load_start, "sizes": {}}
    measured: dict[str, float] = {}
    t0 = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save_partial() -> None:  # a long run that is stopped still leaves its finished sections behind
        out.write_text(json.dumps({**results, "complete": False, "measured": measured}, indent=2, default=float))

    bandwidths: dict[str, dict] = {}
    results["bandwidth"] = bandwidths
    for n in sorted(sizes, reverse=True):
        log(f"\n=== N = {n:,} (d = {D}) === load {loadavg()}")
        x = mixture(n, D, SEED)
        index = build_index(x)
        del x
        gc.collect()
        per: dict = {}
        if "kcenter" in sections:
            # Read rate of this very matrix: DRAM bandwidth when it is far larger than the L3 cache,
            # a (higher) cache-assisted rate when it is not; the floor uses whichever this N gets.
            log(f"[bandwidth] reading the {n:,} x {D} float32 matrix ({n * D * 4 / MIB:,.0f} MiB; "
                f"L3 {l3_cache_mib():,.0f} MiB)")
            bw = measure_bandwidth(np.asarray(index.vectors), 3 if args.quick else 5)
            bandwidths[str(n)] = bw
            log(f"[bandwidth] N={n:,}: using {bw['best_method']}: {bw['bytes_per_s'] / 1e9:.2f} GB/s")
        if "topk" in sections:
            per["topk"] = bench_topk(n, index, args.quick)
        if "kcenter" in sections:
            per["kcenter"] = bench_kcenter(n, index, bandwidths[str(n)]["bytes_per_s"], k_center)
        if "badge" in sections:
            per["badge"] = bench_badge(n, index, badge_k, (2, 10))
        for part in per.values():
            measured.update(part.get("summary", {}))
        per["loadavg_after"] = loadavg()
        results["sizes"][str(n)] = per
        save_partial()
        del index
        gc.collect()
    if "peers" in sections:
        log(f"\n=== peers === load {loadavg()}")
        results["peers"] = bench_peers(peer_n, peer_k)
        measured.update(results["peers"].get("summary", {}))

    load_end = loadavg()
    rows = []
    for key, value in measured.items():
        desc, op, threshold = target_of(key)
        ok = value <= threshold if op == "<=" else value >= threshold
        rows.append({"key": key, "target": desc, "op": op, "threshold": threshold, "measured": value,
                     "status": "PASS" if ok else "FAIL"})
    results.update(loadavg_end=load_end, total_s=time.perf_counter() - t0, summary=rows, complete=True,
                   lifetime_peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    log("\n=== summary (times: best of alternated reps for top-k, single runs otherwise) ===")
    for n, bw in bandwidths.items():
        log(f"read bandwidth, N={int(n):,} matrix ({bw['matrix_bytes'] / MIB:,.0f} MiB): {bw['bytes_per_s'] / 1e9:.2f} GB/s "
            f"(best of " + ", ".join(f"{m} {r['gb_per_s']:.2f}" for m, r in bw["methods"].items()) + ")")
    width = max(len(r["target"]) for r in rows) if rows else 10
    log(f"{'target':<{width}}  {'want':>8}  {'measured':>9}  status")
    for r in rows:
        log(f"{r['target']:<{width}}  {r['op'] + ' ' + format(r['threshold'], 'g'):>8}  {r['measured']:9.3f}  {r['status']}")
    log(f"load average at start {load_start}, at end {load_end}; total {results['total_s']:.0f} s; "
        f"lifetime peak RSS {results['lifetime_peak_rss_mib']:,.0f} MiB")
    out.write_text(json.dumps(results, indent=2, default=float))
    log(f"wrote {out}")
    return 0 if all(r["status"] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
