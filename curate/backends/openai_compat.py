"""A backend for any server that speaks the OpenAI HTTP API: ``vllm serve``, llama.cpp's server, hosted APIs.

Two endpoints, and the ``api`` option says which may be used:

* ``/chat/completions``, which every server has and hosted APIs have alone, takes conversations. A prompt
  that ``chat_prompt`` rendered is sent as its messages, and the server applies its template;
  ``chat_prompt`` renders with the model's own template (``apply_chat_template`` of the tokenizer named
  by the ``tokenizer`` option, or found in the model's local folder), so the text a caller sees and
  counts is the text the model reads. Options are scored from the answer's first token
  (``max_tokens: 1, logprobs: true, top_logprobs: N``), so each option must differ in its first token.
* ``/completions`` with ``echo`` and logprobs (vLLM and other self-hosted servers) scores a *given* text:
  the server returns per-token log-probs with character offsets, and we keep the tokens that start
  inside the completion. Only this scores a text (perplexity), options that share a first token, or
  prompts that are raw text rather than conversations.

``api="auto"`` (the default) sends conversations to chat and raw text to completions, and learns once,
from the first refusal (HTTP 400/404/405/422 from ``/completions``, or an answer without echo
log-probs), that the server has no completions endpoint or no echo. From then on raw prompts are
generated from as one user message each, and scoring that needs echo is refused up front with the
reason. ``api="chat"`` never calls ``/completions``; ``api="completions"`` sends every prompt there as
text (``chat`` still goes to chat, since it takes messages).

Requests go out through :meth:`~OpenAICompatibleBackend.stream` (and ``_each``, its list form) and
``_post`` (one POST). ``stream`` runs up to ``max_concurrency`` requests at once on a thread pool
sharing one ``httpx.Client`` (the request code stays synchronous, and ``httpx.MockTransport`` still
serves tests); the first request of a call goes alone, so what the server lacks is learned once and
not by sixteen failures. Results come back in input order as the completed prefix grows, each with
the tokens its own requests used, so a caller can journal each paid answer as it arrives. Transient
failures (connection errors, timeouts, HTTP 429 and 5xx) are retried with capped exponential backoff
and jitter, or after the server's ``Retry-After``; any other 4xx means the request itself is wrong and
is raised at once. ``timeout`` bounds each request.

With ``batch_api`` every request goes through the OpenAI Batch API instead
(:mod:`curate.backends.batch_api`): a call's requests are collected, submitted as one batch, its id
recorded in the run's journal (:meth:`~OpenAICompatibleBackend.use_journal`), polled, and the answers
read back; a resumed run waits for the recorded batch rather than submitting again. Identical
requests (the same endpoint and body) share one answer.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import httpx
import numpy as np

from curate.backends.base import (
    BaseBackend,
    Generation,
    TokenLogprobs,
    Usage,
    _check_options,
    _check_same_length,
    log_softmax_rows,
)
from curate.backends.batch_api import BatchJobs, MemoryRecord, request_key
from curate.backends.streaming import ItemStreams
from curate.errors import BackendError, ConfigError, MissingDependencyError

__all__ = ["APIS", "OpenAICompatibleBackend"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
APIS = ("auto", "chat", "completions")

_NO_LOGPROBS_HINT = (
    "The server may not support echo/logprobs on this endpoint (many hosted chat-only APIs do not); "
    "serve the model with vLLM or another server that returns them."
)
# How servers answer an endpoint they lack (404, 405) or parameters they do not take there (400, 422).
_REFUSALS = (400, 404, 405, 422)
# Renderings remembered by chat_prompt: enough for the batches in flight, bounded for long runs.
_MAX_CONVERSATIONS = 4096

T = TypeVar("T")
R = TypeVar("R")


class _RejectedRequest(BackendError):
    """A 4xx other than 429: the request itself is wrong, so retrying cannot help."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class _MissingLogprobs(BackendError):
    """A 200 answer without the log-probs asked for: the server ignores echo or logprobs."""


# A BaseException, not an error: it must pass every ``except BackendError`` between ``_post`` and the
# batch collector, as the request it stands for has not failed but has not been sent yet.
class _Deferred(BaseException):  # noqa: N818
    """A request collected for the next batch (``batch_api``): the item is run again once it is answered."""


