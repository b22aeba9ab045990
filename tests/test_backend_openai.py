"""OpenAICompatibleBackend against a scripted OpenAI-style server, through httpx.MockTransport and over a
real loopback HTTP server. The fake tokenizes on word boundaries and gives each token the log-prob
``-len(token)``, so every expected value below can be read off the texts by hand.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest

from curate.backends.base import LMBackend
from curate.backends.openai_compat import OpenAICompatibleBackend
from curate.errors import BackendError, ConfigError

GENERATED = "<gen>"  # what the fake emits when it is made to generate during scoring


def prompts_of(body: dict) -> list[str]:
    """A request's prompts: the backend sends one prompt as a plain string, several as a list."""
    return body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]


def fake_tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+", text)


@dataclass
class Step:
    """One scripted answer; the default (200, no payload) means "answer like a real server"."""

    status: int = 200
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds the real server waits before answering
    raise_timeout: bool = False  # the mock transport raises httpx.ReadTimeout instead of answering


class FakeOpenAI:
    """The server side: records every request and answers from a script, then like an OpenAI server."""

    def __init__(self, *, reject_zero_max_tokens: bool = False, reverse_choices: bool = False) -> None:
        self.reject_zero_max_tokens = reject_zero_max_tokens
        self.reverse_choices = reverse_choices
        self.script: deque[Step] = deque()
        self.requests: list[tuple[str, dict[str, str], dict]] = []

    def respond(self, path: str, headers: dict[str, str], body: dict) -> tuple[int, dict[str, str], Any]:
        self.requests.append((path, {k.lower(): v for k, v in headers.items()}, body))
        step = self.script.popleft() if self.script else Step()
        if step.raise_timeout:
            raise httpx.ReadTimeout("scripted read timeout")
        if step.delay:
            time.sleep(step.delay)
        if step.status != 200 or step.payload is not None:
            return step.status, step.headers, step.payload
        if path.endswith("/chat/completions"):
            return 200, {}, self._chat(body)
        if body.get("echo"):
            return self._echo(body)
        return 200, {}, self._generate(body)

    def _echo(self, body: dict) -> tuple[int, dict[str, str], Any]:
        if body["max_tokens"] == 0 and self.reject_zero_max_tokens:
            return 400, {}, {"error": {"message": "max_tokens must be at least 1, got 0."}}
        choices = []
        for i, text in enumerate(prompts_of(body)):
            tokens = fake_tokens(text) + [GENERATED] * body["max_tokens"]
            offsets = np.cumsum([0] + [len(t) for t in tokens[:-1]]).tolist()
            values = [None] + [-float(len(t)) for t in tokens[1:]]
            logprobs = {"tokens": tokens, "token_logprobs": values, "text_offset": offsets}
            choices.append({"index": i, "text": text, "logprobs": logprobs, "finish_reason": "length"})
        usage = {
            "prompt_tokens": sum(len(fake_tokens(t)) for t in prompts_of(body)),
            "completion_tokens": body["max_tokens"] * len(prompts_of(body)),
        }
        return 200, {}, {"choices": self._order(choices), "usage": usage}

    def _generate(self, body: dict) -> dict:
        n, choices = body["n"], []
        for i in range(len(prompts_of(body))):
            for j in range(n):
                tokens = [f" p{i}", f"s{j}"]
                choices.append(
                    {
                        "index": i * n + j,
                        "text": "".join(tokens),
                        "logprobs": {"tokens": tokens, "token_logprobs": [-0.5, -1.5]},
                        "finish_reason": "length" if body["max_tokens"] <= 2 else "stop",
                    }
                )
        usage = {"prompt_tokens": 3 * len(prompts_of(body)), "completion_tokens": 2 * len(choices)}
        return {"choices": self._order(choices), "usage": usage}

    def _chat(self, body: dict) -> dict:
        if body.get("top_logprobs"):  # option scoring: one answer token with its alternatives
            top = [{"token": t, "logprob": v} for t, v in (("yes", -0.5), ("no", -1.5), ("maybe", -3.0))]
            top = top[: body["top_logprobs"]]
            choice = {"index": 0, "message": {"role": "assistant", "content": top[0]["token"]},
                      "logprobs": {"content": [{**top[0], "top_logprobs": top}]}, "finish_reason": "length"}
            return {"choices": [choice], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}
        choices = [
            {
                "index": j,
                "message": {"role": "assistant", "content": f"Hi {j}"},
                "logprobs": {
                    "content": [{"token": "Hi", "logprob": -0.25}, {"token": f" {j}", "logprob": -2.0}]
                },
                "finish_reason": "stop",
            }
            for j in range(body["n"])
        ]
        return {
            "choices": self._order(choices),
            "usage": {"prompt_tokens": 11, "completion_tokens": 2 * body["n"]},
        }

    def _order(self, choices: list[dict]) -> list[dict]:
        return choices[::-1] if self.reverse_choices else choices


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def mock_backend(fake: FakeOpenAI, **kwargs: Any) -> tuple[OpenAICompatibleBackend, SleepRecorder]:
    def handle(request: httpx.Request) -> httpx.Response:
        status, headers, payload = fake.respond(
            request.url.path, dict(request.headers), json.loads(request.content)
        )
        if isinstance(payload, bytes):
            return httpx.Response(status, headers=headers, content=payload)
        return httpx.Response(status, headers=headers, json=payload)

    sleep = SleepRecorder()
    kwargs.setdefault("base_url", "http://fake.test/v1")
    backend = OpenAICompatibleBackend(
        "fake-model", transport=httpx.MockTransport(handle), sleep=sleep, **kwargs
    )
    return backend, sleep


