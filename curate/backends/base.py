"""The language-model backend protocol shared by every implementation.

A backend answers three kinds of question, all batched:

* log-probs of texts, or of a completion given a prompt (``completion_logprobs``), from which
  perplexity follows;
* log-probs of a closed set of options given a prompt (``option_logprobs``): classification by an LM;
  ``score_options`` is the same for many prompts that share heads (an instruction, demonstrations),
  which a backend with a KV cache runs once per group, and says what the call cost (``ScoringStats``);
* ``generate``: ``n`` samples per prompt, each with the log-probs of its own tokens.

Each backend also renders chat messages with the model's own template, and counts the tokens it
read and wrote in ``usage`` so that the cost ledger can charge for them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["BaseBackend", "Generation", "LMBackend", "OptionScores", "ScoringStats", "TokenLogprobs", "Usage",
           "entropy_lower_bound", "log_softmax_rows"]


@dataclass(frozen=True)
class TokenLogprobs:
    """Log-probabilities (natural log) of a run of tokens, each given everything before it."""

    tokens: tuple[str, ...]
    logprobs: np.ndarray  # float64, shape (len(tokens),)
    # Entropy (nats) of the model's next-token distribution at each position: exact where the
    # backend sees the full distribution (transformers), a lower bound from the top-k log-probs where
    # it sees only those (vLLM: :func:`entropy_lower_bound`); None where it sees neither.
    entropy: np.ndarray | None = None

    @property
    def total(self) -> float:
        return float(self.logprobs.sum())

    @property
    def mean(self) -> float:
        return float(self.logprobs.mean()) if len(self.logprobs) else 0.0

    @property
    def mean_entropy(self) -> float:
        if self.entropy is None or not len(self.entropy):
            return float("nan")
        return float(self.entropy.mean())

    @property
    def perplexity(self) -> float:
        """exp of the mean negative log-likelihood; 1.0 for an empty run."""
        return math.exp(-self.mean)


@dataclass(frozen=True)
class Generation:
    """One sampled continuation with the log-probs of its own tokens."""

    text: str
    logprobs: TokenLogprobs
    finish_reason: str = "stop"  # "stop" or "length"


@dataclass
class Usage:
    """Tokens read (input) and written (output) so far; the ledger prices these."""

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, input_tokens: int, output_tokens: int = 0, kind: str = "call") -> None:
        self.input_tokens += int(input_tokens)
        self.output_tokens += int(output_tokens)
        self.calls += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


@dataclass
class ScoringStats:
    """What option scoring cost: prompts scored, tokens that went through the model, tokens saved by
    running shared heads once, and the forward units (shared heads plus prompts scored alone)."""

    prompts: int = 0
    forward_tokens: int = 0  # tokens the model read, padding excluded
    shared_tokens: int = 0  # tokens that would have run again without head sharing
    groups: int = 0

    def add(self, other: ScoringStats) -> None:
        """Count ``other``'s costs in this one (a caller's running total over several calls)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class OptionScores:
    """What ``score_options`` returns: the option log-probs and what computing them cost."""

    logprobs: np.ndarray  # float64, shape (len(prompts), len(options))
    stats: ScoringStats


