"""Rejection sampling: nothing generated enters unchecked.

Each filter takes a batch of candidates and returns, per candidate, ``None`` (kept) or the reason
it was rejected; :class:`FilterReport` counts what each filter saw and rejected, and why.
Filters run in order, each on what the previous ones kept, so cheap checks go first.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from curate.errors import ConfigError
from curate.generate.candidates import Candidate

__all__ = ["DuplicateFilter", "Filter", "FilterReport", "FormatFilter", "JudgeFilter", "LabelConsistencyFilter",
           "LengthFilter", "apply_filters", "standard_filters", "worst_case_tokens"]


class Filter(Protocol):
    name: str

    def check(self, candidates: Sequence[Candidate]) -> list[str | None]: ...


@dataclass
class FilterReport:
    seen: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    reasons: dict[str, Counter] = field(default_factory=dict)
    generated: int = 0
    accepted: int = 0

    def describe(self) -> str:
        lines = [f"generated {self.generated}, accepted {self.accepted} "
                 f"({self.accepted / max(self.generated, 1):.0%})"]
        for name in self.seen:
            seen, rej = self.seen[name], self.rejected[name]
            top = ", ".join(f"{r} x{c}" for r, c in self.reasons.get(name, Counter()).most_common(3))
            lines.append(f"  {name:<18} saw {seen:>5}, rejected {rej:>5} ({rej / max(seen, 1):.0%} ; "
                         f"acceptance {1 - rej / max(seen, 1):.0%}){'  ' + top if top else ''}")
        return "\n".join(lines)


def apply_filters(candidates: Sequence[Candidate], filters: Sequence[Filter], report: FilterReport) -> list[Candidate]:
    kept = list(candidates)
    report.generated += len(kept)
    for f in filters:
        if not kept:
            break
        verdicts = f.check(kept)
        report.seen[f.name] += len(kept)
        survivors = []
        for cand, reason in zip(kept, verdicts, strict=True):
            if reason is None:
                survivors.append(cand)
            else:
                report.rejected[f.name] += 1
                report.reasons.setdefault(f.name, Counter())[reason] += 1
        kept = survivors
    report.accepted += len(kept)
    return kept


class LengthFilter:
    name = "length"

    def __init__(self, min_chars: int = 12, max_chars: int = 400) -> None:
        self.min_chars = min_chars
        self.max_chars = max_chars

    def check(self, candidates):
        return [("too short" if len(c.text) < self.min_chars else "too long" if len(c.text) > self.max_chars else None)
                for c in candidates]


class FormatFilter:
    """Rejects text that echoes the prompt's scaffolding or matches a forbidden pattern."""

    name = "format"

    def __init__(self, forbidden: Sequence[str] = (r"\blabel(?:led)?\b\s*[:']", r"^(?:sure|here is|here's)\b",
                                                    r"\bas an ai\b"), require: str | None = None) -> None:
        self.forbidden = [re.compile(p, re.I) for p in forbidden]
        self.require = re.compile(require) if require else None

    def check(self, candidates):
        out = []
        for c in candidates:
            hit = next((p.pattern for p in self.forbidden if p.search(c.text)), None)
            if hit:
                out.append(f"matches {hit}")
            elif self.require is not None and not self.require.search(c.text):
                out.append("missing required pattern")
            else:
                out.append(None)
        return out