# ------------------------------------------------------------------------------------------- scoring


def test_completion_logprobs_keeps_only_the_completion_tokens():
    backend, _ = mock_backend(FakeOpenAI())
    [run] = backend.completion_logprobs(["Hello"], [" big world"])
    assert run.tokens == (" big", " world")
    assert run.logprobs.dtype == np.float64
    np.testing.assert_array_equal(run.logprobs, [-4.0, -6.0])
    assert isinstance(backend, LMBackend)


def test_a_token_straddling_the_boundary_counts_as_prompt():
    backend, _ = mock_backend(FakeOpenAI())
    # The fake's token "Hello" starts in the prompt and ends in the completion.
    [run] = backend.completion_logprobs(["Hel"], ["lo world"])
    assert run.tokens == (" world",)


def test_empty_prompt_drops_the_first_token_which_has_no_logprob():
    backend, _ = mock_backend(FakeOpenAI())
    [run] = backend.sequence_logprobs(["Hello big world"])
    assert run.tokens == (" big", " world")
    np.testing.assert_array_equal(run.logprobs, [-4.0, -6.0])


def test_empty_completion_gives_an_empty_run():
    backend, _ = mock_backend(FakeOpenAI())
    [run] = backend.completion_logprobs(["Hello world"], [""])
    assert run.tokens == () and run.perplexity == 1.0


def test_prompts_are_batched_and_results_keep_their_order():
    fake = FakeOpenAI(reverse_choices=True)  # the server answers out of order; 'index' puts it right
    backend, _ = mock_backend(fake, batch_size=2)
    prompts = ["A", "B", "C", "D", "E"]
    completions = [" x" * (k + 1) for k in range(5)]
    runs = backend.completion_logprobs(prompts, completions)
    # Requests after the first run concurrently: which arrives first is not fixed, what each holds is.
    sent = sorted((fake_body["prompt"] if isinstance(fake_body["prompt"], list) else [fake_body["prompt"]]
                   for _, _, fake_body in fake.requests), key=lambda p: p[0])
    assert sent == [["A x", "B x x"], ["C x x x", "D x x x x"], ["E x x x x x"]]
    single = next(body for _, _, body in fake.requests if not isinstance(body["prompt"], list))
    assert single["prompt"] == "E x x x x x"  # one prompt goes as a string
    assert [len(r.tokens) for r in runs] == [1, 2, 3, 4, 5]
    payload = fake.requests[0][2]  # the first request goes alone, before the others
    assert payload["prompt"] == ["A x", "B x x"]
    assert payload["echo"] is True and payload["max_tokens"] == 0 and payload["temperature"] == 0
    assert payload["model"] == "fake-model"


