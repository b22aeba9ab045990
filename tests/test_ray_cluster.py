"""A Ray cluster of two nodes on this machine, started as a user starts one (``ray start --head``, then
``ray start --address`` for the second node, both on 127.0.0.1): curate joins it by address, spreads
its LM workers over both nodes, and gets the in-process answers; Ray Data embeds on it too."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'curate[ray]'): the ray cluster is untested")

pytestmark = pytest.mark.real

RAY = Path(sys.executable).with_name("ray")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A loopback cluster for a test: no token authentication (a real cluster keeps its token; the
# driver then needs RAY_AUTH_TOKEN or ~/.ray/auth_token, as Ray's own error message says).
_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _ray(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAY), *args], capture_output=True, text=True, timeout=180, env={**os.environ, **_ENV})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    if not RAY.exists():
        pytest.skip(f"the ray command is not installed beside {sys.executable}")
    ray.shutdown()
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV)   # this process is the cluster's driver
    port = _port()
    temp = tmp_path_factory.mktemp("ray")
    head = _ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
                "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp))
    assert head.returncode == 0, head.stderr[-2000:]
    try:
        worker = _ray("start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                      "--disable-usage-stats")
        assert worker.returncode == 0, worker.stderr[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        _ray("stop", "--force")
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_lm_workers_spread_over_both_nodes_and_answer_as_in_process(cluster, tiny_lm_dir):
    import ray

    from curate.backends.ray_backend import RayBackend
    from curate.build import backend_from
    from curate.config import LMConfig
    from curate.executor import RayExecutor, embed_texts

    lm = LMConfig(backend="hf", model=str(tiny_lm_dir), device="cpu")
    prompts = [f"item {i} was {'fine' if i % 2 else 'awful'}. Verdict:" for i in range(30)]
    executor = RayExecutor(num_workers=2, address=cluster)
    backend = RayBackend(lm, executor)
    try:
        nodes = {node for _, node in backend.placement()}
        assert len(ray.nodes()) == 2 and len(nodes) == 2   # one worker per node (one CPU each)
        local = backend_from(lm)
        np.testing.assert_allclose(backend.option_logprobs(prompts, [" good", " bad"]),
                                   local.option_logprobs(prompts, [" good", " bad"]), atol=1e-5)
        assert backend.usage.input_tokens == local.usage.input_tokens > 0
        backend.close()   # frees the CPUs for Ray Data's workers; the cluster stays up
        texts = [p.replace("Verdict:", "") for p in prompts]
        from curate.embed import load_embedder

        vectors = embed_texts(texts, "all-MiniLM-L6-v2", executor=RayExecutor(num_workers=2, address=cluster))
        np.testing.assert_allclose(vectors, load_embedder(cache=False).encode(texts), atol=1e-5)
    finally:
        backend.close()
