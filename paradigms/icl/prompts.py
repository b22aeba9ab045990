"""Prompt assembly: demonstrations and a test input rendered from templates, plain or chat.

A plain prompt is::

    {instruction}

    Review: the acting is superb          <- input_template, a demonstration
    Sentiment: positive                   <- answer_template with the verbalised label

    Review: a dull, lifeless film         <- the test input
    Sentiment:                            <- the answer template cut before {label}

and the options scored after it are the verbalisers with the whitespace that precedes ``{label}``
(``" positive"``), so that each option is the token the model would write there. In chat mode the
instruction is the system message, each demonstration a user turn and an assistant turn, the test
input the last user turn, and the assistant's answer starts with the cut answer template.

An input is a text (``{text}`` templates) or, for a template over several pool columns
(``"Premise: {premise}\nHypothesis: {hypothesis}"``), a mapping of those fields
(:func:`template_inputs` builds either from a pool). A plain string given to a multi-field template
fills every field: that is how content-free inputs ("N/A") calibrate a two-field task.

Fitting a prompt to the context drops the least relevant demonstrations first, then cuts the test
input's text (each field alike). Token counts come from the backend's tokenizer (any object with
``encode`` and ``decode``); without one, whitespace-separated words stand in for tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.errors import ConfigError, DataError, did_you_mean

from .config import ORDERS, PromptConfig, template_fields

__all__ = ["Demo", "Input", "Prompt", "PromptBuilder", "check_input_fields", "display_order", "embedding_texts",
           "template_inputs"]

Input = str | Mapping[str, str]  # a text, or the input template's fields of one row


@dataclass(frozen=True)
class Demo:
    """A labelled example shown in a prompt: pool id, text (or the template's fields), and label
    (one of the label set, as str)."""

    id: int
    text: Input
    label: str


def check_input_fields(config: PromptConfig, pool, what: str = "pool") -> None:
    """Every field of ``config.input_template`` must be a column of ``pool`` (``{text}`` alone needs the
    text role): a ConfigError naming the missing field and the columns there are, before anything is spent."""
    fields = template_fields(config.input_template)
    if fields == ("text",):
        return
    columns = [c for c in pool.columns if c != "id"]
    missing = [f for f in fields if f not in pool.columns]
    if missing:
        raise ConfigError(
            f"prompt.input_template uses {{{missing[0]}}}, but the {what} ({pool.source}) has no column "
            f"'{missing[0]}'. Columns: {', '.join(columns)}.{did_you_mean(missing[0], columns)} "
            "(Role columns are renamed: a column mapped to the text role is {text}.)"
        )


def template_inputs(config: PromptConfig, pool, ids: Sequence[int] | np.ndarray | None = None) -> list[Input]:
    """The inputs of the pool's rows (all, or ``ids``) for ``config.input_template``: the texts for a
    ``{text}`` template, else one ``{field: value}`` mapping per row (values as str; empty is an error)."""
    fields = template_fields(config.input_template)
    if fields == ("text",):
        return pool.texts(ids)
    check_input_fields(config, pool)
    rows = pool.dataset if ids is None else pool.select(ids)
    row_ids = rows["id"]
    columns = {f: rows[f] for f in fields}
    out: list[Input] = []
    for n, row_id in enumerate(row_ids):
        item = {}
        for f in fields:
            value = columns[f][n]
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError(f"{pool.source}: row {int(row_id) + 1}: field '{f}' (used by prompt.input_template) "
                                f"is empty ({value!r}).")
            item[f] = value if isinstance(value, str) else str(value)
        out.append(item)
    return out


def embedding_texts(config: PromptConfig, inputs: Sequence[Input]) -> list[str]:
    """What retrieval embeds: the text itself, or for a multi-field input the filled-in input template."""
    return [x if isinstance(x, str) else config.input_template.format(**x) for x in inputs]


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt that ends where the answer goes.

    ``demos`` are in the order shown (first = farthest from the input); ``dropped`` counts the
    demonstrations left out to fit the context; ``input_cut`` says whether the input text was cut.
    """

    text: str
    demos: tuple[Demo, ...]
    dropped: int = 0
    input_cut: bool = False

    @property
    def demo_ids(self) -> list[int]:
        return [d.id for d in self.demos]


def display_order(n: int, order: str, rng: np.random.Generator | None = None) -> list[int]:
    """Relevance ranks (0 = most relevant) in the order they are shown.

    ``similar_last`` puts the most relevant next to the input (KATE's best order), ``similar_first``
    the reverse, ``random`` a permutation drawn by ``rng``.
    """
    if order == "similar_last":
        return list(range(n - 1, -1, -1))
    if order == "similar_first":
        return list(range(n))
    if order == "random":
        if rng is None:
            raise ConfigError("display_order('random') needs an rng (np.random.Generator).")
        return [int(i) for i in rng.permutation(n)]
    raise ConfigError(f"Unknown order '{order}'. Known: {', '.join(ORDERS)}.")


class _WordTokenizer:
    """Whitespace words as tokens: the stand-in when no real tokenizer is given."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split()

    def decode(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)


class PromptBuilder:
    """Renders prompts for one label set.

    Args:
        config: the templates and limits (:class:`~paradigms.icl.config.PromptConfig`).
        labels: the label set, in the order of the option columns everywhere.
        tokenizer: counts and cuts tokens (``encode``/``decode``); None = whitespace words.
        chat_prompt: ``messages -> str`` with the model's chat template; needed when ``config.chat``.
        context_length: the model's context, the default limit of a prompt (with one token left for
            the answer); ``config.max_prompt_tokens`` overrides it.
        special_tokens: tokens every sequence starts with (a BOS), counted against the limit.
    """

    def __init__(self, config: PromptConfig, labels: Sequence[Any], *, tokenizer=None, chat_prompt=None,
                 context_length: int | None = None, special_tokens: int = 0) -> None:
        self.config = config
        self.labels = [str(label) for label in labels]
        self.tokenizer = tokenizer
        self.chat_prompt = chat_prompt
        self.context_length = context_length
        self.special_tokens = special_tokens
        self._check()

    @classmethod
    def for_backend(cls, config: PromptConfig, labels: Sequence[Any], backend) -> PromptBuilder:
        """A builder that counts with the backend's tokenizer and renders with its chat template."""
        tokenizer = getattr(backend, "tokenizer", None)
        context = None
        try:
            context = int(backend.context_length)
        except (AttributeError, TypeError):
            pass  # backends without a known context (HTTP servers, fakes): only max_prompt_tokens limits
        bos = 0
        if tokenizer is not None and getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None:
            bos = 1
        return cls(config, labels, tokenizer=tokenizer, chat_prompt=getattr(backend, "chat_prompt", None),
                   context_length=context, special_tokens=bos)

    def _check(self) -> None:
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"PromptBuilder needs at least two distinct labels. Got {self.labels}.")
        verbal = {str(k): v for k, v in self.config.verbalizers.items()}
        unknown = sorted(set(verbal) - set(self.labels))
        if unknown:
            raise ConfigError(f"prompt.verbalizers names unknown labels {unknown}. Labels: {self.labels}.")
        self._verbal = [verbal.get(label, label) for label in self.labels]
        if any(not isinstance(v, str) or not v.strip() or v != v.strip() for v in self._verbal):
            raise ConfigError(f"Every verbaliser must be a non-empty word without surrounding spaces. Got {self._verbal}.")
        if len(set(self._verbal)) != len(self._verbal):
            raise ConfigError(f"Verbalisers must be distinct (the model answers with them). Got {self._verbal}.")
        if self.config.chat and self.chat_prompt is None:
            raise ConfigError("prompt.chat is true but no chat template renderer was given (chat_prompt=...); "
                              "use PromptBuilder.for_backend(config, labels, backend) or set prompt.chat: false.")
        self._fields = template_fields(self.config.input_template)
        head = self.config.answer_template[: -len("{label}")]
        self._answer_head = head.rstrip()
        self._option_space = head[len(self._answer_head):]  # the whitespace the template puts before the label

    # ---------------------------------------------------------------- labels and options

    @property
    def options(self) -> list[str]:
        """The option strings scored after a prompt, one per label, in label order."""
        return [self._option_space + v for v in self._verbal]

    def verbal(self, label: Any) -> str:
        try:
            return self._verbal[self.labels.index(str(label))]
        except ValueError:
            raise DataError(f"Label {label!r} is not one of the labels {self.labels}.") from None

    # ---------------------------------------------------------------- rendering

    def fields(self, text: Input) -> dict[str, str]:
        """The template's fields for an input: a mapping as given, a string in every field."""
        names = self._fields
        if isinstance(text, str):
            return dict.fromkeys(names, text)
        missing = [n for n in names if n not in text]
        if missing:
            raise DataError(f"An input has no field '{missing[0]}' that prompt.input_template uses; it has "
                            f"{sorted(text)}.")
        return {n: text[n] for n in names}

    def _input(self, text: Input) -> str:
        return self.config.input_template.format(**self.fields(text))

    def _answer(self, label: str) -> str:
        return self.config.answer_template.format(label=self.verbal(label))

    def render(self, text: Input, demos: Sequence[Demo]) -> str:
        """The prompt for ``text`` with ``demos`` in the order given (texts cut to ``max_demo_tokens``)."""
        cfg = self.config
        shown = [(self.cut(d.text, cfg.max_demo_tokens), d.label) for d in demos]
        if cfg.chat:
            messages = [{"role": "system", "content": cfg.instruction}] if cfg.instruction else []
            for demo_text, label in shown:
                messages.append({"role": "user", "content": self._input(demo_text)})
                messages.append({"role": "assistant", "content": self._answer(label)})
            messages.append({"role": "user", "content": self._input(text)})
            return self.chat_prompt(messages, add_generation_prompt=True) + self._answer_head
        blocks = [cfg.instruction] if cfg.instruction else []
        blocks += [f"{self._input(demo_text)}\n{self._answer(label)}" for demo_text, label in shown]
        blocks.append(f"{self._input(text)}\n{self._answer_head}")
        return cfg.separator.join(blocks)

    def demonstration(self, demo: Demo) -> str:
        """One demonstration as it appears in a plain prompt (for perplexity re-ranking)."""
        return f"{self._input(self.cut(demo.text, self.config.max_demo_tokens))}\n{self._answer(demo.label)}"

    def query(self, text: Input) -> str:
        """The test input as it appears at the end of a plain prompt, without the answer cue."""
        return self._input(self.cut(text, self.config.max_input_tokens))

    # ---------------------------------------------------------------- tokens and fitting

    def _tok(self):
        return self.tokenizer if self.tokenizer is not None else _WordTokenizer()

    def count(self, text: str) -> int:
        return len(self._tok().encode(text, add_special_tokens=False)) + self.special_tokens

    def cut(self, text: Input, limit: int | None) -> Input:
        """``text`` cut to its first ``limit`` tokens (unchanged when it fits or ``limit`` is None); a
        multi-field input has each field cut alike."""
        if limit is None:
            return text
        if not isinstance(text, str):
            return {k: self.cut(v, limit) for k, v in self.fields(text).items()}
        tok = self._tok()
        ids = tok.encode(text, add_special_tokens=False)
        return text if len(ids) <= limit else tok.decode(ids[:limit]).rstrip()

    @property
    def limit(self) -> int | None:
        """The most tokens a prompt may have: one position is left for the answer token."""
        if self.config.max_prompt_tokens is not None:
            return self.config.max_prompt_tokens
        return None if self.context_length is None else self.context_length - 1

    def fit(self, text: Input, demos: Sequence[Demo], *, order: str = "similar_last",
            rng: np.random.Generator | None = None) -> Prompt:
        """The prompt for ``text`` with ``demos`` (most relevant first), shown in ``order``, fitted to
        the limit: the least relevant demonstrations are dropped first, then the input text is cut."""
        demos = list(demos)
        shown = display_order(len(demos), order, rng)
        text = self.cut(text, self.config.max_input_tokens)
        limit = self.limit
        keep = len(demos)
        while True:
            chosen = tuple(demos[r] for r in shown if r < keep)
            prompt = self.render(text, chosen)
            if limit is None or self.count(prompt) <= limit or keep == 0:
                break
            keep -= 1
        if limit is None or self.count(prompt) <= limit:
            return Prompt(prompt, chosen, len(demos) - keep)
        return self._cut_input(text, limit, len(demos))

    def _cut_input(self, text: Input, limit: int, dropped: int) -> Prompt:
        """No demonstration fits: the longest start of the input that does (binary search on tokens;
        for a multi-field input, on one token limit for every field)."""
        tok = self._tok()
        if isinstance(text, str):
            ids = tok.encode(text, add_special_tokens=False)

            def start(n: int) -> Input:
                return tok.decode(ids[:n])
        else:
            fields = self.fields(text)
            ids = range(max(len(tok.encode(v, add_special_tokens=False)) for v in fields.values()))

            def start(n: int) -> Input:
                return self.cut(fields, n)
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count(self.render(start(mid), ())) <= limit:
                lo = mid
            else:
                hi = mid - 1
        prompt = self.render(start(lo), ())
        if self.count(prompt) > limit:
            raise ConfigError(f"The prompt limit of {limit} tokens is too small: the instruction and templates alone "
                              f"take {self.count(prompt)}. Raise prompt.max_prompt_tokens or shorten the instruction.")
        return Prompt(prompt, (), dropped, input_cut=True)