def test_server_refusing_max_tokens_zero_is_asked_again_with_one_and_remembered():
    fake = FakeOpenAI(reject_zero_max_tokens=True)
    backend, sleep = mock_backend(fake)
    [run] = backend.completion_logprobs(["Hello"], [" world"])
    assert run.tokens == (" world",)  # the generated token is not part of the completion
    assert [body["max_tokens"] for _, _, body in fake.requests] == [0, 1]
    backend.completion_logprobs(["Hi"], [" there"])
    assert [body["max_tokens"] for _, _, body in fake.requests] == [0, 1, 1]
    assert sleep.delays == []  # a refusal is not a transient failure


def test_option_logprobs_pairs_each_prompt_with_each_option():
    backend, _ = mock_backend(FakeOpenAI())
    scores = backend.option_logprobs(["Q: yes or no? A:", "Again:"], [" yes", " no"])
    expected = np.array([-4.0, -3.0]) - np.logaddexp(-4.0, -3.0)
    np.testing.assert_allclose(scores, [expected, expected])


def test_score_options_falls_back_to_option_logprobs_with_stats():
    backend, _ = mock_backend(FakeOpenAI())
    prompts = ["Q: yes or no? A:", "Again:"]
    result = backend.score_options(prompts, [" yes", " no"], groups=[0, 0])
    np.testing.assert_allclose(result.logprobs, backend.option_logprobs(prompts, [" yes", " no"]))
    assert result.stats.prompts == 2 and result.stats.groups == 2
    assert result.stats.forward_tokens == backend.usage.input_tokens // 2 > 0  # two identical calls so far
    with pytest.raises(ConfigError, match="one key per prompt"):
        backend.score_options(prompts, [" yes", " no"], groups=[0])


def test_usage_is_recorded_from_each_response():
    backend, _ = mock_backend(FakeOpenAI(), batch_size=1)
    backend.completion_logprobs(["Hello", ""], [" big world", "Hi there"])
    assert backend.usage.input_tokens == 3 + 2
    assert backend.usage.output_tokens == 0
    assert backend.usage.calls == 2
    backend.generate(["a"], n=2)
    assert backend.usage.output_tokens == 4
    assert backend.usage.by_kind == {"logprobs": 2, "generate": 1}


# ---------------------------------------------------------------------------------------- generation


def test_generate_groups_n_samples_per_prompt():
    fake = FakeOpenAI(reverse_choices=True)
    backend, _ = mock_backend(fake, batch_size=2)
    samples = backend.generate(["a", "b", "c"], n=3, max_new_tokens=2, temperature=0.7, seed=5)
    assert [[g.text for g in row] for row in samples] == [[f" p{i}s{j}" for j in range(3)] for i in (0, 1, 0)]
    first = samples[0][1]
    assert first.logprobs.tokens == (" p0", "s1")
    np.testing.assert_array_equal(first.logprobs.logprobs, [-0.5, -1.5])
    assert first.finish_reason == "length"
    payload = fake.requests[0][2]
    assert (payload["n"], payload["max_tokens"], payload["temperature"], payload["seed"]) == (3, 2, 0.7, 5)
    assert payload["logprobs"] == 1 and "echo" not in payload


def test_generate_omits_seed_when_none_and_reports_stop():
    fake = FakeOpenAI()
    backend, _ = mock_backend(fake)
    [[sample]] = backend.generate(["a"], max_new_tokens=8)
    assert sample.finish_reason == "stop"
    assert "seed" not in fake.requests[0][2]


