"""The OpenAI-compatible backend against a real OpenAI-compatible server: FastChat 0.2.36 (controller,
model_worker, openai_api_server) serving the embedded SmolLM2-135M-Instruct on the CPU, on 127.0.0.1.

A short version of docs/bench/throughput/real_server.py (b): option log-probs of chat-template prompts
over ``/v1/completions`` with echo + logprobs must equal the transformers backend's to 1e-3, and the
backend must record the prompt tokens the server reports. FastChat lives in its own venv (its pins
clash with curate's); point ``CURATE_FASTCHAT_PYTHON`` at that venv's python to run this test (see
docs/bench/throughput/real_server.md), otherwise it is skipped.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "bench" / "throughput" / "real_server.py"
PYTHON = os.environ.get("CURATE_FASTCHAT_PYTHON")


def _fastchat_missing() -> str | None:
    if not PYTHON:
        return ("CURATE_FASTCHAT_PYTHON is not set: it must name the python of a venv with fschat[model_worker]==0.2.36 "
                "(docs/bench/throughput/real_server.md)")
    if not os.access(PYTHON, os.X_OK):
        return f"CURATE_FASTCHAT_PYTHON={PYTHON!r} is not an executable"
    # Importing FastChat's worker opens a log file in the working directory: probe from a scratch one.
    with tempfile.TemporaryDirectory() as scratch:
        probe = subprocess.run([PYTHON, "-c", "import fastchat.serve.model_worker, torch"], capture_output=True,
                               text=True, cwd=scratch)
    if probe.returncode != 0:
        return f"{PYTHON} cannot import FastChat's model worker: {probe.stderr.strip().splitlines()[-1:]}"
    return None


@pytest.fixture(scope="module")
def bench():
    why = _fastchat_missing()
    if why:
        pytest.skip(why)
    spec = importlib.util.spec_from_file_location("real_server", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def served(bench, tmp_path_factory):
    model = bench.model_folder()
    with bench.fastchat_server(model, logs=tmp_path_factory.mktemp("fastchat-logs"), python=PYTHON) as base_url:
        yield model, base_url


def test_option_scores_from_fastchat_agree_with_the_hf_backend(bench, served):
    model, base_url = served
    reviews = bench.REVIEWS[:4]
    result = bench.compare_scores(base_url, model, reviews=reviews, option_sets=[["positive", "negative"]])
    assert result["same_template"]
    assert result["max_delta"] <= bench.TOLERANCE, [(r["normalize"], r["max_delta"]) for r in result["rows"]]
    for row in result["rows"]:
        assert np.array_equal(row["api"].argmax(1), row["hf"].argmax(1))
    usage = result["usage"]
    # Two calls (normalize False/True) of 4 prompts x 2 options, 8 texts each: one request per call.
    assert usage.calls == 2 and usage.by_kind == {"logprobs": 2}
    tok = result["hf"].tokenizer
    per_call = sum(len(tok(p + o, add_special_tokens=False)["input_ids"])
                   for p in result["prompts"] for o in ("positive", "negative"))
    # FastChat counts the tokens of each text it was sent (its tokenizer adds no BOS for SmolLM2).
    assert usage.input_tokens == 2 * per_call


def test_fastchat_chat_answers_carry_no_logprobs(bench, served):
    model, base_url = served
    lines = bench.chat_endpoint_probe(base_url, model, "Is this review positive or negative?\n\nReview: A joy.")
    assert "logprobs None" in lines[0]
    assert "_MissingLogprobs" in lines[-1]
