"""A server with OpenAI's Batch API: ``POST /v1/files``, ``POST /v1/batches``, ``GET /v1/batches``,
``GET /v1/batches/{id}`` and ``GET /v1/files/{id}/content``, answering each line as
:func:`servers.latency.chat_answer` does.

A batch is ``in_progress`` until it has been polled ``app.state.polls_to_complete`` times (counted
per batch, whichever process polls it), then ``completed`` with an output file, and an error file
for the lines refused by ``app.state.fail_lines`` (text -> HTTP statuses, one used up by each line
whose messages contain the text). ``app.state.uploads`` / ``created`` / ``polls`` / ``downloads``
count the calls, so a test can assert that a resumed run submitted nothing twice.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations, and ``Request``
# is imported inside create_app, where string annotations would not find it.
import json
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from servers.latency import chat_answer

__all__ = ["create_app"]


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by field name (python-multipart is not installed here)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


def create_app(*, polls_to_complete: int = 2, served: str = "remote"):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    app = FastAPI()
    state = app.state
    state.polls_to_complete = polls_to_complete
    state.files: dict[str, bytes] = {}
    state.batches: dict[str, dict[str, Any]] = {}
    state.uploads = state.created = state.downloads = 0
    state.polls: dict[str, int] = {}
    state.fail_lines: dict[str, list[int]] = {}
    state.lines: list[dict] = []  # every request line of every batch, as submitted

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)

    @app.post("/v1/files")
    async def upload(request: Request):
        parts = _multipart(request.headers.get("content-type", ""), await request.body())
        if parts.get("purpose") != b"batch" or "file" not in parts:
            return error(400, f"expected fields 'file' and purpose=batch; got {sorted(parts)}")
        state.uploads += 1
        file_id = f"file-{len(state.files) + 1}"
        state.files[file_id] = parts["file"]
        return {"id": file_id, "object": "file", "purpose": "batch", "bytes": len(parts["file"])}

    @app.post("/v1/batches")
    def create(body: dict[str, Any]):
        if body.get("input_file_id") not in state.files:
            return error(404, f"no file {body.get('input_file_id')!r}")
        if body.get("endpoint") not in ("/v1/chat/completions", "/v1/completions"):
            return error(400, f"unsupported endpoint {body.get('endpoint')!r}")
        state.created += 1
        batch_id = f"batch_{state.created}"
        lines = [json.loads(x) for x in state.files[body["input_file_id"]].decode().split("\n") if x.strip()]
        state.lines.extend(lines)
        state.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window"), "status": "validating", "output_file_id": None,
            "error_file_id": None, "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "_lines": lines,
        }
        return _public(state.batches[batch_id])

    @app.get("/v1/batches")
    def listing(limit: int = 20):
        return {"object": "list", "data": [_public(b) for b in list(state.batches.values())[::-1][:limit]]}

    @app.get("/v1/batches/{batch_id}")
    def poll(batch_id: str):
        batch = state.batches.get(batch_id)
        if batch is None:
            return error(404, f"no batch {batch_id!r}")
        state.polls[batch_id] = state.polls.get(batch_id, 0) + 1
        if batch["status"] != "completed":
            batch["status"] = "in_progress"
            if state.polls[batch_id] >= state.polls_to_complete:
                _complete(batch)
        return _public(batch)

    @app.get("/v1/files/{file_id}/content")
    def content(file_id: str):
        if file_id not in state.files:
            return error(404, f"no file {file_id!r}")
        state.downloads += 1
        return PlainTextResponse(state.files[file_id].decode())

    def _complete(batch: dict) -> None:
        out, errors = [], []
        for line in batch["_lines"]:
            body = line["body"]
            text = " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
            status = next((codes.pop(0) for needle, codes in state.fail_lines.items() if needle in text and codes), 200)
            if status == 200:
                response = {"status_code": 200, "request_id": line["custom_id"], "body": chat_answer(body, served)}
                out.append({"id": f"r-{line['custom_id']}", "custom_id": line["custom_id"], "response": response,
                            "error": None})
            else:
                response = {"status_code": status, "body": {"error": {"message": f"line refused with {status}"}}}
                errors.append({"id": f"r-{line['custom_id']}", "custom_id": line["custom_id"], "response": response,
                               "error": None})
        for key, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{len(state.files) + 1}"
                state.files[file_id] = ("\n".join(json.dumps(r) for r in rows) + "\n").encode()
                batch[key] = file_id
        batch["status"] = "completed"
        batch["request_counts"] = {"total": len(batch["_lines"]), "completed": len(out), "failed": len(errors)}

    return app


def _public(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith("_")}