def test_chat_parses_message_and_content_logprobs():
    fake = FakeOpenAI(reverse_choices=True)
    backend, _ = mock_backend(fake)
    messages = [{"role": "user", "content": "Hello"}]
    [replies] = backend.chat([messages], n=2, max_new_tokens=4, seed=1)
    assert [r.text for r in replies] == ["Hi 0", "Hi 1"]
    assert replies[1].logprobs.tokens == ("Hi", " 1")
    np.testing.assert_array_equal(replies[1].logprobs.logprobs, [-0.25, -2.0])
    path, _, payload = fake.requests[0]
    assert path == "/v1/chat/completions"
    assert payload["messages"] == messages and payload["logprobs"] is True and payload["seed"] == 1
    assert backend.usage.by_kind == {"chat": 1} and backend.usage.input_tokens == 11


class TemplateTokenizer:
    """The two methods of a tokenizer that chat prompts and option tokens use; one token per word."""

    chat_template = "<turns>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False
        return "".join(f"[{m['role']}] {m['content']}\n" for m in messages) + ("[assistant]" if add_generation_prompt else "")

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def encode(self, text, add_special_tokens=True):
        return [self.vocab.setdefault(t, len(self.vocab)) for t in fake_tokens(text)]

    def decode(self, ids):
        return "".join({i: t for t, i in self.vocab.items()}[i] for i in ids)

    def convert_ids_to_tokens(self, ids):
        return [str(i) for i in ids]


def test_chat_prompt_uses_the_tokenizers_template_and_sends_the_messages():
    fake = FakeOpenAI()
    backend, _ = mock_backend(fake, tokenizer=TemplateTokenizer())
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = backend.chat_prompt(messages)
    assert prompt == "[system] Be brief.\n[user] Hi\n[assistant]"
    assert backend.chat_prompt(messages, add_generation_prompt=False) == "[system] Be brief.\n[user] Hi\n"
    [[reply]] = backend.generate([prompt], max_new_tokens=4)
    assert reply.text == "Hi 0"
    path, _, payload = fake.requests[-1]
    assert path == "/v1/chat/completions" and payload["messages"] == messages and payload["max_tokens"] == 4
    with pytest.raises(ConfigError, match="'role' and 'content'"):
        backend.chat_prompt([{"role": "user"}])


def test_chat_prompt_without_a_tokenizer_stands_for_the_messages():
    fake = FakeOpenAI()
    backend, _ = mock_backend(fake)
    assert backend.tokenizer is None  # a served name, not a local folder
    prompt = backend.chat_prompt([{"role": "user", "content": "Hi"}])
    assert "<|im_start|>" not in prompt  # no hand-written ChatML
    backend.generate([prompt])
    assert fake.requests[-1][2]["messages"] == [{"role": "user", "content": "Hi"}]
    legacy, _ = mock_backend(FakeOpenAI(), api="completions")
    with pytest.raises(ConfigError, match="chat_prompt needs the model's chat template.*'tokenizer'"):
        legacy.chat_prompt([{"role": "user", "content": "Hi"}])


def test_options_of_a_conversation_are_read_from_the_first_answer_tokens_top_logprobs():
    fake = FakeOpenAI()
    backend, _ = mock_backend(fake, tokenizer=TemplateTokenizer(), top_logprobs=3)
    prompt = backend.chat_prompt([{"role": "user", "content": "Well?"}])
    scores = backend.option_logprobs([prompt], ["yes", "no"], normalize=False)
    np.testing.assert_allclose(scores, [[-0.5, -1.5]])
    normalized = backend.option_logprobs([prompt], ["no", "yes sir"])  # "yes sir": by its first token
    np.testing.assert_allclose(normalized, [[-1.5, -0.5] - np.logaddexp(-1.5, -0.5)])
    assert {path for path, _, _ in fake.requests} == {"/v1/chat/completions"}
    payload = fake.requests[0][2]
    assert (payload["max_tokens"], payload["logprobs"], payload["top_logprobs"]) == (1, True, 3)
    assert backend.usage.by_kind == {"options": 2}