class _Collector:
    """The requests of one pass over a call's items (``batch_api``) and the answers known so far."""

    def __init__(self, answers: dict[str, dict], tries: dict[str, int]) -> None:
        self.answers = answers  # custom_id -> {"status", "body"} or {"status": None, "error"}
        self.tries = tries  # custom_id -> batches it was sent in without a final answer
        self.requests: dict[str, tuple[str, dict, str]] = {}  # custom_id -> (path, body, kind)
        self.seen: dict[str, int] = {}  # request key -> times the current item sent it


class OpenAICompatibleBackend(ItemStreams, BaseBackend):
    """Scores and samples through an OpenAI-compatible HTTP server.

    Parameters
    ----------
    model : the model name the server expects in each request; a local folder also gives the tokenizer.
    base_url : the API root, ending in ``/v1`` for most servers.
    api_key : sent as a bearer token; ``None`` falls back to the ``OPENAI_API_KEY`` environment variable.
    api : ``"auto"`` (chat for conversations, completions for raw text, learning what the server
        lacks), ``"chat"`` (only ``/chat/completions``) or ``"completions"`` (every prompt as text).
    tokenizer : the model's tokenizer (a local folder, a hub id, or a loaded tokenizer), for its chat
        template, token counts and option tokens; by default the model's folder when ``model`` is one.
    top_logprobs : answer tokens asked for when scoring options over chat (OpenAI allows at most 20).
    timeout : seconds allowed for each HTTP request.
    max_concurrency : the most requests in flight at once (16 suits hosted APIs; a local server may take
        more, a rate-limited key fewer).
    max_retries : how many times a transient failure is retried (so ``max_retries + 1`` attempts in all).
    backoff, max_backoff : the first retry waits about ``backoff`` seconds, doubling up to ``max_backoff``.
    batch_size : how many prompts are sent in one ``/completions`` request (1: each as a plain string,
        for servers that take no list).
    batch_api : send every request through the OpenAI Batch API (a discount, answers within
        ``batch_window``); batch ids are recorded where :meth:`use_journal` says.
    batch_poll_interval : seconds between polls of a submitted batch.
    batch_window : the completion window asked for (OpenAI: ``"24h"``).
    transport : an ``httpx`` transport to use instead of the network (tests pass ``httpx.MockTransport``).
    sleep : called with the seconds to wait between attempts and polls (tests pass a recorder).
    """

    name = "openai-compatible"

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        api: str = "auto",
        tokenizer: Any = None,
        top_logprobs: int = 20,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        batch_size: int = 16,
        max_concurrency: int = 16,
        batch_api: bool = False,
        batch_poll_interval: float = 30.0,
        batch_window: str = "24h",
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        super().__init__()
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.api = api
        self.tokenizer_source = tokenizer
        self.top_logprobs = top_logprobs
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.batch_api = batch_api
        self.batch_poll_interval = batch_poll_interval
        self.batch_window = batch_window
        self.transport = transport
        self.sleep = sleep
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()  # usage and the client, shared by the request threads
        self._local = threading.local()  # per thread: the item's usage, nesting depth, batch collector
        self._record: Any = None  # where batch ids go (the run's journal), set by use_journal
        self._jobs: BatchJobs | None = None
        # Jitter only; seeded so that reruns and tests see the same delays.
        self._rng = random.Random(0)
        # Learned on first refusal: some servers reject max_tokens=0 and need one generated token.
        self._echo_max_tokens = 0
        # What the server lacks, learned once (api="auto"), in the words of the refusal.
        self._no_completions: str | None = None
        self._no_echo: str | None = None
        self._chat_logprobs = True  # False once the server refused logprobs on a chat answer
        self._conversations: OrderedDict[str, list[dict[str, str]]] = OrderedDict()
        self._option_keys: dict[tuple[str, ...], list[tuple[str, ...]] | None] = {}
        self._tokenizer: Any = None
        self._tokenizer_loaded = False
        self._warned: set[str] = set()

    # ----------------------------------------------------------------------------------------- scoring

    def completion_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenLogprobs]:
        _check_same_length(prompts, completions, "prompts", "completions")
        prompts, completions = _check_texts(prompts, "prompts"), _check_texts(completions, "completions")
        refusal = self._echo_refusal()
        if refusal is not None:
            raise refusal
        texts = [p + c for p, c in zip(prompts, completions, strict=True)]
        url = self._url("/completions")
        # logprobs=1, not 0: some servers read 0 as "no log-probs at all".
        payload = {"model": self.model, "echo": True, "logprobs": 1, "temperature": 0.0}
        try:
            choices = self._completions(texts, payload, kind="logprobs")
            return [_completion_run(c, p, t, url) for c, p, t in zip(choices, prompts, texts, strict=True)]
        except _MissingLogprobs:
            if self._api() == "auto":
                self._no_echo = f"{url} answered without echo log-probs"
            raise
        except _RejectedRequest as exc:
            if self._api() != "auto" or exc.status_code not in _REFUSALS:
                raise
            self._no_echo = str(exc)
            if exc.status_code in (404, 405):
                self._no_completions = str(exc)
            raise self._echo_refusal() from exc

    def _echo_refusal(self) -> Exception | None:
        """Why echo scoring cannot run here, as the error to raise; None when it may be tried."""
        what = "Scoring a given text (completion_logprobs, perplexity, options of raw-text prompts)"
        if self._api() == "chat":
            return ConfigError(
                f"{what} needs /completions with echo, which api='chat' never calls. Set the backend's "
                "'api' option to 'auto' or 'completions' with a server that echoes log-probs (vLLM does)."
            )
        if self._no_echo is not None:
            return BackendError(
                f"{what} needs /completions with echo + logprobs, which {self.base_url} does not serve "
                f"(learned from: {self._no_echo}). " + _NO_LOGPROBS_HINT
            )
        return None

    def option_logprobs(
        self, prompts: Sequence[str], options: Sequence[str], *, normalize: bool = True
    ) -> np.ndarray:
        """Conversations (prompts from ``chat_prompt``) are scored over chat from the answer's first
        token; raw-text prompts, and options that share a first token, with echo."""
        options = _check_options(options)
        prompts = _check_texts(prompts, "prompts")
        conversations = self._conversations_of(prompts)
        chat_rows = [i for i, c in enumerate(conversations) if c is not None]
        keys = self._option_keys_of(options) if chat_rows else None
        why = "the prompts are raw text, not conversations rendered by chat_prompt"
        if chat_rows and keys is None:
            why = "they share a first token under the model's tokenizer"
            if self._echo_refusal() is not None:
                raise ConfigError(self._unscorable(options, why))
            logger.info("options %s share a first token: scoring them with echo on /completions", options)
            chat_rows = []
        scores = np.zeros((len(prompts), len(options)), dtype=np.float64)
        if chat_rows:
            scores[chat_rows] = self._chat_option_scores([conversations[i] for i in chat_rows], keys)
        text_rows = sorted(set(range(len(prompts))) - set(chat_rows))
        if text_rows:
            try:
                scores[text_rows] = super().option_logprobs([prompts[i] for i in text_rows], options, normalize=False)
            except BackendError as exc:
                if self._no_echo is None:
                    raise
                raise ConfigError(self._unscorable(options, why)) from exc
        return log_softmax_rows(scores) if normalize else scores

    def _unscorable(self, options: list[str], why: str) -> str:
        tokens = ""
        tok = self.tokenizer
        if tok is not None:
            tokens = f" (tokens: {[tok.convert_ids_to_tokens(tok.encode(o, add_special_tokens=False)) for o in options]})"
        echo = (f"{self.base_url} has no /completions echo ({self._no_echo})" if self._no_echo is not None
                else "api='chat' never calls /completions")
        return (f"Options {options}{tokens} cannot be scored over chat because {why}, and echo scoring is not "
                f"available: {echo}. Use options (verbalizers) that differ in their first token, render "
                "prompts with chat_prompt (chat: true), or serve the model where /completions echoes log-probs (vLLM).")

    def _option_keys_of(self, options: list[str]) -> list[tuple[str, ...]] | None:
        """For each option, the names its first token may have in ``top_logprobs`` (its text, and vLLM's
        ``token_id:N``); None when two options share a first token. Checked once per option set."""
        key = tuple(options)
        if key not in self._option_keys:
            tok = self.tokenizer
            if tok is None:
                logger.info("no tokenizer for %s: options %s are taken as single tokens, found by their text",
                            self.model, options)
                self._option_keys[key] = [(o,) for o in options]
            else:
                ids = [tok.encode(o, add_special_tokens=False) for o in options]
                names = [(tok.decode([t[0]]), f"token_id:{t[0]}") for t in ids]
                if len({t[0] for t in ids}) < len(ids) or len({n[0] for n in names}) < len(names):
                    self._option_keys[key] = None
                else:
                    if any(len(t) > 1 for t in ids):
                        logger.info("options %s are not all single tokens: each is scored by its first token %s",
                                    options, [n[0] for n in names])
                    self._option_keys[key] = names
        return self._option_keys[key]

    def _chat_option_scores(self, conversations: list[list[dict]], keys: list[tuple[str, ...]]) -> np.ndarray:
        top_n = self.top_logprobs
        if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
            raise ConfigError(f"The 'top_logprobs' parameter of OpenAICompatibleBackend must be an int >= 1. "
                              f"Got {top_n!r} instead.")
        payload = {"model": self.model, "max_tokens": 1, "logprobs": True, "top_logprobs": top_n}
        answers = self._each(lambda messages: self._first_token(payload, messages), conversations)
        scores = np.empty((len(answers), len(keys)), dtype=np.float64)
        unseen = 0
        for r, top in enumerate(answers):
            found = [next((top[n] for n in names if n in top), None) for names in keys]
            missing = sum(v is None for v in found)
            if missing:
                # Below every token listed, and together no more than the mass they leave: an upper bound.
                rest = max(1.0 - sum(math.exp(v) for v in top.values()), 1e-30)
                bound = min(min(top.values()), math.log(rest / missing))
                found = [bound if v is None else v for v in found]
                unseen += missing
            scores[r] = found
        if unseen:
            logger.warning("%d option score(s) fell outside the top %d answer tokens and were set to an upper "
                           "bound of their log-prob; raise 'top_logprobs' if the server allows it", unseen, top_n)
        return scores

    def _first_token(self, payload: dict, messages: list[dict]) -> dict[str, float]:
        """The log-probs the server lists for the answer's first token, by token text."""
        url, body = self._post("/chat/completions", {**payload, "messages": messages}, kind="options")
        [choice] = _ordered_choices(body, 1, url)
        logprobs = choice.get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        first = content[0] if isinstance(content, list) and content and isinstance(content[0], dict) else {}
        entries = [e for e in first.get("top_logprobs") or [] if isinstance(e, dict)] + [first]
        top: dict[str, float] = {}
        for e in entries:
            if isinstance(e.get("token"), str) and isinstance(e.get("logprob"), (int, float)):
                top.setdefault(e["token"], float(e["logprob"]))
        if not top:
            raise _MissingLogprobs(
                f"The chat answer from {url} has no 'logprobs.content[0].top_logprobs' to score options with: "
                f"got {logprobs!r}. Use a server that returns top_logprobs on chat answers (OpenAI, vLLM do)."
            )
        return top

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
        """Conversations (prompts from ``chat_prompt``) are answered over chat; raw text is continued on
        ``/completions``, or sent as one user message where the server has no completions."""
        prompts = _check_texts(prompts, "prompts")
        sampling = _sampling(n, max_new_tokens, temperature, top_p, seed)
        conversations = self._conversations_of(prompts)
        out: list[list[Generation] | None] = [None] * len(prompts)
        raw = [i for i, c in enumerate(conversations) if c is None]
        if raw and self._no_completions is None:
            try:
                continued = self._completions([prompts[i] for i in raw], {"model": self.model, **sampling,
                                                                          "logprobs": 1}, kind="generate", n=n)
            except _RejectedRequest as exc:
                if self._api() != "auto" or exc.status_code not in _REFUSALS:
                    raise
                self._no_completions = self._no_echo = str(exc)
                logger.warning("%s refused /completions (HTTP %d): raw prompts go to /chat/completions as one "
                               "user message each from now on", self.base_url, exc.status_code)
            else:
                url = self._url("/completions")
                for k, i in enumerate(raw):
                    out[i] = [_generation(c, url) for c in continued[k * n : (k + 1) * n]]
        for i in range(len(prompts)):
            if out[i] is None and conversations[i] is None:
                conversations[i] = self._as_user_message(prompts[i])
        rows = [i for i, o in enumerate(out) if o is None]
        answers = self._each(lambda messages: self._chat_reply(messages, sampling), [conversations[i] for i in rows])
        for i, replies in zip(rows, answers, strict=True):
            out[i] = replies
        return out  # type: ignore[return-value]

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
        sampling = _sampling(n, max_new_tokens, temperature, top_p, seed)
        conversations = [_check_messages(m) for m in messages_list]
        return self._each(lambda messages: self._chat_reply(messages, sampling), conversations)

    def _chat_reply(self, messages: list[dict[str, str]], sampling: dict) -> list[Generation]:
        """One conversation's ``n`` answers; token log-probs are asked for, and done without once refused."""
        payload = {"model": self.model, "messages": messages, **sampling}
        if self._chat_logprobs:
            payload["logprobs"] = True
        try:
            url, body = self._post("/chat/completions", payload, kind="chat")
        except _RejectedRequest as exc:
            if "logprobs" not in payload or exc.status_code not in (400, 422):
                raise
            payload.pop("logprobs")
            url, body = self._post("/chat/completions", payload, kind="chat")
            self._chat_logprobs = False
            logger.warning("%s refused logprobs on chat answers (%s): generations carry no token log-probs",
                           self.base_url, exc)
        replies = [_chat_generation(c, url) for c in _ordered_choices(body, sampling["n"], url)]
        if any(r.text and not r.logprobs.tokens for r in replies):
            self._warn_once("no-logprobs", "%s sent chat answers without token log-probs: their log-prob runs "
                            "are empty", self.base_url)
        return replies

    # ------------------------------------------------------------------------------------------- chat

    def chat_prompt(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """Render messages with the model's chat template (its tokenizer's ``apply_chat_template``).

        With the generation prompt, the rendering is remembered with its messages: ``generate`` and
        ``option_logprobs`` send it to ``/chat/completions`` as those messages, where the server applies
        the same template. Without a tokenizer the rendering is a plain ``role: content`` layout that only
        stands for the messages (token counts from it are estimates); ``api="completions"``, which sends
        the text itself, needs the real template.
        """
        messages = _check_messages(messages)
        api, tok = self._api(), self.tokenizer
        if tok is not None and getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        elif api == "completions":
            raise ConfigError(
                f"api='completions' sends chat prompts as text, so chat_prompt needs the model's chat template, "
                f"and {self.model!r} has no tokenizer with one here. Pass the backend option 'tokenizer' (a local "
                "folder or hub id of the served model), or set api to 'auto' or 'chat'."
            )
        else:
            self._warn_once("template", "%s: no tokenizer with a chat template (set the 'tokenizer' option); chat "
                            "prompts are sent as messages and the server applies its template", self.model)
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            text += "assistant:" if add_generation_prompt else ""
        if add_generation_prompt and api != "completions":
            with self._lock:  # prompts are rendered on the request threads too (stream)
                self._conversations[text] = messages
                self._conversations.move_to_end(text)
                while len(self._conversations) > _MAX_CONVERSATIONS:
                    self._conversations.popitem(last=False)
        return text

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (from the ``tokenizer`` option or the model's local folder), or None."""
        if not self._tokenizer_loaded:
            self._tokenizer = _load_tokenizer(self.tokenizer_source, self.model)
            self._tokenizer_loaded = True
        return self._tokenizer

    def _conversations_of(self, prompts: list[str]) -> list[list[dict[str, str]] | None]:
        """Each prompt's messages when it goes to chat, else None (it goes to /completions as text)."""
        api = self._api()
        if api == "completions":
            return [None] * len(prompts)
        found: list[list[dict[str, str]] | None] = []
        for prompt in prompts:
            with self._lock:
                messages = self._conversations.get(prompt)
                if messages is not None:
                    self._conversations.move_to_end(prompt)
            if messages is None and api == "chat":
                messages = self._as_user_message(prompt)
            found.append(messages)
        return found

    def _as_user_message(self, prompt: str) -> list[dict[str, str]]:
        self._warn_once("raw", "%s: prompts that chat_prompt did not render are sent to /chat/completions as one "
                        "user message each", self.base_url)
        return [{"role": "user", "content": prompt}]

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    # ---------------------------------------------------------------------------------------- plumbing

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> OpenAICompatibleBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _api(self) -> str:
        if self.api not in APIS:
            raise ConfigError(f"The 'api' parameter of OpenAICompatibleBackend must be one of {', '.join(APIS)}. "
                              f"Got {self.api!r} instead.")
        return self.api

    def _url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def use_journal(self, journal: Any) -> None:
        """Record Batch API batches in ``journal`` (anything with ``get_meta`` / ``set_meta``: the run's
        journal), so that a run killed while a batch runs picks it up on resume instead of paying again."""
        self._record = journal
        self._jobs = None

    def stream(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[int, R, Usage]]:
        """``fn(item)`` for every item, where ``fn`` calls this backend (``option_logprobs([prompt],
        ...)``, ``generate``...): up to ``max_concurrency`` items at once, or all of them through one
        batch with ``batch_api``. Yields ``(position, result, usage)`` as items finish, in input order
        (the completed prefix), ``usage`` being the tokens of that item's own requests; when an item
        fails, those already answered are yielded (they were paid for) before its error is raised."""
        if getattr(self._local, "depth", 0):  # called from inside an item: it runs there, inline
            for k, item in enumerate(items):
                yield (k, *self._run_item(fn, item))
            return
        if self.batch_api:
            yield from self._batch_stream(fn, list(items))
        else:
            yield from self._fan_out(fn, items)

    def _each(self, send: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``send(item)`` for every item, results in order (:meth:`stream`), under a progress bar when
        there are many (none in quiet mode)."""
        if getattr(self._local, "depth", 0):
            return [send(item) for item in items]
        from curate.progress import progress

        out: list[Any] = [None] * len(items)
        for k, result, _ in progress(self.stream(send, items), total=len(items), desc=f"{self.model} requests",
                                     unit="request", min_total=8):
            out[k] = result
        return out

    def _fan_out(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[int, R, Usage]]:
        limit = self._checked_concurrency()
        self._http()  # built here, once, not by the first threads to need it
        yield from self._fan_out_items(fn, items, limit, thread_name="curate-http")

    def _batch_stream(self, fn: Callable[[T], R], items: list[T]) -> Iterator[tuple[int, R, Usage]]:
        """Every item run until its requests are known, those sent as one batch, the items run again
        with the answers; repeated while an item needs another request (a refusal's fallback, a retry)."""
        answers: dict[str, dict] = {}
        tries: dict[str, int] = {}
        pending = list(range(len(items)))
        while pending:
            collector = _Collector(answers, tries)
            waiting = []
            for k in pending:
                collector.seen = {}
                self._local.batch = collector
                try:
                    result, used = self._run_item(fn, items[k])
                except _Deferred:
                    waiting.append(k)
                    continue
                finally:
                    self._local.batch = None
                yield k, result, used
            if not waiting:
                return
            if not collector.requests:  # pragma: no cover - a deferred item always leaves its request
                raise BackendError("internal error: items wait for a batch that has no requests")
            arrived = self._batch_jobs().run({c: (path, body) for c, (path, body, _) in collector.requests.items()})
            for cid, answer in arrived.items():
                if answer.get("status") == 200 and isinstance(answer.get("body"), dict):
                    self._record_usage(answer["body"], collector.requests[cid][2], item=False)
            answers.update(arrived)
            pending = waiting

    def _batch_jobs(self) -> BatchJobs:
        if self._jobs is None:
            self._check_params()
            if self._record is None:
                self._warn_once("memory", "batch ids are kept in memory only (no journal was given with use_journal): "
                                "a process killed while a batch runs cannot pick it up again")
                self._record = MemoryRecord()
            self._jobs = BatchJobs(self._send, self.base_url, self._record, poll_interval=self.batch_poll_interval,
                                   completion_window=self.batch_window, sleep=self.sleep)
        return self._jobs

    def _answered(self, collector: _Collector, path: str, payload: dict, kind: str) -> tuple[str, dict]:
        """The batch's answer to one request, or the request collected for the next batch."""
        key = request_key(path, payload)
        n = collector.seen.get(key, 0)
        collector.seen[key] = n + 1
        cid = f"{key}-{n}"  # an item that sends the same request twice wants two answers
        url = self._url(path)
        answer = collector.answers.get(cid)
        if answer is not None:
            status = answer.get("status")
            if status == 200 and isinstance(answer.get("body"), dict):
                self._record_usage(answer["body"], kind, total=False)
                return url, answer["body"]
            message = str(answer.get("error") or _batch_message(answer.get("body")))
            if isinstance(status, int) and status != 429 and 400 <= status < 500:
                raise _RejectedRequest(f"POST {url} (in a batch) was rejected with HTTP {status}: {message}. This is "
                                       "not retried because the request itself is wrong.", status)
            collector.tries[cid] = collector.tries.get(cid, 0) + 1
            if collector.tries[cid] > self.max_retries:
                raise BackendError(f"POST {url} (in a batch) failed in {collector.tries[cid]} batches "
                                   f"(max_retries={self.max_retries}); last error: HTTP {status}: {message}.")
            del collector.answers[cid]  # transient (429, 5xx, expired): sent again in the next batch
        collector.requests[cid] = (path, payload, kind)
        raise _Deferred

    def _completions(self, texts: list[str], payload: dict, *, kind: str, n: int = 1) -> list[dict]:
        """The choices of ``/completions`` for each text (``n`` each, in order), ``batch_size`` texts per request."""
        size = self._checked_batch_size()
        batches = [texts[start : start + size] for start in range(0, len(texts), size)]
        # A single prompt goes as a string: some servers take nothing else (batch_size=1 serves them).
        answers = self._each(lambda b: self._completion_request({**payload, "prompt": b[0] if len(b) == 1 else b}, kind),
                             batches)
        choices: list[dict] = []
        for batch, (url, body) in zip(batches, answers, strict=True):
            # OpenAI numbers the choices of prompt i as i*n .. i*n + n-1.
            choices.extend(_ordered_choices(body, len(batch) * n, url))
        return choices

    def _completion_request(self, payload: dict, kind: str) -> tuple[str, dict]:
        if not payload.get("echo"):
            return self._post("/completions", payload, kind=kind)
        payload = {**payload, "max_tokens": self._echo_max_tokens}
        try:
            return self._post("/completions", payload, kind=kind)
        except _RejectedRequest as exc:
            if exc.status_code != 400 or self._echo_max_tokens != 0:
                raise
        # A generated token is harmless: only tokens that start inside the scored text are kept.
        result = self._post("/completions", {**payload, "max_tokens": 1}, kind=kind)
        self._echo_max_tokens = 1
        return result

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._check_params()
                api_key = self.api_key if self.api_key is not None else os.environ.get("OPENAI_API_KEY")
                headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
                limit = self._checked_concurrency()
                limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
                self._client = httpx.Client(timeout=self.timeout, transport=self.transport, headers=headers,
                                            limits=limits)
        return self._client

    def _post(self, path: str, payload: dict, *, kind: str) -> tuple[str, dict]:
        """POST ``payload`` as JSON, retrying transient failures; return the URL and the JSON body. With
        ``batch_api`` the answer comes from a batch (the request is collected for one when not yet sent)."""
        collector = getattr(self._local, "batch", None)
        if collector is not None:
            return self._answered(collector, path, payload, kind)
        url = self._url(path)
        body = _json_body(self._send("POST", path, json=payload), url)
        self._record_usage(body, kind)
        return url, body

    def _send(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """One HTTP request to ``path`` under ``base_url``, transient failures retried (``retry``); a
        response under 400 is returned, another 4xx raised at once as the request's own fault."""
        client = self._http()
        url = self._url(path)
        attempts = self.max_retries + 1 if retry else 1
        last_error = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                response = client.request(method, url, **kwargs)
            except httpx.TransportError as exc:  # connection refused or reset, timeouts, broken responses
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status < 400:
                    return response
                message = _server_message(response)
                if status != 429 and status < 500:
                    raise _RejectedRequest(
                        f"{method} {url} was rejected with HTTP {status}: {message}. This is not retried because "
                        "the request itself is wrong: check the model name, base_url and parameters.",
                        status,
                    )
                last_error = f"HTTP {status}: {message}"
                retry_after = _retry_after_seconds(response)
            if attempt + 1 < attempts:
                self.sleep(self._delay(attempt, retry_after))
        raise BackendError(
            f"{method} {url} failed after {attempts} attempts (max_retries={self.max_retries}); "
            f"last error: {last_error}. Check that the server is up, or raise 'max_retries' or 'timeout'."
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server knows its own load better than our guess
            return retry_after
        capped = min(self.max_backoff, self.backoff * 2.0**attempt)
        # "Equal jitter": spreads clients that failed together, yet never shrinks the next wait.
        return capped * (0.5 + 0.5 * self._rng.random())

    def _record_usage(self, body: dict, kind: str, *, total: bool = True, item: bool = True) -> None:
        """Count a response's tokens in the backend's ``usage`` (``total``) and in the usage of the
        items it answers (``item``: those :meth:`stream` is running on this thread)."""
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        tokens_in, tokens_out = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
        if total:
            with self._lock:
                self.usage.add(tokens_in, tokens_out, kind=kind)
        if item:
            self._count_item(tokens_in, tokens_out, kind)

    def _checked_concurrency(self) -> int:
        value = self.max_concurrency
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"The 'max_concurrency' parameter of OpenAICompatibleBackend must be an int >= 1 "
                              f"(requests in flight at once). Got {value!r} instead.")
        return value

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
        if not isinstance(self.batch_api, bool):
            raise ConfigError(f"The 'batch_api' parameter of OpenAICompatibleBackend must be true or false. "
                              f"Got {self.batch_api!r} instead.")
        for name in ("timeout", "backoff", "max_backoff", "batch_poll_interval"):
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


def _batch_message(body: Any) -> str:
    """The error text of a response body read from a batch's output or error file."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if error:
            return str(error)
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
        raise _MissingLogprobs(
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
    if text and not any(o < len(text) for o in offsets):
        raise _MissingLogprobs(
            f"A choice from {url} has no log-probs for the text it was sent, only for what it generated: "
            "the server ignores 'echo'. " + _NO_LOGPROBS_HINT
        )
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
    if content is None:
        content = []  # the server sent no token log-probs (some never do, some were asked for none)
    if not isinstance(content, list) or not all(isinstance(e, dict) and "logprob" in e for e in content):
        raise BackendError(
            f"A chat choice from {url} has malformed 'logprobs.content' (entries need 'token' and 'logprob'): "
            f"got {logprobs!r}."
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


def _sampling(n: int, max_new_tokens: int, temperature: float, top_p: float, seed: int | None) -> dict:
    """The request fields of a sampling call, checked; the same on both endpoints."""
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"'n' must be an int >= 1 (samples per prompt). Got {n!r} instead.")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"'max_new_tokens' must be an int >= 1. Got {max_new_tokens!r} instead.")
    fields = {"n": n, "max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    return fields if seed is None else {**fields, "seed": seed}


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


def _load_tokenizer(source: Any, model: str) -> Any:
    """A loaded tokenizer as given, one loaded from a folder or hub id, the model's own folder's, or None."""
    if source is not None and not isinstance(source, (str, os.PathLike)):
        return source
    path = source if source is not None else (model if os.path.isdir(model) else None)
    if path is None:
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a core dependency
        raise MissingDependencyError("The 'tokenizer' option of OpenAICompatibleBackend needs transformers: "
                                     "pip install transformers.") from exc
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"The 'tokenizer' parameter of OpenAICompatibleBackend must name a tokenizer (a local "
                          f"folder or hub id). Loading {str(path)!r} failed: {exc}") from None
