"""A chat-only OpenAI-compatible server, as hosted APIs are today: ``/v1/chat/completions`` and nothing else
(so ``/v1/completions`` answers 404), with ``logprobs`` / ``top_logprobs`` on the answer.

It serves a transformers causal LM from a folder. The prompt is the tokenizer's chat template with the
generation prompt, tokenised as the transformers backend does (no special tokens added, BOS first where
the tokenizer adds one), so its answers can be compared with that backend's to the last digit. Tokens are
named by their decoded text, as OpenAI and vLLM name them.

    with serve(create_app(folder)) as base_url:   # "http://127.0.0.1:PORT/v1"
        ...
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["create_app", "serve"]


def create_app(model_dir: str, *, served_name: str = "tiny"):
    """The FastAPI app; ``app.state.paths`` lists every path requested, ``app.state.bodies`` every chat body."""
    import torch
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    eos = tok.eos_token_id
    lock = threading.Lock()  # one forward pass at a time: the model is shared by the worker threads
    app = FastAPI()
    app.state.paths = []
    app.state.bodies = []

    @app.middleware("http")
    async def record(request: Request, call_next):
        app.state.paths.append(request.url.path)
        return await call_next(request)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = tok.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]):
        app.state.bodies.append(body)
        if body.get("model") != served_name:
            return error(404, f"The model '{body.get('model')}' does not exist; this server has '{served_name}'.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "'messages' must be a non-empty list.")
        top_n = body.get("top_logprobs")
        if top_n is not None and not body.get("logprobs"):
            return error(400, "'top_logprobs' needs 'logprobs' to be true.")
        n, max_tokens = int(body.get("n") or 1), int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        temperature, top_p = float(body.get("temperature", 1.0)), float(body.get("top_p", 1.0))
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = [tok.bos_token_id] if getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None else []
        prompt = bos + tok(text, add_special_tokens=False)["input_ids"]
        generator = torch.Generator().manual_seed(int(body.get("seed") or 0))
        choices, produced = [], 0
        for j in range(n):
            ids, content, finish = list(prompt), [], "length"
            for _ in range(max_tokens):
                with lock, torch.inference_mode():
                    logits = model(torch.tensor([ids])).logits[0, -1].float()
                logp = torch.log_softmax(logits, dim=-1)
                if temperature == 0:
                    token = int(logp.argmax())
                else:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    if top_p < 1.0:  # nucleus: keep the smallest set of tokens holding top_p of the mass
                        sorted_p, order = probs.sort(descending=True)
                        keep = sorted_p.cumsum(0) - sorted_p < top_p
                        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
                    token = int(torch.multinomial(probs, 1, generator=generator))
                if token == eos:
                    finish = "stop"
                    break
                item = entry(token, float(logp[token]))
                if top_n:
                    values, indices = logp.topk(min(int(top_n), logp.numel()))
                    item["top_logprobs"] = [entry(int(i), float(v)) for v, i in zip(values, indices, strict=True)]
                content.append((token, item))
                ids.append(token)
            produced += len(content)
            choices.append({
                "index": j,
                "message": {"role": "assistant", "content": tok.decode([t for t, _ in content], skip_special_tokens=True)},
                "logprobs": {"content": [item for _, item in content]} if body.get("logprobs") else None,
                "finish_reason": finish,
            })
        return {"id": f"chatcmpl-{len(app.state.bodies)}", "object": "chat.completion", "created": int(time.time()),
                "model": served_name, "choices": choices,
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": produced,
                          "total_tokens": len(prompt) + produced}}

    return app


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free loopback port; yield its ``/v1`` base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the chat-only test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
