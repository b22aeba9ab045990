"""An LLM as a pairwise judge: which response is better, A or B (or a tie)?

Each pair is asked twice, once with response a shown first and once with b shown first, and the
answer is read from the option log-probs of "A" and "B" (no parsing, no answer outside the set).
LLM judges prefer a position (Zheng et al. 2023; strongly so for small models), so the two orders
are combined in log-odds: with ``ℓ1 = log P(A)/P(B)`` in the order (a, b) and ``ℓ2 = log P(B)/P(A)``
in the order (b, a), both are the log-odds that a is better, and a constant preference ``δ`` for
the first position adds ``+δ`` to one and ``−δ`` to the other. Their mean ``z = (ℓ1 + ℓ2) / 2``
cancels it exactly, ``(ℓ1 − ℓ2) / 2`` measures it, and ``P(a ≻ b) = σ(z)``.

The label is "a" or "b", or "tie" when ``P(a ≻ b)`` lies within ``tie_band`` of one half (with
``ties``), or, with ``consistent``, when the two orders disagree (the MT-Bench rule). The confidence
is the probability of the side the judge leans to, so a tie always has a low confidence and a
hybrid annotator sends it to people.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.annotate.base import Annotation
from curate.annotate.llm import annotation_type, buys_in_batches, split_tokens
from curate.budget import Prices
from curate.errors import ConfigError

from .scores import sigmoid

__all__ = ["DEFAULT_INSTRUCTION", "PairwiseJudge", "Verdicts"]

logger = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = ("You are judging two responses of an AI assistant to the same conversation. "
                       "Decide which response is better: more helpful, honest and harmless.")
_CHARS_PER_TOKEN = 4  # when the backend has no tokenizer to count with


@dataclass(frozen=True)
class Verdicts:
    """Everything the judge saw and decided, one entry per pair."""

    logodds_ab: np.ndarray   # log-odds that a is better, a shown first
    logodds_ba: np.ndarray   # log-odds that a is better, b shown first
    labels: list[str]
    confidence: np.ndarray
    input_tokens: list[int]  # billed per pair (both orders)
    notes: list[str]

    @property
    def logodds(self) -> np.ndarray:
        """The debiased log-odds that a is better (position preference cancelled)."""
        return (self.logodds_ab + self.logodds_ba) / 2.0

    @property
    def prob_a(self) -> np.ndarray:
        return sigmoid(self.logodds)

    @property
    def position_bias(self) -> np.ndarray:
        """Log-odds in favour of whichever response is shown first."""
        return (self.logodds_ab - self.logodds_ba) / 2.0

    def order_labels(self, which: str) -> list[str]:
        """The label one order alone would give (``"ab"`` or ``"ba"``): no debiasing, no ties."""
        z = self.logodds_ab if which == "ab" else self.logodds_ba
        return ["a" if v > 0 else "b" for v in z]


class PairwiseJudge:
    """Label pairs with an LM's option log-probs, in both orders.

    Args:
        backend: an LM backend with ``option_logprobs`` and ``chat_prompt``.
        instruction: what "better" means, put first so that every prompt shares it (and the
            backend runs that shared head once).
        ties: allow the label "tie".
        tie_band: a tie when ``|P(a ≻ b) − 0.5| < tie_band`` (with ``ties``).
        consistent: a tie when the two orders disagree (with ``ties``).
        chat: render the prompt with the model's chat template.
        max_prompt_tokens / max_response_tokens: texts are cut to these (the prompt keeps its end,
            a response its start), which bounds the cost of each pair.
        batch_size: pairs per backend call; annotations are yielded batch by batch.
    """

    name = "judge"

    def __init__(self, backend, *, instruction: str = DEFAULT_INSTRUCTION, ties: bool = True, tie_band: float = 0.05,
                 consistent: bool = False, chat: bool = True, max_prompt_tokens: int = 256,
                 max_response_tokens: int = 256, batch_size: int = 8) -> None:
        self.backend = backend
        self.instruction = instruction
        self.ties = ties
        self.tie_band = tie_band
        self.consistent = consistent
        self.chat = chat
        self.max_prompt_tokens = max_prompt_tokens
        self.max_response_tokens = max_response_tokens
        self.batch_size = batch_size
        if not (isinstance(tie_band, (int, float)) and 0 <= tie_band < 0.5):
            raise ConfigError(f"The 'tie_band' parameter of PairwiseJudge must be in [0, 0.5). Got {tie_band!r} instead.")
        for name in ("max_prompt_tokens", "max_response_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"The '{name}' parameter of PairwiseJudge must be an int >= 1. Got {value!r} instead.")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ConfigError(f"The 'instruction' parameter of PairwiseJudge must be a non-empty string. Got {instruction!r}.")

    # ---------------------------------------------------------------- prompts

    def render(self, prompt: str, first: str, second: str) -> str:
        body = (f"{self.instruction.strip()}\n\n[Conversation]\n{prompt}\n\n[Response A]\n{first}\n\n"
                f"[Response B]\n{second}\n\nWhich response is better? Answer with one letter, A or B.")
        if self.chat:
            return self.backend.chat_prompt([{"role": "user", "content": body}], add_generation_prompt=True)
        return body + "\nAnswer:"

    def _options(self) -> list[str]:
        return ["A", "B"] if self.chat else [" A", " B"]

    def _tokenizer(self):
        return getattr(self.backend, "tokenizer", None)

    def _count(self, text: str) -> int:
        tok = self._tokenizer()
        if tok is not None:
            return len(tok.encode(text, add_special_tokens=False))
        return math.ceil(len(text) / _CHARS_PER_TOKEN)

    def _clip(self, text: str, limit: int, keep: str) -> tuple[str, bool]:
        """``text`` cut to ``limit`` tokens, keeping its ``"start"`` or ``"end"``; and whether it was cut."""
        tok = self._tokenizer()
        if tok is None:
            chars = limit * _CHARS_PER_TOKEN
            if len(text) <= chars:
                return text, False
            return (text[:chars] + " …", True) if keep == "start" else ("… " + text[-chars:], True)
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) <= limit:
            return text, False
        if keep == "start":
            return tok.decode(ids[:limit]) + " …", True
        return "… " + tok.decode(ids[-limit:]), True

    def max_input_tokens(self) -> int:
        """An upper bound on the input tokens billed per pair (both orders)."""
        empty = self._count(self.render("", "", ""))
        # +8 per prompt: the cut markers and merges at the boundaries of the inserted texts.
        return 2 * (empty + self.max_prompt_tokens + 2 * self.max_response_tokens + 8)

    # ---------------------------------------------------------------- judging

    def judge(self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]) -> Verdicts:
        """Judge pairs in both orders; one backend call per order and batch."""
        n = len(prompts)
        if not (len(responses_a) == n == len(responses_b)):
            raise ConfigError(f"judge needs equal lengths; got {n}, {len(responses_a)}, {len(responses_b)}.")
        ab, ba, tokens, notes = [], [], [], []
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            first, second, lengths = [], [], []
            for i in range(start, stop):
                p, cut_p = self._clip(prompts[i], self.max_prompt_tokens, "end")
                a, cut_a = self._clip(responses_a[i], self.max_response_tokens, "start")
                b, cut_b = self._clip(responses_b[i], self.max_response_tokens, "start")
                first.append(self.render(p, a, b))
                second.append(self.render(p, b, a))
                lengths.append(len(first[-1]) + len(second[-1]))
                cuts = [name for name, cut in (("prompt", cut_p), ("a", cut_a), ("b", cut_b)) if cut]
                notes.append(f"cut {', '.join(cuts)} to fit" if cuts else "")
            before = self.backend.usage.input_tokens
            lp = np.asarray(self.backend.option_logprobs(first + second, self._options(), normalize=True), dtype=np.float64)
            if lp.shape != (2 * (stop - start), 2):
                raise ConfigError(f"option_logprobs returned shape {lp.shape}; expected ({2 * (stop - start)}, 2).")
            k = stop - start
            ab.append(lp[:k, 0] - lp[:k, 1])
            ba.append(lp[k:, 1] - lp[k:, 0])
            tokens += split_tokens(self.backend.usage.input_tokens - before, lengths)
        logodds_ab = np.concatenate(ab) if ab else np.zeros(0)
        logodds_ba = np.concatenate(ba) if ba else np.zeros(0)
        labels, confidence = self.decide(logodds_ab, logodds_ba)
        for i in range(n):
            agree = (logodds_ab[i] > 0) == (logodds_ba[i] > 0)
            detail = f"p(a)={sigmoid((logodds_ab[i] + logodds_ba[i]) / 2):.3f}; orders {'agree' if agree else 'disagree'}"
            notes[i] = "; ".join(x for x in (detail, notes[i]) if x)
        return Verdicts(logodds_ab, logodds_ba, labels, confidence, tokens, notes)

    def decide(self, logodds_ab: np.ndarray, logodds_ba: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Labels and confidences from the two orders' log-odds (pure: tests call it directly)."""
        logodds_ab = np.asarray(logodds_ab, dtype=np.float64)
        logodds_ba = np.asarray(logodds_ba, dtype=np.float64)
        p = sigmoid((logodds_ab + logodds_ba) / 2.0)
        labels = np.where(p > 0.5, "a", np.where(p < 0.5, "b", "tie")).astype(object)
        if self.ties:
            labels[np.abs(p - 0.5) < self.tie_band] = "tie"
            if self.consistent:
                labels[(logodds_ab > 0) != (logodds_ba > 0)] = "tie"
        else:
            labels[labels == "tie"] = "a"  # exactly one half and no ties allowed: a fixed, stated choice
        return [str(v) for v in labels], np.maximum(p, 1.0 - p)

    # ---------------------------------------------------------------- the annotator protocol

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        make = annotation_type(self.backend)   # through a batch API: charged at the batch tier
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start:start + self.batch_size]
            rows = pool.select(batch)
            verdicts = self.judge(rows["prompt"], rows["response_a"], rows["response_b"])
            for k, item_id in enumerate(batch.tolist()):
                yield make(item_id, verdicts.labels[k], "llm", float(verdicts.confidence[k]),
                                 input_tokens=verdicts.input_tokens[k], note=verdicts.notes[k])
        logger.info("judge labelled %d pair(s) in both orders", len(ids))

    def worst_case_micros(self, prices: Prices) -> int:
        return prices.micros(input_tokens=self.max_input_tokens(), batch=buys_in_batches(self.backend))
