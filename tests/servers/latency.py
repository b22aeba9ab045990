"""An OpenAI-style chat server that answers after a fixed latency, standing for a hosted API.

``/v1/chat/completions`` waits ``latency`` seconds (without blocking other requests), then answers.
A request with ``top_logprobs`` (option scoring) gets one answer token whose alternatives are
``pos`` and ``neg``: ``pos`` is the more probable when the last user message contains ``good``.
Any other request is answered ``echo: <last user message>``. Usage is one prompt token per word of
the messages and one completion token per answer token, so costs can be checked by hand.

The server counts what a test asserts: ``app.state.in_flight`` / ``max_in_flight`` (requests being
answered at once), ``requests`` (each body, in arrival order) and ``answered``. ``app.state.throttle``
maps a text to the number of times a request whose messages contain it is refused with HTTP
``app.state.throttle_status`` (429) and ``Retry-After: app.state.retry_after``; ``app.state.reject`` maps a text to an HTTP status (4xx/5xx)
it is always refused with.

    with serve(create_app(latency=0.2)) as base_url:   # serve from servers.chat_only
        ...
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["chat_answer", "create_app", "prompt_tokens"]


def prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])


def _last_user(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def chat_answer(body: dict[str, Any], served: str = "remote") -> dict[str, Any]:
    """The server's answer to one chat body (also what the batch server puts in its output file)."""
    text = _last_user(body)
    if body.get("top_logprobs"):
        good = "good" in text
        top = [{"token": "pos", "logprob": -0.1 if good else -2.4}, {"token": "neg", "logprob": -2.4 if good else -0.1}]
        top.sort(key=lambda e: -e["logprob"])
        choices = [{"index": 0, "message": {"role": "assistant", "content": top[0]["token"]},
                    "logprobs": {"content": [{**top[0], "top_logprobs": top}]}, "finish_reason": "length"}]
        produced = 1
    else:
        words = ["echo:", *text.split()][: int(body.get("max_tokens") or 16)]
        content = [{"token": w if i == 0 else " " + w, "logprob": -0.5} for i, w in enumerate(words)]
        choices = [{"index": j, "message": {"role": "assistant", "content": " ".join(words)},
                    "logprobs": {"content": content} if body.get("logprobs") else None, "finish_reason": "stop"}
                   for j in range(int(body.get("n") or 1))]
        produced = len(words) * len(choices)
    return {"id": "chatcmpl-test", "object": "chat.completion", "model": served, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens(body), "completion_tokens": produced,
                      "total_tokens": prompt_tokens(body) + produced}}


def create_app(*, latency: float = 0.2, served: str = "remote"):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    state = app.state
    state.in_flight = state.max_in_flight = state.answered = 0
    state.requests = []
    state.throttle = {}
    state.retry_after = 0.05
    state.throttle_status = 429
    state.reject = {}

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]):
        state.requests.append(body)
        state.in_flight += 1  # one event loop: no lock needed
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(latency)
            text = " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
            for needle, status in state.reject.items():
                if needle in text:
                    return JSONResponse({"error": {"message": f"refused: {needle}"}}, status_code=status)
            for needle, left in list(state.throttle.items()):
                if needle in text and left > 0:
                    state.throttle[needle] = left - 1
                    return JSONResponse({"error": {"message": "rate limited"}}, status_code=state.throttle_status,
                                        headers={"Retry-After": str(state.retry_after)})
            state.answered += 1
            return chat_answer(body, served)
        finally:
            state.in_flight -= 1

    return app