@runtime_checkable
class LMBackend(Protocol):
    """What every LM backend (transformers, vLLM, OpenAI-compatible HTTP) provides."""

    name: str
    usage: Usage

    def completion_logprobs(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> list[TokenLogprobs]:
        """Log-probs of each completion's tokens given its prompt (``""`` prompt = the whole text)."""
        ...

    def sequence_logprobs(self, texts: Sequence[str]) -> list[TokenLogprobs]:
        """Log-probs of every token of each text but the first (which has no context)."""
        ...

    def perplexity(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        """Perplexity of each text (given its prompt, when prompts are given)."""
        ...

    def option_logprobs(
        self, prompts: Sequence[str], options: Sequence[str], *, normalize: bool = True
    ) -> np.ndarray:
        """``(len(prompts), len(options))`` log-probs of each option given each prompt.

        With ``normalize`` the rows are renormalised over the options (log-softmax), so that
        ``exp`` of a row sums to one: the LM's class distribution over a closed label set.
        """
        ...

    def score_options(
        self,
        prompts: Sequence[str],
        options: Sequence[str],
        *,
        groups: Sequence[Hashable] | None = None,
        normalize: bool = True,
        max_batch_tokens: int | None = None,
        max_batch_size: int | None = None,
    ) -> OptionScores:
        """``option_logprobs`` for prompts that share heads, with what the call cost.

        ``groups`` holds one key per prompt: prompts with equal keys (e.g. the same demonstrations)
        share a head, the longest token prefix common to all of them, which a backend that can reuse a
        KV cache runs once for the group. ``None``: all prompts are one group. Groups change the cost,
        never the result: ``logprobs`` equals ``option_logprobs(prompts, options, normalize=normalize)``.
        ``max_batch_tokens`` / ``max_batch_size`` replace the backend's own batch limits for this
        call; backends that do not batch forward passes ignore them.
        """
        ...

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
        """``n`` samples per prompt (greedy when ``temperature == 0``), each with its token log-probs."""
        ...

    def chat_prompt(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """Render chat messages with the model's own chat template."""
        ...


def entropy_lower_bound(logprobs: Sequence[float], k: int) -> float:
    """A lower bound (nats) on the entropy of a next-token distribution of which only some log-probs
    are known: ``logprobs`` holds the top ``k`` tokens' (and possibly one more, the token actually
    chosen, wherever it ranks), as vLLM and OpenAI-style servers return them.

    The listed tokens contribute ``-p log p`` each, exactly. The mass ``r`` they leave is spread over
    unlisted tokens, none likelier than the ``k``-th listed one (``p_k``), so it contributes at least
    ``-r log p_k``. The bound is exact when the listed tokens hold all the mass, never above the true
    entropy, and above the entropy of the renormalised top-k (another lower bound) on random tests."""
    p = np.sort(np.exp(np.asarray(logprobs, dtype=np.float64)))[::-1]
    p = p[p > 0]
    if not len(p):
        return 0.0
    seen = float(-(p * np.log(p)).sum())
    rest = max(0.0, 1.0 - float(p.sum()))
    if rest == 0.0 or k < 1:  # k < 1: the chosen token alone, which unlisted ones may outrank
        return seen
    kth = p[min(max(int(k), 1), len(p)) - 1]
    return seen - rest * math.log(kth)


def log_softmax_rows(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, stable for large magnitudes."""
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


class BaseBackend:
    """Derives the protocol's convenience methods from ``completion_logprobs``.

    Implementations subclass this (one level, no deeper) and provide ``completion_logprobs``,
    ``generate`` and ``chat_prompt``; they may override the rest with faster paths.
    """

    name: str = "backend"

    def __init__(self) -> None:
        self.usage = Usage()

    def completion_logprobs(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> list[TokenLogprobs]:  # pragma: no cover - abstract
        raise NotImplementedError

    def sequence_logprobs(self, texts: Sequence[str]) -> list[TokenLogprobs]:
        return self.completion_logprobs([""] * len(texts), list(texts))

    def perplexity(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        if prompts is None:
            runs = self.sequence_logprobs(texts)
        else:
            _check_same_length(prompts, texts, "prompts", "texts")
            runs = self.completion_logprobs(prompts, texts)
        return np.array([r.perplexity for r in runs], dtype=np.float64)

    def option_logprobs(
        self, prompts: Sequence[str], options: Sequence[str], *, normalize: bool = True
    ) -> np.ndarray:
        options = _check_options(options)
        pairs_p = [p for p in prompts for _ in options]
        pairs_o = [o for _ in prompts for o in options]
        runs = self.completion_logprobs(pairs_p, pairs_o)
        scores = np.array([r.total for r in runs], dtype=np.float64).reshape(len(prompts), len(options))
        return log_softmax_rows(scores) if normalize else scores

    def score_options(
        self,
        prompts: Sequence[str],
        options: Sequence[str],
        *,
        groups: Sequence[Hashable] | None = None,
        normalize: bool = True,
        max_batch_tokens: int | None = None,
        max_batch_size: int | None = None,
    ) -> OptionScores:
        """Every prompt through ``option_logprobs`` in one call (no head reuse here: groups and batch
        limits only matter to backends that override this); the tokens read come from ``usage``."""
        prompts = list(prompts)
        options = _check_options(options)
        _check_groups(groups, prompts)
        if not prompts:
            return OptionScores(np.zeros((0, len(options)), dtype=np.float64), ScoringStats())
        usage = getattr(self, "usage", None)
        before = usage.input_tokens if usage is not None else 0
        out = np.asarray(self.option_logprobs(prompts, options, normalize=normalize), dtype=np.float64)
        if out.shape != (len(prompts), len(options)):
            from curate.errors import BackendError

            raise BackendError(f"option_logprobs returned shape {out.shape}; expected ({len(prompts)}, {len(options)}).")
        read = usage.input_tokens - before if usage is not None else 0
        return OptionScores(out, ScoringStats(prompts=len(prompts), forward_tokens=read, groups=len(prompts)))


def _check_same_length(a: Sequence, b: Sequence, a_name: str, b_name: str) -> None:
    if len(a) != len(b):
        from curate.errors import ConfigError

        raise ConfigError(f"'{a_name}' and '{b_name}' must have the same length; got {len(a)} and {len(b)}.")


def _check_groups(groups: Sequence[Hashable] | None, prompts: Sequence[str]) -> None:
    if groups is not None and len(groups) != len(prompts):
        from curate.errors import ConfigError

        raise ConfigError(f"'groups' must have one key per prompt: {len(groups)} keys for {len(prompts)} prompts.")


def _check_options(options: Sequence[str]) -> list[str]:
    from curate.errors import ConfigError

    options = list(options)
    if len(options) < 2:
        raise ConfigError(f"option_logprobs needs at least two options; got {options!r}.")
    if len(set(options)) != len(options):
        raise ConfigError(f"options must be distinct; got {options!r}.")
    if any(not isinstance(o, str) or not o for o in options):
        raise ConfigError(f"every option must be a non-empty string; got {options!r}.")
    return options
