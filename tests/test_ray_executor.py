"""The Ray Data executor on a real local Ray (2 CPUs, 2 workers): embedding and LM scoring give the
local executor's results in input order, workers' tokens reach the caller's usage, and a classify
recipe with ``executor: {kind: ray}`` runs a real round through the CLI."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'curate[ray]'): the ray executor is untested")

from curate.config import ExecutorConfig, LMConfig  # noqa: E402
from curate.errors import ConfigError  # noqa: E402
from curate.executor import Executor, RayExecutor, embed_texts, executor_from, option_logprobs, perplexity  # noqa: E402

pytestmark = pytest.mark.real

TEXTS = [f"review {i}: the {'film was wonderful' if i % 3 else 'food was cold'} and {i % 7} stars" for i in range(200)]


@pytest.fixture(scope="module")
def ray_executor():
    """One local Ray for the module (startup costs seconds); shut down at the end."""
    import ray

    executor = RayExecutor(num_workers=2, batch_size=16, num_cpus=2)  # 16: many batches, so order is tested
    executor.start()
    yield executor
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_lm(tiny_lm_dir):
    return LMConfig(backend="hf", model=str(tiny_lm_dir), device="cpu")


def test_executor_config_checks_and_builds():
    with pytest.raises(ConfigError, match="executor.kind must be 'local' or 'ray'. Got 'rey'"):
        ExecutorConfig(kind="rey")
    with pytest.raises(ConfigError, match="executor.num_workers must be at least 1"):
        ExecutorConfig(kind="ray", num_workers=0)
    assert executor_from(None).kind == "local"
    built = executor_from(ExecutorConfig(kind="ray", num_workers=3, batch_size=8, address="auto"))
    assert isinstance(built, RayExecutor) and (built.num_workers, built.batch_size, built.address) == (3, 8, "auto")


def test_embedding_on_ray_equals_local_in_order(ray_executor):
    from curate.embed import load_embedder

    local = load_embedder(cache=False).encode(TEXTS)
    remote = embed_texts(TEXTS, "all-MiniLM-L6-v2", executor=ray_executor)
    assert remote.shape == (200, 384) and remote.dtype == np.float32
    np.testing.assert_allclose(remote, local, atol=1e-5)


def test_load_embedder_with_ray_keeps_the_cache_here(ray_executor, tmp_path):
    from curate.embed import load_embedder

    embedder = load_embedder(cache=tmp_path / "e.sqlite", executor=ray_executor)
    first = embedder.encode(TEXTS[:40])
    assert embedder.last_hits == 0 and embedder.cache.count() == 40
    again = embedder.encode(TEXTS[:40])  # every row from the driver's cache: no worker runs
    assert embedder.last_hits == 40
    np.testing.assert_array_equal(first, again)


def test_option_scores_on_ray_equal_local_and_usage_is_summed(ray_executor, tiny_lm):
    from curate.build import backend_from

    prompts = [f"{t}. good or bad?" for t in TEXTS[:60]]
    options = [" good", " bad", " maybe"]
    local_backend = backend_from(tiny_lm)
    local = option_logprobs(tiny_lm, prompts, options, executor=Executor(), backend=local_backend)
    caller = backend_from(tiny_lm)
    remote = option_logprobs(tiny_lm, prompts, options, executor=ray_executor, backend=caller)
    assert remote.shape == (60, 3)
    np.testing.assert_allclose(remote, local, atol=1e-5)
    # The tokens the workers' LMs read count on the caller's backend, where the ledger reads them.
    assert caller.usage.input_tokens == local_backend.usage.input_tokens > 0
    assert set(caller.usage.by_kind) == set(local_backend.usage.by_kind) and caller.usage.calls >= 1


def test_perplexity_on_ray_equals_local(ray_executor, tiny_lm):
    from curate.build import backend_from

    local = perplexity(tiny_lm, TEXTS[:50], executor=Executor(), backend=backend_from(tiny_lm))
    caller = backend_from(tiny_lm)
    remote = perplexity(tiny_lm, TEXTS[:50], executor=ray_executor, backend=caller)
    np.testing.assert_allclose(remote, local, rtol=1e-5)
    assert caller.usage.input_tokens > 0
    assert option_logprobs(tiny_lm, [], [" a", " b"], executor=ray_executor).shape == (0, 2)


def test_classify_recipe_with_a_ray_executor_runs_a_round(ray_executor, tmp_path, monkeypatch, capsys):
    import curate.executor
    from curate.cli import main

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))  # an empty cache: the pool is embedded for real
    calls = []
    real = RayExecutor.map_batches_stream

    def counted(self, worker, columns, **kw):
        calls.append((worker.__name__, len(next(iter(columns.values())))))
        return real(self, worker, columns, **kw)

    monkeypatch.setattr(curate.executor.RayExecutor, "map_batches_stream", counted)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("paradigm: classify\npool: {path: 'sample:reviews', id_column: id}\nlabels: [positive, negative]\n"
                      "init: {strategy: random, size: 8}\nacquire: {strategy: entropy, batch_size: 8}\n"
                      "annotator: {kind: gold, column: label}\nprices: {human_per_label: 0.4}\nstop: {rounds: 1}\n"
                      "executor: {kind: ray, num_workers: 2, batch_size: 16}\n")
    assert main(["--quiet", "run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "Stopped: 1 round" in out
    assert calls == [("EmbedWorker", 64)]  # the 64 shipped reviews, embedded on the workers
    assert "kind: ray" in (tmp_path / "run" / "config.yaml").read_text()


def test_the_cache_keeps_each_batch_as_it_arrives(ray_executor, tmp_path):
    """A driver killed mid-pool keeps what came back: each streamed batch is in the cache before the next."""
    from curate.embed import load_embedder

    embedder = load_embedder(cache=tmp_path / "e.sqlite", executor=ray_executor)
    seen = []
    put = embedder.cache.put

    def counting(model, keys, vectors):
        seen.append(len(keys))
        put(model, keys, vectors)

    embedder.cache.put = counting
    embedder.encode(TEXTS[:64])
    assert sum(seen) == 64 and len(seen) == 4 and embedder.cache.count() == 64   # 4 batches of 16, kept one by one
