"""The recipe's LM on Ray workers (curate.backends.ray_backend.RayBackend) on a real local Ray:
every call gives the in-process backend's answers in input order with the same tokens; the LLM
annotator streams through it; a worker killed mid-job is restarted and its calls retried, so every
item is answered once and charged once; a driver killed mid-run resumes from the journal without
buying an item twice; and a cluster of two Ray nodes started with ``ray start`` on 127.0.0.1 runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'curate[ray]'): the ray backend is untested")

from curate.backends.ray_backend import RayBackend  # noqa: E402
from curate.build import backend_from  # noqa: E402
from curate.config import ExecutorConfig, LMConfig  # noqa: E402
from curate.executor import RayExecutor  # noqa: E402

pytestmark = pytest.mark.real

PROMPTS = [f"review {i}: the {'film was wonderful' if i % 3 else 'food was cold'}. Verdict:" for i in range(40)]
OPTIONS = [" good", " bad"]


@pytest.fixture(scope="module")
def tiny_lm(tiny_lm_dir):
    return LMConfig(backend="hf", model=str(tiny_lm_dir), device="cpu")


@pytest.fixture(scope="module")
def ray_backend(tiny_lm):
    backend = RayBackend(tiny_lm, RayExecutor(num_workers=2, num_cpus=2))
    yield backend
    backend.close()


def test_backend_from_with_a_ray_executor_block_builds_it(tiny_lm):
    built = backend_from(tiny_lm, ExecutorConfig(kind="ray", num_workers=3))
    assert isinstance(built, RayBackend) and built.executor.num_workers == 3 and built._actors is None  # lazy
    assert not isinstance(backend_from(tiny_lm, ExecutorConfig(kind="local")), RayBackend)


def test_every_call_equals_the_local_backend_with_the_same_tokens(ray_backend, tiny_lm):
    local = backend_from(tiny_lm)
    np.testing.assert_allclose(ray_backend.option_logprobs(PROMPTS, OPTIONS), local.option_logprobs(PROMPTS, OPTIONS),
                               atol=1e-5)
    scored = ray_backend.score_options(PROMPTS, OPTIONS, groups=[i % 4 for i in range(len(PROMPTS))])
    np.testing.assert_allclose(scored.logprobs, local.option_logprobs(PROMPTS, OPTIONS), atol=1e-5)
    np.testing.assert_allclose(ray_backend.perplexity(PROMPTS[:12]), local.perplexity(PROMPTS[:12]), rtol=1e-5)
    mine = ray_backend.generate(PROMPTS[:6], max_new_tokens=4, temperature=0.0)
    theirs = local.generate(PROMPTS[:6], max_new_tokens=4, temperature=0.0)
    assert [g[0].text for g in mine] == [g[0].text for g in theirs]
    assert ray_backend.chat_prompt([{"role": "user", "content": "hi"}]) == local.chat_prompt([{"role": "user", "content": "hi"}])
    assert ray_backend.tokenizer.encode("hello") == local.tokenizer.encode("hello")
    # The workers' tokens are counted here, call for call as the local backend counts them.
    assert ray_backend.usage.input_tokens == local.usage.input_tokens > 0
    assert ray_backend.usage.output_tokens == local.usage.output_tokens
    # Both workers did work (the calls are split, not sent to one).
    assert len(set(ray_backend.worker_pids())) == 2


def test_the_llm_annotator_streams_through_it_with_each_items_tokens(ray_backend, tiny_lm):
    from curate.annotate.llm import LLMAnnotator
    from curate.pool import load_pool

    pool = load_pool([{"text": p} for p in PROMPTS])
    local = LLMAnnotator(backend_from(tiny_lm), ["good", "bad"], instruction="Good or bad?")
    remote = LLMAnnotator(ray_backend, ["good", "bad"], instruction="Good or bad?")
    ids = np.arange(len(pool))
    want = list(local.annotate(pool, ids))
    before = ray_backend.usage.input_tokens
    got = list(remote.annotate(pool, ids))
    assert [a.item_id for a in got] == ids.tolist()
    assert [a.label for a in got] == [a.label for a in want]
    np.testing.assert_allclose([a.confidence for a in got], [a.confidence for a in want], atol=1e-5)
    # streamed one item per call: each annotation carries its own tokens, and they add up to the total
    assert sum(a.input_tokens for a in got) == ray_backend.usage.input_tokens - before > 0
    assert all(a.input_tokens > 0 for a in got)


def test_a_worker_killed_mid_job_is_restarted_and_every_item_is_answered_and_charged_once(tiny_lm):
    local = backend_from(tiny_lm)
    prompts = [f"{p} ({k})" for k in range(5) for p in PROMPTS]   # 200 prompts, one call each
    want = np.vstack([local.option_logprobs([p], OPTIONS) for p in prompts])
    backend = RayBackend(tiny_lm, RayExecutor(num_workers=2, num_cpus=2))
    try:
        victim = backend.worker_pids()[0]
        results: dict[int, np.ndarray] = {}
        seen = threading.Event()

        def ask(prompt):
            return backend.option_logprobs([prompt], OPTIONS)[0]

        def consume():
            for k, row, _used in backend.stream(ask, prompts):
                assert k not in results   # once each
                results[k] = row
                if len(results) == 20:
                    seen.set()

        thread = threading.Thread(target=consume)
        thread.start()
        assert seen.wait(120), "the stream never got going"
        os.kill(victim, signal.SIGKILL)            # a worker dies with calls in flight
        thread.join(300)
        assert not thread.is_alive()
        assert sorted(results) == list(range(len(prompts)))
        np.testing.assert_allclose(np.vstack([results[k] for k in range(len(prompts))]), want, atol=1e-5)
        # The killed calls never came back; their retries did, once: the tokens are the local run's.
        assert backend.usage.input_tokens == local.usage.input_tokens
        assert victim not in backend.worker_pids()   # Ray restarted it
    finally:
        backend.close()


# ---------------------------------------------------------------------------------------------- a killed driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _journal_rows(run: Path) -> list[tuple]:
    path = run / "journal.sqlite"
    if not path.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT item_id, label, source FROM labels").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []


def test_a_driver_killed_mid_run_resumes_without_buying_an_item_twice(tmp_path):
    pytest.importorskip("fastapi")
    from servers.chat_only import serve
    from servers.latency import create_app, prompt_tokens

    n = 48
    app = create_app(latency=0.15)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": f"item {i} is {'good' if i % 2 else 'bad'}"}) + "\n" for i in range(n)))
    with serve(app) as base_url:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(
            f"paradigm: classify\npool: {{path: {pool}}}\nlabels: [pos, neg]\n"
            "init: {strategy: random, size: 24}\nacquire: {strategy: random, batch_size: 24}\n"
            "annotator: {kind: llm, instruction: 'Good or bad?'}\n"
            f"lm: {{backend: openai, model: remote, base_url: '{base_url}', options: {{api: chat, max_concurrency: 1}}}}\n"
            "prices: {llm_input_per_million: 1.0, llm_output_per_million: 2.0}\nstop: {rounds: 2}\n"
            "executor: {kind: ray, num_workers: 2, num_cpus: 2}\n")
        run = tmp_path / "run"
        env = {**os.environ, "CURATE_QUIET": "1", "HF_HUB_OFFLINE": "1"}
        cli = [sys.executable, "-m", "curate.cli", "--quiet"]
        # Its own session: the Ray it starts dies with it when the group is killed.
        proc = subprocess.Popen([*cli, "run", str(recipe), "--out", str(run)], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 240
        while len(_journal_rows(run)) < 6:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never journalled a label"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        before = len(_journal_rows(run))
        assert 6 <= before < n, "killed mid-run"
        # Calls the dead driver's workers had already taken may still reach the server (they were
        # in flight, so their answers are lost, as a request in flight always is): let them land.
        settled, last = time.monotonic(), len(app.state.requests)
        while time.monotonic() - settled < 2.0:
            time.sleep(0.1)
            if len(app.state.requests) != last:
                settled, last = time.monotonic(), len(app.state.requests)
        asked_before = len(app.state.requests)
        assert asked_before - before <= 2 * 2   # at most the 2 x num_workers items in flight were lost
        done = subprocess.run([*cli, "resume", str(run)], env=env, capture_output=True, text=True, timeout=600,
                              start_new_session=True)
        assert done.returncode == 0, done.stderr[-2000:]
    ids = [r[0] for r in _journal_rows(run)]
    assert len(ids) == len(set(ids)) == n   # every item labelled, none twice
    # The resumed run asked only for the items the journal lacked.
    assert len(app.state.requests) - asked_before == n - before
    # One charge per item, at the tokens of its one prompt: nothing charged twice.
    con = sqlite3.connect(run / "journal.sqlite")
    charges, items, tokens = con.execute("SELECT COUNT(*), COUNT(DISTINCT item_id), SUM(input_tokens) FROM charges").fetchone()
    con.close()
    distinct = {json.dumps(b["messages"]): b for b in app.state.requests}
    assert charges == items == n and tokens == sum(prompt_tokens(b) for b in distinct.values())
