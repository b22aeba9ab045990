"""A backend for any server that speaks the OpenAI HTTP API: ``vllm serve``, llama.cpp's server, hosted APIs.

Log-probs of a *given* text come from the legacy ``/completions`` endpoint with ``echo=True``: the server
scores the whole text it was sent and returns per-token log-probs with character offsets, and we keep
the tokens that start inside the completion. Servers without echo + logprobs (most hosted chat-only APIs)
can still ``generate`` and ``chat`` but cannot score.

Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried with capped exponential
backoff; any other 4xx means the request itself is wrong and is raised at once.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np

from curate.backends.base import BaseBackend, Generation, TokenLogprobs, _check_same_length
from curate.errors import BackendError, ConfigError

__all__ = ["OpenAICompatibleBackend"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"

_NO_LOGPROBS_HINT = (
    "The server may not support echo/logprobs on this endpoint (many hosted chat-only APIs do not); "
    "serve the model with vLLM or another server that returns them."
)


class _RejectedRequest(BackendError):
    """A 4xx other than 429: the request itself is wrong, so retrying cannot help."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class OpenAICompatibleBackend(BaseBackend):
    """Scores and samples through an OpenAI-compatible HTTP server.

    Parameters
    ----------
    model : the model name the server expects in each request.
    base_url : the API root, ending in ``/v1`` for most servers.
    api_key : sent as a bearer token; ``None`` falls back to the ``OPENAI_API_KEY`` environment variable.
    timeout : seconds allowed for each HTTP request.
    max_retries : how many times a transient failure is retried (so ``max_retries + 1`` attempts in all).
    backoff, max_backoff : the first retry waits about ``backoff`` seconds, doubling up to ``max_backoff``.
    batch_size : how many prompts are sent in one request.
    transport : an ``httpx`` transport to use instead of the network (tests pass ``httpx.MockTransport``).
    sleep : called with the seconds to wait between attempts (tests pass a recorder).
    """

    name = "openai-compatible"

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        batch_size: int = 16,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        super().__init__()
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self.transport = transport
        self.sleep = sleep
        self._client: httpx.Client | None = None
        # Jitter only; seeded so that reruns and tests see the same delays.
        self._rng = random.Random(0)
        # Learned on first refusal: some servers reject max_tokens=0 and need one generated token.
        self._echo_max_tokens = 0

    # ----------------------------------------------------------------------------------------- scoring

    def completion_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenLogprobs]:
        _check_same_length(prompts, completions, "prompts", "completions")
        prompts, completions = _check_texts(prompts, "prompts"), _check_texts(completions, "completions")
        runs: list[TokenLogprobs] = []
        size = self._checked_batch_size()
        for start in range(0, len(prompts), size):
            batch = prompts[start : start + size]
            texts = [p + c for p, c in zip(batch, completions[start : start + size], strict=True)]
            url, body = self._echo(texts)
            choices = _ordered_choices(body, len(texts), url)
            runs.extend(_completion_run(c, p, t, url) for c, p, t in zip(choices, batch, texts, strict=True))
        return runs

    def _echo(self, texts: list[str]) -> tuple[str, dict]:
        # logprobs=1, not 0: some servers read 0 as "no log-probs at all".
        payload = {
            "model": self.model,
            "prompt": texts,
            "max_tokens": self._echo_max_tokens,
            "echo": True,
            "logprobs": 1,
            "temperature": 0.0,
        }
        try:
            return self._post("/completions", payload, kind="logprobs")
        except _RejectedRequest as exc:
            if exc.status_code != 400 or self._echo_max_tokens != 0:
                raise
        # A generated token is harmless: only tokens that start inside the scored text are kept.
        result = self._post("/completions", {**payload, "max_tokens": 1}, kind="logprobs")
        self._echo_max_tokens = 1
        return result

    # -------------------------------------------------------------------------------------- generation

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[list[Generation]]:
        prompts = _check_texts(prompts, "prompts")
        _check_sampling(n, max_new_tokens)
        samples: list[list[Generation]] = []
        size = self._checked_batch_size()
        for start in range(0, len(prompts), size):
            batch = prompts[start : start + size]
            payload = {
                "model": self.model,
                "prompt": batch,
                "n": n,
                "max_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "logprobs": 1,
            }
            if seed is not None:
                payload["seed"] = seed
            url, body = self._post("/completions", payload, kind="generate")
            # OpenAI numbers the choices of prompt i as i*n .. i*n + n-1.
            choices = _ordered_choices(body, len(batch) * n, url)
            samples.extend(
                [_generation(c, url) for c in choices[i * n : (i + 1) * n]] for i in range(len(batch))
            )
        return samples

    def chat(
        self,
        messages_list: Sequence[Sequence[dict[str, str]]],
        *,
        n: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[list[Generation]]:
        """``n`` replies per conversation from ``/chat/completions``, where the server applies its own template."""
        _check_sampling(n, max_new_tokens)
        replies: list[list[Generation]] = []
        for messages in messages_list:  # the chat endpoint takes one conversation per request
            payload = {
                "model": self.model,
                "messages": _check_messages(messages),
                "n": n,
                "max_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "logprobs": True,
            }
            if seed is not None:
                payload["seed"] = seed
            url, body = self._post("/chat/completions", payload, kind="chat")
            replies.append([_chat_generation(c, url) for c in _ordered_choices(body, n, url)])
        return replies

    def chat_prompt(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """Render messages as ChatML (``<|im_start|>role\\ncontent<|im_end|>\\n``).

        The server owns the real template and applies it in ``chat``; this fallback is only right for
        ChatML models (Qwen, SmolLM2-Instruct, ...). Prefer ``chat`` for other models.
        """
        rendered = "".join(
            f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in _check_messages(messages)
        )
        return rendered + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    # ---------------------------------------------------------------------------------------- plumbing

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> OpenAICompatibleBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._check_params()
            api_key = self.api_key if self.api_key is not None else os.environ.get("OPENAI_API_KEY")
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            self._client = httpx.Client(timeout=self.timeout, transport=self.transport, headers=headers)
        return self._client

    def _post(self, path: str, payload: dict, *, kind: str) -> tuple[str, dict]:
        """POST ``payload`` as JSON, retrying transient failures; return the URL and the JSON body."""
        client = self._http()
        url = self.base_url.rstrip("/") + path
        attempts = self.max_retries + 1
        last_error = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                response = client.post(url, json=payload)
            except httpx.TransportError as exc:  # connection refused or reset, timeouts, broken responses
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status < 400:
                    body = _json_body(response, url)
                    self._record_usage(body, kind)
                    return url, body
                message = _server_message(response)
                if status != 429 and status < 500:
                    raise _RejectedRequest(
                        f"POST {url} was rejected with HTTP {status}: {message}. This is not retried because "
                        "the request itself is wrong: check the model name, base_url and parameters.",
                        status,
                    )
                last_error = f"HTTP {status}: {message}"
                retry_after = _retry_after_seconds(response)
            if attempt + 1 < attempts:
                self.sleep(self._delay(attempt, retry_after))
        raise BackendError(
            f"POST {url} failed after {attempts} attempts (max_retries={self.max_retries}); "
            f"last error: {last_error}. Check that the server is up, or raise 'max_retries' or 'timeout'."
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server knows its own load better than our guess
            return retry_after
        capped = min(self.max_backoff, self.backoff * 2.0**attempt)
        # "Equal jitter": spreads clients that failed together, yet never shrinks the next wait.
        return capped * (0.5 + 0.5 * self._rng.random())

    def _record_usage(self, body: dict, kind: str) -> None:
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        self.usage.add(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, kind=kind)

    def _checked_batch_size(self) -> int:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(
                f"The 'batch_size' parameter of OpenAICompatibleBackend must be an int >= 1. "
                f"Got {self.batch_size!r} instead."
            )
        return self.batch_size

    def _check_params(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                "The 'base_url' parameter of OpenAICompatibleBackend must start with 'http://' or 'https://'. "
                f"Got {self.base_url!r} instead; e.g. {DEFAULT_BASE_URL!r}."
            )
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(
                f"The 'max_retries' parameter of OpenAICompatibleBackend must be an int >= 0. "
                f"Got {self.max_retries!r} instead."
            )
        for name in ("timeout", "backoff", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or (name == "timeout" and value == 0):
                raise ConfigError(
                    f"The '{name}' parameter of OpenAICompatibleBackend must be a positive number of seconds. "
                    f"Got {value!r} instead."
                )


# -------------------------------------------------------------------------------------- response parsing


def _json_body(response: httpx.Response, url: str) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BackendError(
            f"POST {url} answered HTTP {response.status_code} with a body that is not a JSON object: "
            f"{response.text[:200]!r}. Is base_url pointing at an OpenAI-compatible API (usually ending in /v1)?"
        )
    return body


def _server_message(response: httpx.Response) -> str:
    """The error text a server sent, from the shapes OpenAI, vLLM and FastAPI use."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("error", "message", "detail"):
            if body.get(key):
                return str(body[key])
    return str(body)[:500]


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """A numeric ``Retry-After`` header in seconds; ``None`` when absent or an HTTP date."""
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _ordered_choices(body: dict, expected: int, url: str) -> list[dict]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise BackendError(
            f"The response from {url} has no 'choices' list (keys: {sorted(body)}). {_NO_LOGPROBS_HINT}"
        )
    if len(choices) != expected:
        raise BackendError(f"The response from {url} has {len(choices)} choices; expected {expected}.")
    if not all(isinstance(c.get("index"), int) for c in choices):
        return choices  # no usable indices: trust the order they came in
    # Servers may answer in completion order; 'index' is the position in the request.
    ordered = sorted(choices, key=lambda c: c["index"])
    if [c["index"] for c in ordered] != list(range(expected)):
        raise BackendError(
            f"The choices from {url} have indices {[c['index'] for c in ordered]}; expected 0..{expected - 1}."
        )
    return ordered


def _legacy_logprobs(choice: dict, url: str, fields: tuple[str, ...]) -> list[list]:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not all(isinstance(logprobs.get(f), list) for f in fields):
        raise BackendError(
            f"A choice from {url} lacks 'logprobs' with fields {list(fields)}: got {logprobs!r}. "
            + _NO_LOGPROBS_HINT
        )
    columns = [logprobs[f] for f in fields]
    if len({len(c) for c in columns}) != 1:
        raise BackendError(
            f"A choice from {url} has logprobs fields of different lengths "
            f"({', '.join(f'{f}={len(c)}' for f, c in zip(fields, columns, strict=True))})."
        )
    return columns


def _completion_run(choice: dict, prompt: str, text: str, url: str) -> TokenLogprobs:
    """The tokens that start inside the completion; a token straddling the boundary counts as prompt."""
    tokens, values, offsets = _legacy_logprobs(choice, url, ("tokens", "token_logprobs", "text_offset"))
    if not all(isinstance(o, int) for o in offsets):
        raise BackendError(f"A choice from {url} has non-integer 'text_offset' values: {offsets[:10]!r}.")
    # The upper bound drops the token generated when the server insisted on max_tokens >= 1.
    kept = [(t, v) for t, v, o in zip(tokens, values, offsets, strict=True) if len(prompt) <= o < len(text)]
    if not prompt and kept and kept[0][1] is None:
        kept = kept[1:]  # the first token of a text has no context, so no log-prob
    return _token_run(kept, url)


def _generation(choice: dict, url: str) -> Generation:
    tokens, values = _legacy_logprobs(choice, url, ("tokens", "token_logprobs"))
    return Generation(
        text=str(choice.get("text") or ""),
        logprobs=_token_run(list(zip(tokens, values, strict=True)), url),
        finish_reason=str(choice.get("finish_reason") or "stop"),
    )


def _chat_generation(choice: dict, url: str) -> Generation:
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    text = str(message.get("content") or "")
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if content is None and not text:
        content = []  # an empty reply has no tokens to score
    if not isinstance(content, list) or not all(isinstance(e, dict) and "logprob" in e for e in content):
        raise BackendError(
            f"A chat choice from {url} lacks 'logprobs.content' entries with 'token' and 'logprob': "
            f"got {logprobs!r}. " + _NO_LOGPROBS_HINT
        )
    return Generation(
        text=text,
        logprobs=_token_run([(str(e.get("token", "")), e["logprob"]) for e in content], url),
        finish_reason=str(choice.get("finish_reason") or "stop"),
    )


def _token_run(pairs: list[tuple[str, Any]], url: str) -> TokenLogprobs:
    if any(not isinstance(v, (int, float)) for _, v in pairs):
        raise BackendError(
            f"The response from {url} has a missing or non-numeric log-prob among "
            f"{[v for _, v in pairs][:10]!r}. " + _NO_LOGPROBS_HINT
        )
    return TokenLogprobs(
        tokens=tuple(str(t) for t, _ in pairs),
        logprobs=np.array([v for _, v in pairs], dtype=np.float64),
    )


# ------------------------------------------------------------------------------------- input checking


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        raise ConfigError(
            f"'{name}' must be a sequence of strings, not one string; wrap it in a list: [{name}]."
        )
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise ConfigError(f"'{name}' must be a sequence of strings; found {type(t).__name__} {t!r}.")
    return texts


def _check_sampling(n: int, max_new_tokens: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"'n' must be an int >= 1 (samples per prompt). Got {n!r} instead.")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"'max_new_tokens' must be an int >= 1. Got {max_new_tokens!r} instead.")


def _check_messages(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    messages = list(messages)
    for i, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise ConfigError(
                f"Chat message {i} must be a dict with string 'role' and 'content'; got {m!r}. "
                "Example: {'role': 'user', 'content': 'Hi'}."
            )
    return messages
