"""Annotators whose labels are responses: a live teacher LM, or a recorded one read from data.

Both bill what a teacher costs: input and output tokens at the ledger's LLM prices (source
``"llm"``), so a run's budget is in money. Their ``worst_case_micros`` is a true upper bound, which
is what lets the loop guarantee that no batch goes over the budget.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from curate.annotate.base import Annotation
from curate.annotate.llm import annotation_type, buys_in_batches, split_tokens
from curate.budget import Prices
from curate.errors import ConfigError

__all__ = ["RecordedTeacher", "TeacherAnnotator"]

logger = logging.getLogger(__name__)


def _count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


class TeacherAnnotator:
    """A teacher LM answers each prompt (any backend: transformers, vLLM, OpenAI-compatible).

    Args:
        backend: an :class:`~curate.backends.base.LMBackend`.
        chat: render each prompt as a user turn in the teacher's chat template.
        system: an optional system prompt.
        max_new_tokens: the answer length (part of the cost bound).
        max_input_tokens: prompts longer than this (when the backend can count tokens) are not sent:
            they come back unlabelled, at no cost, with a note — so the cost bound always holds.
        batch_size: prompts per backend call; temperature: 0 = greedy.
    """

    name = "teacher"

    def __init__(self, backend, *, chat: bool = True, system: str | None = None, max_new_tokens: int = 256,
                 max_input_tokens: int = 1024, batch_size: int = 8, temperature: float = 0.0) -> None:
        for name, value in (("max_new_tokens", max_new_tokens), ("max_input_tokens", max_input_tokens),
                            ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"The '{name}' parameter of TeacherAnnotator must be an int >= 1. Got {value!r}.")
        if not callable(getattr(backend, "generate", None)):
            raise ConfigError(f"The teacher backend {type(backend).__name__} cannot generate.")
        self.backend = backend
        self.chat = chat
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.batch_size = batch_size
        self.temperature = temperature

    def worst_case_micros(self, prices: Prices) -> int:
        return prices.micros(input_tokens=self.max_input_tokens, output_tokens=self.max_new_tokens,
                             batch=buys_in_batches(self.backend))

    def render(self, prompt: str) -> str:
        if not self.chat:
            return prompt
        head = [{"role": "system", "content": self.system}] if self.system else []
        return self.backend.chat_prompt(head + [{"role": "user", "content": prompt}])

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        prompts = [str(p) for p in pool.select(ids)["prompt"]] if len(ids) else []
        tokenizer = getattr(self.backend, "tokenizer", None)
        make = annotation_type(self.backend)   # through a batch API: charged at the batch tier
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start:start + self.batch_size].tolist()
            rendered = [self.render(p) for p in prompts[start:start + self.batch_size]]
            lengths = [_count_tokens(tokenizer, r) if tokenizer is not None else None for r in rendered]
            send = [k for k, n in enumerate(lengths) if n is None or n <= self.max_input_tokens]
            for k in sorted(set(range(len(batch))) - set(send)):
                yield make(batch[k], None, "llm", note=f"prompt of {lengths[k]} tokens is over max_input_tokens="
                                                            f"{self.max_input_tokens}; not sent")
            if not send:
                continue
            before_in, before_out = self.backend.usage.input_tokens, self.backend.usage.output_tokens
            outs = self.backend.generate([rendered[k] for k in send], n=1, max_new_tokens=self.max_new_tokens,
                                         temperature=self.temperature)
            used_in = self.backend.usage.input_tokens - before_in
            used_out = self.backend.usage.output_tokens - before_out
            written = [len(row[0].logprobs.logprobs) for row in outs]
            weights = [lengths[k] or len(rendered[k]) for k in send]
            tokens_in = split_tokens(used_in, weights)
            tokens_out = split_tokens(used_out, written) if sum(written) else split_tokens(used_out, [1] * len(send))
            for j, k in enumerate(send):
                gen = outs[j][0]
                text = gen.text.strip()
                note = "cut at max_new_tokens" if gen.finish_reason == "length" else ""
                yield make(batch[k], text or None, "llm", None, input_tokens=min(tokens_in[j], self.max_input_tokens),
                                 output_tokens=min(tokens_out[j], self.max_new_tokens),
                                 note=note if text else "empty answer")


class RecordedTeacher:
    """Responses read from the pool's ``column``, billed as if a teacher LM had written them.

    For simulations: the dataset's reference answers stand for a teacher's, and each one costs its
    prompt and answer tokens at the ledger's LLM prices, counted with ``tokenizer`` (any HF
    tokenizer or a path/id to load one; default: the embedded LM's). The bound per item is the
    most expensive item of the pool, so the loop never plans a batch over the budget; since each
    item's cost is known (:meth:`item_micros`), the loop trims batches by exact costs instead.
    """

    name = "recorded-teacher"

    def __init__(self, column: str = "response", *, tokenizer: Any = None, chat_overhead: int = 0) -> None:
        self.column = column
        self.tokenizer = tokenizer
        self.chat_overhead = chat_overhead
        self._pool = None
        self._tokens: list[tuple[int, int]] = []

    def _load(self, pool) -> None:
        if self._pool is pool:
            return
        if self.tokenizer is None or isinstance(self.tokenizer, str):
            from transformers import AutoTokenizer

            from curate.models import DEFAULT_LM, resolve_lm

            name = self.tokenizer or DEFAULT_LM
            self.tokenizer = AutoTokenizer.from_pretrained(resolve_lm(name))
        prompts, answers = pool.column("prompt"), pool.column(self.column)
        self._tokens = [(_count_tokens(self.tokenizer, str(p)) + self.chat_overhead,
                         _count_tokens(self.tokenizer, str(a)) if a is not None else 0)
                        for p, a in zip(prompts, answers, strict=True)]
        self._answers = answers
        self._pool = pool

    def tokens(self, pool, item_id: int) -> tuple[int, int]:
        """(input, output) tokens billed for one item."""
        self._load(pool)
        return self._tokens[int(item_id)]

    def worst_case_micros(self, prices: Prices) -> int:
        if self._pool is None:
            raise ConfigError("RecordedTeacher knows its costs only after it has seen the pool: call prepare(pool).")
        return max((prices.micros(input_tokens=i, output_tokens=o) for i, o in self._tokens), default=0)

    def item_micros(self, pool, ids: np.ndarray, prices: Prices) -> np.ndarray:
        """Each item's exact cost (micro-units): what :meth:`annotate` will bill for it."""
        self._load(pool)
        return np.array([prices.micros(input_tokens=self._tokens[i][0], output_tokens=self._tokens[i][1])
                         for i in np.asarray(ids, dtype=np.int64).tolist()], dtype=np.int64)

    def prepare(self, pool) -> RecordedTeacher:
        """Count every item's tokens now (the cost bound needs them before the first batch)."""
        self._load(pool)
        return self

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        self._load(pool)
        for i in np.asarray(ids, dtype=np.int64).tolist():
            answer = self._answers[i]
            text = str(answer).strip() if answer is not None else ""
            tin, tout = self._tokens[i]
            yield Annotation(i, text or None, "llm", None, input_tokens=tin, output_tokens=tout,
                             note="recorded teacher" if text else "no recorded answer")