def test_an_option_outside_the_listed_tokens_gets_an_upper_bound():
    backend, _ = mock_backend(FakeOpenAI(), top_logprobs=1)  # only "yes" (-0.5) comes back
    prompt = backend.chat_prompt([{"role": "user", "content": "Well?"}])
    [[yes, no]] = backend.option_logprobs([prompt], ["yes", "no"], normalize=False)
    assert yes == -0.5 and no == pytest.approx(min(-0.5, np.log(1 - np.exp(-0.5))))


def test_api_chat_never_calls_completions():
    fake = FakeOpenAI()
    backend, _ = mock_backend(fake, api="chat")
    [[reply]] = backend.generate(["a raw prompt"])
    assert fake.requests[-1][2]["messages"] == [{"role": "user", "content": "a raw prompt"}]
    assert reply.text == "Hi 0"
    with pytest.raises(ConfigError, match="api='chat' never calls"):
        backend.perplexity(["some text"])
    assert [path for path, _, _ in fake.requests] == ["/v1/chat/completions"]
    with pytest.raises(ConfigError, match="'api' parameter.*auto, chat, completions.*'chats'"):
        mock_backend(FakeOpenAI(), api="chats")[0].generate(["a"])


def test_a_404_on_completions_sends_raw_prompts_to_chat_from_then_on():
    fake = FakeOpenAI()
    fake.script.append(Step(404, {"error": {"message": "This is a chat model."}}))
    backend, sleep = mock_backend(fake)
    backend.generate(["a"])
    backend.generate(["b"])
    assert [path for path, _, _ in fake.requests] == ["/v1/completions"] + ["/v1/chat/completions"] * 2
    with pytest.raises(BackendError, match="does not serve.*This is a chat model"):
        backend.completion_logprobs(["a"], [" b"])
    assert len(fake.requests) == 3 and sleep.delays == []


def test_a_server_that_ignores_echo_is_found_out_once():
    fake = FakeOpenAI()
    ignored = {"choices": [{"index": 0, "text": "x", "logprobs": {"tokens": ["x"], "token_logprobs": [-1.0],
                                                                  "text_offset": [3]}}]}
    fake.script.append(Step(200, ignored))
    backend, _ = mock_backend(fake)
    with pytest.raises(BackendError, match="ignores 'echo'"):
        backend.completion_logprobs(["a"], [" b"])
    with pytest.raises(BackendError, match="does not serve"):
        backend.completion_logprobs(["a"], [" b"])
    assert len(fake.requests) == 1


# ------------------------------------------------------------------------------------------- retries


def test_503_is_retried_with_growing_backoff_until_success():
    fake = FakeOpenAI()
    fake.script.extend([Step(503, {"error": {"message": "overloaded"}})] * 3)
    backend, sleep = mock_backend(fake, backoff=0.5, max_backoff=100.0)
    [run] = backend.completion_logprobs(["Hello"], [" world"])
    assert run.tokens == (" world",)
    assert len(fake.requests) == 4
    assert len(sleep.delays) == 3
    assert sleep.delays[0] < sleep.delays[1] < sleep.delays[2]
    for attempt, delay in enumerate(sleep.delays):  # equal jitter: between half and all of 0.5 * 2**attempt
        assert 0.25 * 2**attempt <= delay <= 0.5 * 2**attempt
    assert backend.usage.calls == 1  # failed attempts are not charged


def test_backoff_is_capped_and_jitter_is_deterministic():
    delays = []
    for _ in range(2):
        fake = FakeOpenAI()
        fake.script.extend([Step(500, {"error": "boom"})] * 6)
        backend, sleep = mock_backend(fake, backoff=1.0, max_backoff=2.0, max_retries=5)
        with pytest.raises(BackendError):
            backend.completion_logprobs(["a"], [" b"])
        delays.append(sleep.delays)
    assert delays[0] == delays[1]
    assert len(delays[0]) == 5 and max(delays[0]) <= 2.0 and min(delays[0][2:]) >= 1.0


def test_429_honours_a_numeric_retry_after():
    fake = FakeOpenAI()
    fake.script.append(Step(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "7"}))
    backend, sleep = mock_backend(fake)
    backend.completion_logprobs(["Hello"], [" world"])
    assert sleep.delays == [7.0]
    assert len(fake.requests) == 2


