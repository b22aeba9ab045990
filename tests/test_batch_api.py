"""The OpenAI Batch API path of the OpenAI-compatible backend, against a local server with the files and
batches endpoints (tests/servers/batches.py), including a run SIGKILLed while it polls and resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from servers.batches import create_app  # noqa: E402
from servers.chat_only import serve  # noqa: E402
from servers.latency import prompt_tokens  # noqa: E402

from curate.annotate.llm import BatchAnnotation, LLMAnnotator  # noqa: E402
from curate.backends.batch_api import RECORD_KEY, BatchJobs, MemoryRecord  # noqa: E402
from curate.backends.openai_compat import OpenAICompatibleBackend  # noqa: E402
from curate.budget import Ledger, Prices  # noqa: E402
from curate.config import PricesConfig  # noqa: E402
from curate.errors import BackendError, ConfigError  # noqa: E402
from curate.journal import Journal  # noqa: E402
from curate.pool import load_pool  # noqa: E402

POLL = 0.05


@pytest.fixture
def server():
    app = create_app(polls_to_complete=2)
    with serve(app) as base_url:
        yield app.state, base_url


def batch_backend(base_url: str, **kwargs) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend("remote", base_url, batch_api=True, batch_poll_interval=POLL, **kwargs)


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"item {i} says hello"}] for i in range(n)]


def pool_of(n: int):
    return load_pool([{"text": f"item {i} is {'good' if i % 3 else 'bad'}"} for i in range(n)])


def test_labels_go_as_one_batch_and_come_back_in_order(server):
    state, base_url = server
    n = 10
    backend = batch_backend(base_url)
    ann = LLMAnnotator(backend, ["neg", "pos"], instruction="Sentiment?", batch_size=3)  # batch_size: prompt chunks
    out = list(ann.annotate(pool_of(n), np.arange(n)))
    assert (state.uploads, state.created, state.downloads) == (1, 1, 1)
    assert len(state.lines) == n and {line["url"] for line in state.lines} == {"/v1/chat/completions"}
    assert [a.item_id for a in out] == list(range(n))
    assert [a.label for a in out] == ["pos" if i % 3 else "neg" for i in range(n)]
    assert all(isinstance(a, BatchAnnotation) and a.batch for a in out)
    by_item = {int(line["body"]["messages"][-1]["content"].split("item ")[-1].split()[0]): prompt_tokens(line["body"])
               for line in state.lines}
    assert [a.input_tokens for a in out] == [by_item[i] for i in range(n)]
    assert backend.usage.input_tokens == sum(by_item.values()) and backend.usage.calls == n
    [rec] = backend._record.get_meta(RECORD_KEY)
    assert rec["batch_id"] == "batch_1" and rec["state"] == "completed" and len(rec["custom_ids"]) == n


def test_chat_and_generation_go_through_the_batch_too(server):
    state, base_url = server
    backend = batch_backend(base_url, api="chat")
    replies = backend.chat(conversations(5), max_new_tokens=8, n=2)
    assert [[g.text for g in r] for r in replies] == [[f"echo: item {i} says hello"] * 2 for i in range(5)]
    assert [g.logprobs.tokens for g in replies[0]] == [("echo:", " item", " 0", " says", " hello")] * 2
    generated = backend.generate(["raw one", "raw two"], max_new_tokens=2)
    assert [g[0].text for g in generated] == ["echo: raw", "echo: raw"]
    assert state.created == 2  # one batch per call


def test_identical_requests_share_one_line(server):
    state, base_url = server
    replies = batch_backend(base_url).chat(conversations(2) + conversations(2), max_new_tokens=4)
    assert len(state.lines) == 2
    assert [r[0].text for r in replies] == ["echo: item 0 says", "echo: item 1 says"] * 2


def test_a_line_that_failed_transiently_is_sent_again_alone(server):
    state, base_url = server
    state.fail_lines = {"item 2 ": [500]}
    backend = batch_backend(base_url)
    replies = backend.chat(conversations(4), max_new_tokens=4)
    assert [r[0].text for r in replies] == [f"echo: item {i} says" for i in range(4)]
    assert state.created == 2 and len(state.lines) == 5  # the second batch holds the one failed line
    assert backend.usage.calls == 4


def test_a_refused_line_is_an_error_and_not_sent_again(server):
    state, base_url = server
    state.fail_lines = {"item 1 ": [404] * 5}
    with pytest.raises(BackendError, match="in a batch.*HTTP 404"):
        batch_backend(base_url).chat(conversations(3))
    assert state.created == 1


def test_a_batch_created_but_not_recorded_is_found_by_its_file(server):
    """Killed after the server made the batch and before its id was recorded: the next process finds
    it among the server's batches by the recorded input file, and creates none."""
    state, base_url = server
    backend = batch_backend(base_url)

    class Killed(BaseException):
        pass

    def dies_after_creation(method, path, **kwargs):
        response = backend._send(method, path, **kwargs)
        if (method, path) == ("POST", "/batches"):
            raise Killed
        return response

    record = MemoryRecord()
    body = {"model": "remote", "messages": conversations(1)[0], "max_tokens": 4}
    with pytest.raises(Killed):
        BatchJobs(dies_after_creation, base_url, record, poll_interval=POLL).run({"a-0": ("/chat/completions", body)})
    [rec] = record.get_meta(RECORD_KEY)
    assert rec["batch_id"] is None and state.created == 1
    answers = BatchJobs(backend._send, base_url, record, poll_interval=POLL).run({"a-0": ("/chat/completions", body)})
    assert answers["a-0"]["status"] == 200 and state.created == 1 and state.uploads == 1
    assert record.get_meta(RECORD_KEY)[0]["batch_id"] == "batch_1"


