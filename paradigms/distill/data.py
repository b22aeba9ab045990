"""Prompt pools for distillation, GSM8K's format, and the student's held-out numbers.

GSM8K rows are ``{"question", "answer"}``; the answer's calculator spans ``<<48/2=24>>`` are removed
(the README of the data says so) and its last line ``#### 72`` is the final answer. Any other pool
needs a ``prompt`` role and, for a recorded teacher, a ``response`` role (``curate.pool.load_pool``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from curate.errors import ConfigError, DataError

__all__ = ["clean_solution", "exact_match", "final_answer", "heldout_loss", "load_prompt_pool", "read_gsm8k"]

_CALC = re.compile(r"<<[^<>]*>>")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def clean_solution(answer: str) -> str:
    """A GSM8K solution without its calculator annotations."""
    return _CALC.sub("", answer).strip()


def final_answer(text: str) -> str | None:
    """The final number of a solution: after ``####`` when present, else the last number in the text;
    commas and a trailing ``.0`` removed. None when there is no number."""
    tail = text.split("####", 1)[1] if "####" in text else text
    numbers = _NUMBER.findall(tail)
    if not numbers:
        return None
    value = (numbers[0] if "####" in text else numbers[-1]).replace(",", "").rstrip(".")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def read_gsm8k(path: str | Path, *, offset: int = 0, limit: int | None = None) -> list[dict]:
    """Rows ``{"prompt", "response", "final"}`` from a GSM8K JSONL file (read in place, never copied)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"GSM8K file {path} does not exist (expected ../shared/data/gsm8k/train.jsonl or test.jsonl).")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                question, answer = row["question"], row["answer"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataError(f"{path}:{n}: not a GSM8K row with 'question' and 'answer' ({err}).") from None
            rows.append({"prompt": question.strip(), "response": clean_solution(answer), "final": final_answer(answer)})
    end = None if limit is None else offset + limit
    return rows[offset:end]


def load_prompt_pool(path: str, format: str = "gsm8k", *, columns: Mapping[str, str] | None = None,
                     offset: int = 0, limit: int | None = None):
    """A pool with a ``prompt`` role (and ``response`` / ``final`` when the data has them)."""
    from curate.pool import load_pool

    if format == "gsm8k":
        return load_pool(read_gsm8k(path, offset=offset, limit=limit), require=("prompt",))
    if offset or limit is not None:
        raise ConfigError(f"pool.offset and pool.limit apply to the gsm8k format only; for {format!r} give a file "
                          "with the rows you want.")
    return load_pool(path, columns=columns or {}, format=None if format == "auto" else format, require=("prompt",))


def heldout_loss(backend, prompts: Sequence[str], responses: Sequence[str]) -> dict:
    """The student's loss on reference answers: mean NLL per token over all answer tokens (nats),
    its perplexity, and the mean of per-answer NLLs. ``prompts`` are rendered as the model sees them."""
    runs = backend.completion_logprobs(list(prompts), list(responses))
    total = sum(-r.total for r in runs)
    tokens = sum(len(r.logprobs) for r in runs)
    if tokens == 0:
        raise ConfigError("heldout_loss got no answer tokens to score.")
    loss = total / tokens
    return {"loss": loss, "perplexity": math.exp(loss), "answer_loss": float(np.mean([-r.mean for r in runs])),
            "n": len(runs), "tokens": tokens}


def exact_match(backend, prompts: Sequence[str], finals: Sequence[str | None], *, max_new_tokens: int = 160) -> dict:
    """Greedy answers to ``prompts`` (rendered), right when their final number equals the reference's."""
    outs = backend.generate(list(prompts), n=1, max_new_tokens=max_new_tokens, temperature=0.0)
    predicted = [final_answer(row[0].text) for row in outs]
    right = [p is not None and p == f for p, f in zip(predicted, finals, strict=True)]
    return {"accuracy": float(np.mean(right)) if right else float("nan"), "n": len(right), "right": int(sum(right)),
            "answered": int(sum(p is not None for p in predicted)),
            "cut": int(sum(row[0].finish_reason == "length" for row in outs))}
