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
    if not RAY.exists():
        pytest.skip(f"the ray command is not installed beside {sys.executable}")
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
        _ray("stop", "--force")
        shutil.rmtree(temp, ignore_errors=True)


# The driver runs in its own process: Ray reads its auth mode once per process, so a driver in this
# test process (which other tests' local Rays have set up) would not match the loopback cluster's.
DRIVER = """
import json, sys
import numpy as np
import ray
from curate.backends.ray_backend import RayBackend
from curate.build import backend_from
from curate.config import LMConfig
from curate.embed import load_embedder
from curate.executor import RayExecutor, embed_texts

address, model = sys.argv[1], sys.argv[2]
lm = LMConfig(backend="hf", model=model, device="cpu")
prompts = [f"item {i} was {'fine' if i % 2 else 'awful'}. Verdict:" for i in range(30)]
backend = RayBackend(lm, RayExecutor(num_workers=2, address=address))
nodes = sorted({node for _, node in backend.placement()})
local = backend_from(lm)
delta = float(np.abs(backend.option_logprobs(prompts, [" good", " bad"])
                     - local.option_logprobs(prompts, [" good", " bad"])).max())
tokens = [backend.usage.input_tokens, local.usage.input_tokens]
backend.close()   # frees the CPUs for Ray Data's workers; the cluster stays up
texts = [p.replace("Verdict:", "") for p in prompts]
vectors = embed_texts(texts, "all-MiniLM-L6-v2", executor=RayExecutor(num_workers=2, address=address))
embed_delta = float(np.abs(vectors - load_embedder(cache=False).encode(texts)).max())
print(json.dumps({"cluster_nodes": len(ray.nodes()), "worker_nodes": nodes, "delta": delta, "tokens": tokens,
                  "embed_delta": embed_delta}))
"""


def test_lm_workers_spread_over_both_nodes_and_answer_as_in_process(cluster, tiny_lm_dir, tmp_path):
    import json

    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    done = subprocess.run([sys.executable, str(script), cluster, str(tiny_lm_dir)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **_ENV, "CURATE_QUIET": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cluster_nodes"] == 2 and len(out["worker_nodes"]) == 2   # one worker per node (one CPU each)
    assert out["delta"] < 1e-5 and out["tokens"][0] == out["tokens"][1] > 0
    assert out["embed_delta"] < 1e-5