def test_400_is_not_retried_and_says_what_the_server_said():
    fake = FakeOpenAI()
    fake.script.append(Step(404, {"error": {"message": "The model 'fake-model' does not exist."}}))
    backend, sleep = mock_backend(fake, api="completions")  # "auto" would take the 404 for a chat-only server
    with pytest.raises(BackendError) as info:
        backend.generate(["a"])
    message = str(info.value)
    assert "http://fake.test/v1/completions" in message and "404" in message
    assert "does not exist" in message
    assert len(fake.requests) == 1 and sleep.delays == []


def test_gives_up_after_max_retries_naming_attempts_and_last_error():
    fake = FakeOpenAI()
    fake.script.extend([Step(502, {"detail": "bad gateway"})] * 10)
    backend, sleep = mock_backend(fake, max_retries=2)
    with pytest.raises(BackendError, match=r"after 3 attempts.*HTTP 502: bad gateway"):
        backend.completion_logprobs(["a"], [" b"])
    assert len(fake.requests) == 3 and len(sleep.delays) == 2


def test_a_timeout_is_retried():
    fake = FakeOpenAI()
    fake.script.append(Step(raise_timeout=True))
    backend, sleep = mock_backend(fake)
    [run] = backend.completion_logprobs(["Hello"], [" world"])
    assert run.tokens == (" world",)
    assert len(fake.requests) == 2 and len(sleep.delays) == 1


def test_timeouts_every_time_end_in_a_backend_error():
    fake = FakeOpenAI()
    fake.script.extend([Step(raise_timeout=True)] * 3)
    backend, _ = mock_backend(fake, max_retries=2)
    with pytest.raises(BackendError, match="after 3 attempts.*ReadTimeout"):
        backend.completion_logprobs(["a"], [" b"])


# ------------------------------------------------------------------------------------ bad responses


def one_choice(tokens: list, values: list, offsets: list) -> dict:
    logprobs = {"tokens": tokens, "token_logprobs": values, "text_offset": offsets}
    return {"choices": [{"index": 0, "text": "a b", "logprobs": logprobs}]}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"object": "text_completion"}, "no 'choices'.*echo/logprobs"),
        ({"choices": [{"index": 0, "text": "a b", "logprobs": None}]}, "lacks 'logprobs'.*echo/logprobs"),
        ({"choices": [{"index": 0, "logprobs": {"tokens": ["a"], "token_logprobs": [None]}}]}, "text_offset"),
        ({"choices": []}, "0 choices; expected 1"),
        (one_choice(["a", " b"], [None], [0, 1]), "different lengths"),
        (one_choice(["a", " b"], [None, None], [0, 1]), "missing or non-numeric log-prob"),
        (one_choice(["a", " b"], [None, -1.0], [0, None]), "non-integer 'text_offset'"),
        (b"<html>gateway</html>", "not a JSON object"),
    ],
)
def test_malformed_scoring_responses_raise_a_clear_error(payload, match):
    fake = FakeOpenAI()
    fake.script.append(Step(200, payload))
    backend, _ = mock_backend(fake)
    with pytest.raises(BackendError, match=match):
        backend.completion_logprobs(["a"], [" b"])


def test_chat_without_logprobs_gives_an_empty_run():
    fake = FakeOpenAI()
    fake.script.append(Step(200, {"choices": [{"index": 0, "message": {"content": "hi"}, "logprobs": None}]}))
    backend, _ = mock_backend(fake)
    [[reply]] = backend.chat([[{"role": "user", "content": "hey"}]])
    assert reply.text == "hi" and reply.logprobs.tokens == ()


def test_chat_logprobs_refused_are_not_asked_for_again():
    fake = FakeOpenAI()
    fake.script.append(Step(400, {"error": {"message": "logprobs are not supported with this model"}}))
    backend, sleep = mock_backend(fake)
    backend.chat([[{"role": "user", "content": "hey"}]])
    backend.chat([[{"role": "user", "content": "hey"}]])
    assert ["logprobs" in body for _, _, body in fake.requests] == [True, False, False]
    assert sleep.delays == []


