"""The OpenAI Batch API: many requests in one file, answered within a window (24 h) at a discount.

A batch goes through the steps OpenAI documents, each recorded before the next so that a process
killed at any instant resumes without paying twice:

1. the requests are written as JSONL (``{"custom_id", "method", "url", "body"}`` per line) and
   uploaded (``POST /files``, purpose ``batch``); the file id is recorded;
2. the batch is created (``POST /batches``) and its id recorded, before anything else happens;
3. it is polled (``GET /batches/{id}``) until it ends, and its output and error files are read
   (``GET /files/{id}/content``).

A resumed process asks for the same requests (the same prompts give the same ``custom_id``: a
hash of the endpoint and body), finds them in a recorded batch and waits for that batch instead of
submitting another; a batch whose file was uploaded but whose creation was not recorded is looked
up among the server's batches by its input file before one is created. The record is the run's
journal (``get_meta`` / ``set_meta``), or memory where there is none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from curate.errors import BackendError

__all__ = ["BatchJobs", "MemoryRecord", "request_key"]

logger = logging.getLogger(__name__)

RECORD_KEY = "openai_batches"
# A batch in one of these states will not change any more.
_ENDED = ("completed", "expired", "cancelled", "failed")


def request_key(path: str, body: Mapping[str, Any]) -> str:
    """A stable name for one request (its ``custom_id`` stem): the same endpoint and body, the same key,
    in this process or the next."""
    text = json.dumps({"url": path, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class MemoryRecord:
    """Where batch ids go when there is no journal: this process only, so a killed run cannot resume."""

    def __init__(self) -> None:
        self._meta: dict[str, Any] = {}

    def get_meta(self, key: str, default: Any = None) -> Any:
        return json.loads(self._meta[key]) if key in self._meta else default

    def set_meta(self, key: str, value: Any) -> None:
        self._meta[key] = json.dumps(value)


class BatchJobs:
    """Runs requests through the Batch API of one server and returns each request's answer.

    Args:
        send: ``(method, path, **httpx_kwargs) -> httpx.Response`` for a path under the API root; it
            retries transient failures (``retry=False``: one attempt) and raises on the rest.
        base_url: the API root, recorded with each batch (a batch belongs to one server).
        record: an object with ``get_meta(key, default)`` / ``set_meta(key, value)``: the journal.
        poll_interval: seconds between polls of a batch that has not ended.
        completion_window: the window asked for (OpenAI offers ``"24h"``).
        sleep: called with the seconds to wait.
    """

    def __init__(self, send: Callable[..., httpx.Response], base_url: str, record: Any, *,
                 poll_interval: float = 30.0, completion_window: str = "24h",
                 sleep: Callable[[float], Any] = time.sleep) -> None:
        self.send = send
        self.base_url = base_url
        self.record = record
        self.poll_interval = poll_interval
        self.completion_window = completion_window
        self.sleep = sleep
        self._answers: dict[str, dict[str, dict]] = {}  # batch id -> custom_id -> answer, once read

    def run(self, requests: Mapping[str, tuple[str, dict]]) -> dict[str, dict]:
        """Answer ``requests`` (custom_id -> (path, body)): each custom_id gets ``{"status", "body"}``
        (the HTTP status and JSON body of the request's own response) or ``{"status": None, "error"}``
        (expired, cancelled, or missing from the output: worth sending again)."""
        wanted = dict(requests)
        claimed: list[tuple[dict, list[str]]] = []
        for rec in self._records():
            if rec["base_url"] != self.base_url or rec["state"] == "failed":
                continue
            mine = [c for c in rec["custom_ids"] if c in wanted]
            if mine and rec["state"] in _ENDED:  # answered before: only its final answers count
                answers = self._wait(rec)
                mine = [c for c in mine if _final(answers.get(c))]
            if mine:
                logger.info("%d request(s) are in batch %s, submitted before: waiting for it instead of submitting "
                            "them again", len(mine), rec["batch_id"] or f"(of file {rec['file_id']})")
                claimed.append((rec, mine))
                for c in mine:
                    del wanted[c]
        by_path: dict[str, dict[str, dict]] = {}
        for cid, (path, body) in wanted.items():
            by_path.setdefault(path, {})[cid] = body
        for path, bodies in by_path.items():  # one endpoint per batch, as the API requires
            claimed.append((self._submit(path, bodies), list(bodies)))
        out: dict[str, dict] = {}
        for rec, cids in claimed:
            answers = self._wait(rec)
            for c in cids:
                out[c] = answers.get(c) or {"status": None, "error": f"batch {rec['batch_id']} has no answer for it"}
        return out

    # ------------------------------------------------------------------------------------- submitting

    def _submit(self, path: str, bodies: dict[str, dict]) -> dict:
        endpoint = "/v1" + path
        lines = [json.dumps({"custom_id": cid, "method": "POST", "url": endpoint, "body": body},
                            ensure_ascii=False) for cid, body in bodies.items()]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        response = self.send("POST", "/files", files={"file": ("curate-batch.jsonl", data, "application/jsonl")},
                             data={"purpose": "batch"})
        file_id = _field(response, "id", "POST /files")
        rec = {"file_id": file_id, "batch_id": None, "endpoint": endpoint, "base_url": self.base_url,
               "custom_ids": list(bodies), "state": "uploaded", "created": time.time()}
        self._save(rec)  # before the batch exists: a resumed run looks for a batch of this file first
        self._create(rec)
        logger.info("submitted batch %s: %d request(s) to %s (window %s)", rec["batch_id"], len(bodies), endpoint,
                    self.completion_window)
        return rec

    def _create(self, rec: dict) -> None:
        """Create the batch of ``rec``'s file and record its id; a creation that may have reached the
        server (a lost answer) is looked up before it is tried again, so it never makes two."""
        payload = {"input_file_id": rec["file_id"], "endpoint": rec["endpoint"],
                   "completion_window": self.completion_window, "metadata": {"created_by": "curate"}}
        error: Exception | None = None
        for attempt in range(4):
            if attempt:
                self.sleep(min(8.0, 0.5 * 2**attempt))
                found = self._find(rec["file_id"])
                if found is not None:
                    rec["batch_id"] = found
                    break
            try:
                rec["batch_id"] = _field(self.send("POST", "/batches", json=payload, retry=False), "id", "POST /batches")
                break
            except BackendError as exc:
                if getattr(exc, "status_code", None) is not None:  # the server refused it: no batch was made
                    raise
                error = exc
        else:
            raise BackendError(f"Creating a batch of file {rec['file_id']} failed 4 times; last error: {error}. "
                               "Resume the run: the uploaded file is recorded and is looked up first.")
        rec["state"] = "submitted"
        self._save(rec)

    def _find(self, file_id: str) -> str | None:
        """The id of a batch of ``file_id`` that the server already has, or None."""
        body = _json(self.send("GET", "/batches", params={"limit": 100}), "GET /batches")
        for batch in body.get("data") or []:
            if isinstance(batch, dict) and batch.get("input_file_id") == file_id and batch.get("id"):
                return str(batch["id"])
        return None

    # ---------------------------------------------------------------------------------------- waiting

    def _wait(self, rec: dict) -> dict[str, dict]:
        if rec["batch_id"] is None:  # killed between upload and creation
            found = self._find(rec["file_id"])
            if found is not None:
                rec["batch_id"], rec["state"] = found, "submitted"
                self._save(rec)
            else:
                self._create(rec)
        batch_id = rec["batch_id"]
        if batch_id in self._answers:
            return self._answers[batch_id]
        last = None
        while True:
            batch = _json(self.send("GET", f"/batches/{batch_id}"), f"GET /batches/{batch_id}")
            status = str(batch.get("status"))
            if status in _ENDED:
                break
            counts = batch.get("request_counts") or {}
            if status != last:
                logger.info("batch %s is %s (%s of %s done)", batch_id, status, counts.get("completed", "?"),
                            counts.get("total", "?"))
                last = status
            self.sleep(self.poll_interval)
        if status == "failed":
            rec["state"] = "failed"
            self._save(rec)
            errors = (batch.get("errors") or {}).get("data") if isinstance(batch.get("errors"), dict) else None
            raise BackendError(f"Batch {batch_id} failed on {self.base_url}: {errors or batch.get('errors')}. Its "
                               "requests were not run (nothing was charged); fix what the errors name and resume.")
        answers: dict[str, dict] = {}
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                answers.update(_read_lines(self.send("GET", f"/files/{batch[key]}/content").text, batch[key]))
        rec["state"] = status
        self._save(rec)
        logger.info("batch %s %s: %d answer(s) read", batch_id, status, len(answers))
        self._answers[batch_id] = answers
        return answers

    # ----------------------------------------------------------------------------------------- record

    def _records(self) -> list[dict]:
        return list(self.record.get_meta(RECORD_KEY, None) or [])

    def _save(self, rec: dict) -> None:
        records = [r for r in self._records() if r["file_id"] != rec["file_id"]]
        self.record.set_meta(RECORD_KEY, [*records, rec])


def _final(answer: dict | None) -> bool:
    """Whether an answer stands: a success, or a refusal of the request itself (a 4xx but 429);
    anything else (429, 5xx, expired, missing) is worth sending again."""
    status = None if answer is None else answer.get("status")
    return isinstance(status, int) and (status == 200 or (400 <= status < 500 and status != 429))


def _read_lines(text: str, file_id: str) -> dict[str, dict]:
    """A batch output (or error) file's answers by custom_id."""
    out: dict[str, dict] = {}
    for n, line in enumerate(text.split("\n"), 1):  # "\n" only: JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise BackendError(f"Line {n} of batch file {file_id} is not JSON: {line[:200]!r}.") from None
        cid = row.get("custom_id") if isinstance(row, dict) else None
        if not isinstance(cid, str):
            raise BackendError(f"Line {n} of batch file {file_id} has no custom_id: {line[:200]!r}.")
        response = row.get("response") if isinstance(row.get("response"), dict) else None
        if response is not None and isinstance(response.get("status_code"), int):
            out[cid] = {"status": response["status_code"], "body": response.get("body")}
        else:
            error = row.get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            out[cid] = {"status": None, "error": str(message or "no response")}
    return out


def _json(response: httpx.Response, what: str) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BackendError(f"{what} answered with a body that is not a JSON object: {response.text[:200]!r}. Does the "
                           "server implement the Batch API (files and batches)?")
    return body


def _field(response: httpx.Response, name: str, what: str) -> str:
    value = _json(response, what).get(name)
    if not isinstance(value, str) or not value:
        raise BackendError(f"{what} answered without an '{name}': {response.text[:200]!r}.")
    return value
