"""Ray on one machine, side by side with the in-process path, on 20k real texts (SST-2, TREC, AG News):

1. embedding (all-MiniLM-L6-v2) in process vs on Ray Data (2 workers): min cosine, wall ratio;
2. option scoring (an LM built from a config, SmolLM2's tokenizer) in process vs Ray Data vs the
   RayBackend actors: max |delta|, tokens, wall ratios;
3. a Ray Data worker SIGKILLed mid-embedding: every row comes back once, equal to in process;
4. a driver SIGKILLed mid-embedding into the cache, then run again: the cache ends with every text
   once, and the second run embeds only what the first had not kept.

The kill of a driver mid-labelling (the journal, the ledger) is tests/test_ray_backend.py. Reproduce:

    nice -n 5 env CURATE_QUIET=1 HF_HUB_OFFLINE=1 .venv/bin/python -u docs/bench/throughput/ray_bench.py --n 20000 \
        > docs/bench/throughput/ray_bench.txt
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def texts_of(n: int) -> list[str]:
    """The first ``n`` of the SST-2, TREC and AG News texts (pool, then test, set by set: 22,293)."""
    from curate.bench.config import DatasetConfig
    from curate.bench.datasets import load_split

    texts: list[str] = []
    for name in ("sst2", "trec", "agnews"):
        split = load_split(name, DatasetConfig(source=name))
        texts += split.pool_texts + split.test_texts
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} texts in the three sets; ask for --n {len(texts)} or fewer")
    return texts[:n]


def small_lm(folder: Path) -> str:
    """A 2-layer Llama of SmolLM2's shape family (its tokenizer and vocabulary), random weights."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from curate.models import resolve_lm

    tokenizer = AutoTokenizer.from_pretrained(resolve_lm("SmolLM2-135M-Instruct"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def timed(fn):
    clock = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - clock


def map_worker_pids() -> list[int]:
    """Processes of Ray Data's map workers on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::") and "MapWorker" in cmd:
                pids.append(int(entry.name))
    return pids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if os.environ.get("CURATE_RAY_BENCH_CHILD"):
        return child()

    import ray

    from curate.backends.ray_backend import RayBackend
    from curate.build import backend_from
    from curate.config import LMConfig
    from curate.embed import load_embedder
    from curate.executor import RayExecutor, embed_texts, option_logprobs

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, ray {ray.__version__}, "
          f"load average before {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    texts = texts_of(args.n)
    print(f"{len(texts)} SST-2, TREC and AG News texts, {args.workers} Ray workers on a local Ray ({args.workers} CPUs)")
    executor = RayExecutor(num_workers=args.workers, num_cpus=args.workers, batch_size=256)
    executor.start()

    # 1. embedding
    local, t_local = timed(lambda: load_embedder(cache=False).encode(texts))
    remote, t_ray = timed(lambda: embed_texts(texts, "all-MiniLM-L6-v2", executor=executor))
    cos = (local * remote).sum(1) / np.linalg.norm(local, axis=1) / np.linalg.norm(remote, axis=1)
    print(f"embedding   in process {t_local:7.1f} s   Ray Data {t_ray:7.1f} s   ratio Ray/local {t_ray / t_local:5.2f}"
          f"   min cosine {cos.min():.6f}")

    # 2. option scoring
    with tempfile.TemporaryDirectory() as folder:
        lm = LMConfig(backend="hf", model=small_lm(Path(folder)), device="cpu")
        prompts = [f"Text: {t[:300]}\nTopic:" for t in texts]
        options = [" World", " Sports", " Business", " Science"]
        here = backend_from(lm)
        want, t_local = timed(lambda: option_logprobs(lm, prompts, options, backend=here))
        caller = backend_from(lm)
        data, t_data = timed(lambda: option_logprobs(lm, prompts, options, executor=executor, backend=caller))
        actors = RayBackend(lm, executor)
        actors.workers()
        got, t_actors = timed(lambda: actors.option_logprobs(prompts, options))
        print(f"scoring     in process {t_local:7.1f} s   Ray Data {t_data:7.1f} s   ratio {t_data / t_local:5.2f}"
              f"   RayBackend {t_actors:7.1f} s   ratio {t_actors / t_local:5.2f}")
        print(f"            max |delta| Ray Data {np.abs(data - want).max():.2e}   RayBackend {np.abs(got - want).max():.2e}"
              f"   input tokens {here.usage.input_tokens} / {caller.usage.input_tokens} / {actors.usage.input_tokens}")
        actors.close()
    executor = RayExecutor(num_workers=args.workers, num_cpus=args.workers, batch_size=256)
    executor.start()

    # 3. a worker killed mid-job
    arrived: list[np.ndarray] = []
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 300
        while not arrived and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = map_worker_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    killer = threading.Thread(target=kill_one)
    killer.start()
    rows = np.zeros_like(local)
    clock = time.perf_counter()
    from curate.executor import embed_texts_stream

    for pos, vec in embed_texts_stream(texts, "all-MiniLM-L6-v2", executor=executor):
        arrived.append(pos)
        rows[pos] = vec
    t_kill = time.perf_counter() - clock
    killer.join()
    seen = np.concatenate(arrived)
    cos = (local * rows).sum(1) / np.linalg.norm(local, axis=1) / np.linalg.norm(rows, axis=1)
    print(f"worker kill killed pid {killed or 'none'} after the first batch; {t_kill:.1f} s; rows back {len(seen)}, "
          f"unique {len(np.unique(seen))} of {len(texts)}; min cosine {cos.min():.6f}")
    executor.close()

    # 4. a driver killed mid-job
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "cache.sqlite"
        env = {**os.environ, "CURATE_RAY_BENCH_CHILD": "1", "CURATE_RAY_BENCH_CACHE": str(cache),
               "CURATE_RAY_BENCH_N": str(args.n), "CURATE_RAY_BENCH_WORKERS": str(args.workers)}
        proc = subprocess.Popen([sys.executable, __file__], env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        from curate.embed import EmbeddingCache

        while proc.poll() is None and (not cache.exists() or EmbeddingCache(cache).count() < len(texts) // 4):
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = EmbeddingCache(cache).count()
        again = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=3600)
        second = int(again.stdout.strip().splitlines()[-1]) if again.returncode == 0 else -1
        final = EmbeddingCache(cache).count()
        vectors = load_embedder(cache=cache).encode(texts)
        cos = (local * vectors).sum(1) / np.linalg.norm(local, axis=1) / np.linalg.norm(vectors, axis=1)
        print(f"driver kill killed with {kept} of {len(texts)} texts in the cache; the rerun embedded {second} "
              f"(= the rest: {second == len(set(texts)) - kept}); cache rows {final}; min cosine {cos.min():.6f}")
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def child() -> None:
    """Embed the texts into the cache on Ray; print how many the cache lacked (what this run embedded)."""
    from curate.embed import EmbeddingCache, load_embedder
    from curate.executor import RayExecutor

    n = int(os.environ["CURATE_RAY_BENCH_N"])
    texts = texts_of(n)
    cache = Path(os.environ["CURATE_RAY_BENCH_CACHE"])
    before = EmbeddingCache(cache).count() if cache.exists() else 0
    workers = int(os.environ["CURATE_RAY_BENCH_WORKERS"])
    executor = RayExecutor(num_workers=workers, num_cpus=workers, batch_size=256)
    load_embedder(cache=cache, executor=executor).encode(texts)
    executor.close()
    print(len(set(texts)) - before)


if __name__ == "__main__":
    main()
