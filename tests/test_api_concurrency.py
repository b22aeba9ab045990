"""Requests in flight at once through the OpenAI-compatible backend, against a local server that answers
after a fixed latency (tests/servers/latency.py) and counts how many requests it is answering at once.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from servers.chat_only import serve  # noqa: E402
from servers.latency import create_app, prompt_tokens  # noqa: E402

from curate.annotate.llm import LLMAnnotator  # noqa: E402
from curate.backends.openai_compat import OpenAICompatibleBackend  # noqa: E402
from curate.errors import BackendError, ConfigError  # noqa: E402
from curate.pool import load_pool  # noqa: E402

LATENCY = 0.1


@pytest.fixture
def server():
    app = create_app(latency=LATENCY)
    with serve(app) as base_url:
        yield app.state, base_url


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"item {i} says hello"}] for i in range(n)]


class Sleeps:
    """Records the waits between attempts, and waits them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(seconds)


def test_results_keep_input_order_with_at_most_max_concurrency_in_flight(server):
    state, base_url = server
    n, limit = 40, 8
    with OpenAICompatibleBackend("remote", base_url, max_concurrency=limit) as backend:
        clock = time.perf_counter()
        replies = backend.chat(conversations(n), max_new_tokens=8)
        wall = time.perf_counter() - clock
    assert [r[0].text for r in replies] == [f"echo: item {i} says hello" for i in range(n)]
    assert state.max_in_flight == limit  # reached, never passed
    assert len(state.requests) == n
    # The first request goes alone, then n-1 in waves of `limit`: far from n one at a time.
    assert wall < LATENCY * (1 + -(-(n - 1) // limit)) + 1.5 < LATENCY * n
    expected_in = sum(prompt_tokens({"messages": c}) for c in conversations(n))
    assert backend.usage.input_tokens == expected_in and backend.usage.calls == n


def test_one_at_a_time_when_max_concurrency_is_one(server):
    state, base_url = server
    with OpenAICompatibleBackend("remote", base_url, max_concurrency=1) as backend:
        backend.chat(conversations(5), max_new_tokens=4)
    assert state.max_in_flight == 1


def test_429_with_retry_after_is_retried_after_the_wait_the_server_asked_for(server):
    state, base_url = server
    state.throttle = {"item 3 ": 2}
    state.retry_after = 0.3
    sleeps = Sleeps()
    with OpenAICompatibleBackend("remote", base_url, max_concurrency=4, sleep=sleeps) as backend:
        replies = backend.chat(conversations(10), max_new_tokens=8)
    assert [r[0].text for r in replies] == [f"echo: item {i} says hello" for i in range(10)]
    assert sleeps.delays == [0.3, 0.3]  # Retry-After, not our own backoff
    asked = [b["messages"][0]["content"] for b in state.requests]
    assert asked.count("item 3 says hello") == 3 and len(asked) == 12
    assert backend.usage.calls == 10  # refused attempts are not charged


def test_5xx_is_retried_with_jittered_backoff_on_the_request_threads(server):
    state, base_url = server
    state.throttle = {"item 5 ": 1}
    state.throttle_status = 503
    state.retry_after = "soon"  # not a number of seconds: our own backoff
    sleeps = Sleeps()
    with OpenAICompatibleBackend("remote", base_url, max_concurrency=4, backoff=0.2, sleep=sleeps) as backend:
        backend.chat(conversations(8), max_new_tokens=4)
    assert len(sleeps.delays) == 1 and 0.1 <= sleeps.delays[0] <= 0.2


def test_a_request_over_its_timeout_is_retried(server):
    state, base_url = server
    sleeps = Sleeps()
    with OpenAICompatibleBackend("remote", base_url, timeout=LATENCY / 4, max_retries=1, backoff=0.01,
                                 sleep=sleeps) as backend:
        with pytest.raises(BackendError, match="after 2 attempts.*ReadTimeout"):
            backend.chat(conversations(1))
    assert len(state.requests) == 2


def test_max_concurrency_must_be_a_positive_int(server):
    _, base_url = server
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="max_concurrency"):
            OpenAICompatibleBackend("remote", base_url, max_concurrency=bad).chat(conversations(1))


# ----------------------------------------------------------------------------------- the annotator


def pool_of(n: int):
    return load_pool([{"text": f"item {i} is {'good' if i % 3 else 'bad'}"} for i in range(n)])


def test_annotations_stream_out_as_their_requests_return(server):
    state, base_url = server
    n = 24
    backend = OpenAICompatibleBackend("remote", base_url, max_concurrency=4)
    ann = LLMAnnotator(backend, ["neg", "pos"], instruction="Sentiment?", batch_size=n)
    stream = ann.annotate(pool_of(n), np.arange(n))
    first = next(stream)
    assert first.item_id == 0 and state.answered < n  # yielded long before the call's last answer
    rest = list(stream)
    out = [first, *rest]
    assert [a.item_id for a in out] == list(range(n))
    assert [a.label for a in out] == ["pos" if i % 3 else "neg" for i in range(n)]
    # Each annotation carries the tokens of its own request, exactly.
    billed = {int(b["messages"][-1]["content"].split("item ")[-1].split()[0]): prompt_tokens(b) for b in state.requests}
    assert [a.input_tokens for a in out] == [billed[i] for i in range(n)]
    assert all(a.output_tokens == 1 for a in out)
    assert sum(a.input_tokens for a in out) == backend.usage.input_tokens
    assert state.max_in_flight == 4


def test_answers_paid_for_are_yielded_before_an_items_error(server):
    state, base_url = server
    state.reject = {"item 2 ": 400}
    n = 6
    backend = OpenAICompatibleBackend("remote", base_url, max_concurrency=8)
    ann = LLMAnnotator(backend, ["neg", "pos"], instruction="Sentiment?")
    got = []
    with pytest.raises(BackendError, match="HTTP 400"):
        for a in ann.annotate(pool_of(n), np.arange(n)):
            got.append(a.item_id)
    assert sorted(got) == [0, 1, 3, 4, 5]  # every other request was answered: none is lost


def test_the_first_request_goes_alone_so_a_refusal_is_learned_once(server):
    state, base_url = server
    state.reject = {"item": 404}  # every request refused, as a wrong model name would be
    backend = OpenAICompatibleBackend("remote", base_url, max_concurrency=8)
    with pytest.raises(BackendError, match="HTTP 404"):
        backend.chat(conversations(20))
    assert len(state.requests) == 1