def test_a_batch_of_another_server_is_not_adopted(server):
    state, base_url = server
    record = MemoryRecord()
    record.set_meta(RECORD_KEY, [{"file_id": "file-9", "batch_id": "batch_9", "endpoint": "/v1/chat/completions",
                                  "base_url": "http://elsewhere/v1", "custom_ids": ["a-0"], "state": "submitted"}])
    body = {"model": "remote", "messages": conversations(1)[0]}
    answers = BatchJobs(batch_backend(base_url)._send, base_url, record, poll_interval=POLL).run(
        {"a-0": ("/chat/completions", body)})
    assert answers["a-0"]["status"] == 200 and state.created == 1


# ------------------------------------------------------------------------------------------ prices


def test_batch_requests_are_priced_at_the_batch_tier():
    prices = Prices(llm_input_per_million=2.0, llm_output_per_million=8.0, batch_discount=0.5)
    assert prices.micros(input_tokens=1000, output_tokens=100) == 2800
    assert prices.micros(input_tokens=1000, output_tokens=100, batch=True) == 1400
    assert Prices(human_per_label=0.1, batch_discount=0.5).micros(human_labels=1, batch=True) == 100_000  # people: full
    ledger = Ledger(prices)
    assert ledger.charge("llm", input_tokens=1000, batch=True).micros == 1000
    assert ledger.charge("llm", input_tokens=1000).micros == 2000
    with pytest.raises(ConfigError, match="batch_discount"):
        Prices(batch_discount=1.5)
    with pytest.raises(ConfigError, match="batch_discount"):
        PricesConfig(batch_discount=-0.1)


def test_the_worst_case_of_a_batch_annotator_is_at_the_batch_tier():
    prices = Prices(llm_input_per_million=1.0, llm_output_per_million=1.0, batch_discount=0.5)
    live = LLMAnnotator(OpenAICompatibleBackend("m"), ["a", "b"], instruction="?", max_input_tokens=1000)
    batch = LLMAnnotator(OpenAICompatibleBackend("m", batch_api=True), ["a", "b"], instruction="?",
                         max_input_tokens=1000)
    assert live.worst_case_micros(prices) == 1001 and batch.worst_case_micros(prices) == 501


# ------------------------------------------------------------------------------------ kill and resume