# ------------------------------------------------------------------------------------ configuration


def test_init_only_stores_parameters_and_checks_them_on_first_use():
    backend = OpenAICompatibleBackend("m", base_url="localhost:8000/v1", max_retries=-1)
    assert backend._client is None and backend.max_retries == -1
    with pytest.raises(ConfigError, match="'base_url'.*http://"):
        backend.generate(["a"])
    backend.base_url = "http://127.0.0.1:1/v1"
    with pytest.raises(ConfigError, match="'max_retries'.*>= 0"):
        backend.generate(["a"])


def test_bad_inputs_are_config_errors():
    backend, _ = mock_backend(FakeOpenAI())
    with pytest.raises(ConfigError, match="same length"):
        backend.completion_logprobs(["a", "b"], [" c"])
    with pytest.raises(ConfigError, match="not one string"):
        backend.generate("a prompt")
    with pytest.raises(ConfigError, match="'n' must be"):
        backend.generate(["a"], n=0)


# --------------------------------------------------------------------------- a real loopback server


class _Handler(BaseHTTPRequestHandler):
    timeout = 5  # a stuck test client cannot hold a server thread for long

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        status, headers, payload = self.server.fake.respond(self.path, dict(self.headers), body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left, as the timeout test intends

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def live_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.fake = FakeOpenAI()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def live_backend(server: ThreadingHTTPServer, **kwargs: Any) -> tuple[OpenAICompatibleBackend, SleepRecorder]:
    sleep = SleepRecorder()
    host, port = server.server_address
    backend = OpenAICompatibleBackend(
        "fake-model", base_url=f"http://{host}:{port}/v1", sleep=sleep, **kwargs
    )
    return backend, sleep


def test_live_server_scores_generates_and_sends_the_api_key(live_server):
    with live_backend(live_server, api_key="sk-test", batch_size=2)[0] as backend:
        runs = backend.completion_logprobs(["Hello", "", "A"], [" big world", "Hi there", " b"])
        samples = backend.generate(["x", "y"], n=2)
    assert [r.tokens for r in runs] == [(" big", " world"), (" there",), (" b",)]
    assert [[g.text for g in row] for row in samples] == [[" p0s0", " p0s1"], [" p1s0", " p1s1"]]
    assert [path for path, _, _ in live_server.fake.requests] == ["/v1/completions"] * 3
    assert all(h["authorization"] == "Bearer sk-test" for _, h, _ in live_server.fake.requests)
    assert backend.usage.input_tokens == (3 + 2) + 2 + 6


def test_live_server_falls_back_to_the_environment_api_key(live_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    backend, _ = live_backend(live_server)
    backend.completion_logprobs(["a"], [" b"])
    assert live_server.fake.requests[0][1]["authorization"] == "Bearer sk-env"


def test_live_server_503_then_success(live_server):
    live_server.fake.script.extend(
        [Step(503, {"error": {"message": "warming up"}}, headers={"Retry-After": "0.01"})]
    )
    backend, sleep = live_backend(live_server)
    [run] = backend.completion_logprobs(["Hello"], [" world"])
    assert run.tokens == (" world",)
    assert len(live_server.fake.requests) == 2 and sleep.delays == [0.01]


def test_live_server_timeout_is_retried(live_server):
    live_server.fake.script.append(Step(delay=0.8))  # longer than the client waits
    backend, sleep = live_backend(live_server, timeout=0.25)
    [run] = backend.completion_logprobs(["Hello"], [" world"])
    assert run.tokens == (" world",)
    assert len(live_server.fake.requests) == 2 and len(sleep.delays) == 1


def test_refused_connection_is_retried_then_reported():
    with socket.socket() as probe:  # a loopback port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleep = SleepRecorder()
    backend = OpenAICompatibleBackend("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, sleep=sleep)
    with pytest.raises(BackendError, match="after 3 attempts.*ConnectError"):
        backend.generate(["a"])
    assert len(sleep.delays) == 2