def _normal(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


class DuplicateFilter:
    """Exact (after normalising case and punctuation) and near duplicates (cosine >= ``threshold``
    on the shared index's embedder) against the pool and everything accepted before."""

    name = "duplicate"

    def __init__(self, embedder, *, threshold: float = 0.92, pool_texts: Sequence[str] = (), index=None) -> None:
        if not 0 < threshold <= 1:
            raise ConfigError(f"The 'threshold' parameter of DuplicateFilter must be in (0, 1]. Got {threshold} instead.")
        self.embedder = embedder
        self.threshold = threshold
        self.index = index
        self._seen = {_normal(t) for t in pool_texts}
        self._accepted: list[np.ndarray] = []

    def check(self, candidates):
        vectors = self.embedder.encode([c.text for c in candidates])
        out = []
        for c, v in zip(candidates, vectors, strict=True):
            key = _normal(c.text)
            if key in self._seen:
                out.append("exact duplicate")
                continue
            if self.index is not None and len(self.index):
                sims, _ = self.index.search(v[None, :], 1)
                if sims[0, 0] >= self.threshold:
                    out.append("near duplicate of the pool")
                    continue
            if self._accepted and max(float(a @ v) for a in self._accepted) >= self.threshold:
                out.append("near duplicate of a generated example")
                continue
            self._seen.add(key)
            self._accepted.append(v / max(np.linalg.norm(v), 1e-12))
            out.append(None)
        return out


# Content-free inputs for contextual calibration (Zhao et al., 2021, "Calibrate before use").
CONTENT_FREE = ("N/A", "", "[MASK]")


class LabelConsistencyFilter:
    """The LM, asked to label the generated text, must give its intended label probability at
    least ``threshold`` (a generated 'positive' review the LM reads as negative is rejected).

    ``calibrate`` (default on) divides the label probabilities by the LM's label prior and
    renormalises: small LMs prefer some label words whatever the text (SmolLM2-135M gives
    'abbreviation' to most TREC questions), and uncalibrated the filter then keeps almost only that
    class. The prior is the mean prediction over ``reference_texts`` when given (batch calibration,
    Zhou et al. 2023: real unlabelled texts of the task, e.g. a sample of the pool), else over
    content-free inputs ("N/A", "", "[MASK]"; Zhao et al. 2021). Prefer reference texts: on SST-2
    the content-free prior (0.78 'negative') over-corrects and rejects plainly negative reviews.
    """

    name = "label_consistency"

    def __init__(self, backend, labels: Sequence[Any], *, threshold: float = 0.5,
                 question: str = "Text: {text}\nWhich label fits this text best: {labels}? Answer with the label only.",
                 verbalizers: dict | None = None, chat: bool = True, calibrate: bool = True,
                 reference_texts: Sequence[str] | None = None) -> None:
        self.backend = backend
        self.labels = list(labels)
        self.threshold = threshold
        self.question = question
        self.verbalizers = verbalizers or {}
        self.chat = chat
        self.calibrate = calibrate
        self.reference_texts = list(reference_texts) if reference_texts else list(CONTENT_FREE)
        self._prior: np.ndarray | None = None

    def _prompt(self, text: str, words: list[str]) -> str:
        content = self.question.format(text=text, labels=", ".join(words))
        return self.backend.chat_prompt([{"role": "user", "content": content}]) if self.chat else content

    def prior(self) -> np.ndarray:
        """The LM's label prior: its mean label probabilities over the reference (or content-free) texts."""
        if self._prior is None:
            words = [str(self.verbalizers.get(lab, lab)) for lab in self.labels]
            probs = np.exp(self.backend.option_logprobs([self._prompt(t, words) for t in self.reference_texts], words))
            prior = probs.mean(0)
            self._prior = prior / prior.sum()
        return self._prior

    def check(self, candidates):
        words = [str(self.verbalizers.get(lab, lab)) for lab in self.labels]
        probs = np.exp(self.backend.option_logprobs([self._prompt(c.text, words) for c in candidates], words))
        if self.calibrate:
            probs = probs / np.maximum(self.prior(), 1e-12)
            probs = probs / probs.sum(1, keepdims=True)
        out = []
        for c, p in zip(candidates, probs, strict=True):
            if c.label is None:
                out.append(None)  # nothing intended, nothing to check
                continue
            if c.label not in self.labels:
                raise ConfigError(f"Candidate label {c.label!r} is not one of {self.labels}.")
            got = float(p[self.labels.index(c.label)])
            out.append(None if got >= self.threshold else f"LM gives its label p={got:.2f} < {self.threshold}")
        return out


class JudgeFilter:
    """An LLM judge (Ask-LLM style): P("yes") to a quality question must reach ``threshold``."""

    name = "judge"

    def __init__(self, backend, *, threshold: float = 0.5, question: str | None = None, chat: bool = True) -> None:
        from curate.acquire.llm import ASK_LLM_QUESTION

        self.backend = backend
        self.threshold = threshold
        self.question = question or ASK_LLM_QUESTION
        self.chat = chat

    def check(self, candidates):
        prompts = []
        for c in candidates:
            content = self.question.replace("{text}", c.text)
            prompts.append(self.backend.chat_prompt([{"role": "user", "content": content}]) if self.chat else content)
        p_yes = np.exp(self.backend.option_logprobs(prompts, ["yes", "no"]))[:, 0]
        return [None if p >= self.threshold else f"judge p(yes)={p:.2f} < {self.threshold}" for p in p_yes]


def standard_filters(backend, embedder, *, labels: Sequence[Any] | None = None, pool_texts: Sequence[str] = (),
                     index=None, min_chars: int = 12, max_chars: int = 400, dup_threshold: float = 0.92,
                     label_threshold: float = 0.5, judge_threshold: float = 0.0) -> list:
    """The usual chain, cheap checks first: length, format, duplicates (against ``pool_texts`` /
    ``index`` and each other), label consistency (when ``labels`` and a threshold > 0), judge (> 0)."""
    filters: list = [LengthFilter(min_chars, max_chars), FormatFilter(),
                     DuplicateFilter(embedder, threshold=dup_threshold, pool_texts=pool_texts, index=index)]
    if labels and label_threshold > 0:
        # Batch calibration on a fixed sample of the pool's own texts when there is a pool.
        rng = np.random.default_rng(0)
        reference = [pool_texts[i] for i in rng.permutation(len(pool_texts))[:32]] if len(pool_texts) else None
        filters.append(LabelConsistencyFilter(backend, labels, threshold=label_threshold, reference_texts=reference))
    if judge_threshold > 0:
        filters.append(JudgeFilter(backend, threshold=judge_threshold))
    return filters


def worst_case_tokens(filters: Sequence[Filter], max_new_tokens: int, prompt_tokens: int = 512) -> tuple[int, int]:
    """A generous bound on one candidate's tokens: its generation prompt and each LLM filter's
    prompt at ``prompt_tokens`` each, and the ``max_new_tokens`` it may write."""
    llm_filters = sum(isinstance(f, (LabelConsistencyFilter, JudgeFilter)) for f in filters)
    return prompt_tokens * (1 + llm_filters), max_new_tokens