RUNNER = textwrap.dedent('''
    import json, sys
    import numpy as np
    from curate.acquire.strategies import Random
    from curate.annotate.llm import LLMAnnotator
    from curate.backends.openai_compat import OpenAICompatibleBackend
    from curate.budget import Ledger, Prices
    from curate.learners import EmbeddingClassifier
    from curate.loop import ActiveLoop
    from curate.pool import load_pool
    from curate.stopping import MaxRounds

    base_url, run_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pool = load_pool([{"text": f"item {i} is {'good' if i % 3 else 'bad'}"} for i in range(n)])
    backend = OpenAICompatibleBackend("remote", base_url, batch_api=True, batch_poll_interval=0.1)
    annotator = LLMAnnotator(backend, ["neg", "pos"], instruction="Sentiment?")
    x = np.random.default_rng(0).normal(size=(n, 4))
    prices = Prices(llm_input_per_million=1000.0, llm_output_per_million=2000.0, batch_discount=0.5)
    result = ActiveLoop(pool, strategy=Random(), init=Random(), annotator=annotator,
                        learner=EmbeddingClassifier(x, ["neg", "pos"]), run_dir=run_dir, init_size=n, batch_size=1,
                        stopping=MaxRounds(1), ledger=Ledger(prices), seed=0).run()
    print(json.dumps({"labels": {str(k): v for k, v in result.labels.items()}, "spent_micros": result.ledger.spent_micros}))
''')


def test_a_run_killed_while_polling_resumes_the_same_batch(server, tmp_path):
    state, base_url = server
    state.polls_to_complete = 10**9  # not before the kill
    n, run_dir = 8, tmp_path / "run"
    env = {**os.environ, "CURATE_QUIET": "1"}
    command = [sys.executable, "-c", RUNNER, base_url, str(run_dir), str(n)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while state.polls.get("batch_1", 0) < 2:
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never polled its batch"
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    assert (state.uploads, state.created, state.downloads) == (1, 1, 0)
    journal = Journal.of(run_dir)
    try:
        [rec] = journal.get_meta(RECORD_KEY)
        assert rec["batch_id"] == "batch_1" and rec["state"] == "submitted"
        assert journal.labels() == {} and journal.charges() == []
    finally:
        journal.close()

    polled = state.polls["batch_1"]
    state.polls_to_complete = polled + 2  # a couple more polls, from the resumed run
    second = subprocess.run(command, env=env, capture_output=True, timeout=180)
    assert second.returncode == 0, second.stderr.decode()[-3000:]
    result = json.loads(second.stdout.decode().strip().splitlines()[-1])

    # The batch was fetched, not submitted again.
    assert (state.uploads, state.created, state.downloads) == (1, 1, 1)
    assert state.polls["batch_1"] == polled + 2 and len(state.lines) == n
    expected = {i: "pos" if i % 3 else "neg" for i in range(n)}
    assert {int(k): v for k, v in result["labels"].items()} == expected
    journal = Journal.of(run_dir)
    try:
        assert journal.labels() == expected
        charges = journal.charges()
        tokens = {int(line["body"]["messages"][-1]["content"].split("item ")[-1].split()[0]): prompt_tokens(line["body"])
                  for line in state.lines}
        assert sorted(c.item_id for c in charges) == list(range(n))  # each once
        half = Prices(llm_input_per_million=500.0, llm_output_per_million=1000.0)
        assert [c.micros for c in sorted(charges, key=lambda c: c.item_id)] == [
            half.micros(input_tokens=tokens[i], output_tokens=1) for i in range(n)]
        assert [c.input_tokens for c in sorted(charges, key=lambda c: c.item_id)] == [tokens[i] for i in range(n)]
        assert result["spent_micros"] == sum(c.micros for c in charges)
    finally:
        journal.close()


def test_a_teacher_through_the_batch_api_is_charged_at_the_batch_tier(server):
    from curate.budget import Prices
    from curate.responses import TeacherAnnotator

    state, base_url = server
    backend = batch_backend(base_url)
    teacher = TeacherAnnotator(backend, max_new_tokens=8, max_input_tokens=64)
    pool = load_pool([{"prompt": f"say item {i}"} for i in range(4)])
    out = list(teacher.annotate(pool, np.arange(4)))
    assert (state.uploads, state.created) == (1, 1)
    assert [a.label for a in out] == [f"echo: say item {i}" for i in range(4)]
    assert all(isinstance(a, BatchAnnotation) for a in out)
    prices = Prices(llm_input_per_million=2.0, llm_output_per_million=8.0, batch_discount=0.5)
    full = TeacherAnnotator(OpenAICompatibleBackend("remote", base_url), max_new_tokens=8, max_input_tokens=64)
    assert teacher.worst_case_micros(prices) * 2 == full.worst_case_micros(prices)
