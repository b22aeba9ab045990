"""An LLM as annotator: zero- or few-shot classification over a closed label set.

The label is the verbalised option with the highest log-prob (``backend.option_logprobs``), so an
answer outside the set cannot happen, and the confidence is that option's probability
renormalised over the options. A backend without option scoring generates one short answer
instead, which :func:`parse_label` maps to a label or to a failure (``None``), never a guess.

Few-shot examples come from the already-labelled set: with an index, each item gets its nearest
labelled neighbours by cosine similarity of its index vector (as in LLMaAA, Zhang et al. 2023);
without one, the first labelled examples. The nearest example is placed last, next to the item.

Cost bound: every prompt is shortened until the tokens the backend will bill for it fit
``max_input_tokens`` (farthest shots dropped first, then the item's text cut), so that
``worst_case_micros`` really bounds each item. Tokens are counted with ``backend.tokenizer`` when
there is one, else estimated from the characters (3 ASCII characters or 1 byte of anything else
per token, which overestimates for ordinary text).

A backend that runs many requests at once (``backend.stream``: the OpenAI-compatible one) gets
the whole call at once, one request per item, and each annotation is yielded as soon as its
request (and every one before it) has returned, with the tokens of its own request: a run killed
mid-batch has journalled every answer it received. Through a batch API (``backend.batch_api``)
the items' requests go as one batch, and their annotations are marked ``batch`` so that the
ledger charges the batch tier (``Prices.batch_discount``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.annotate.base import Annotation
from curate.annotate.human import check_labels
from curate.budget import Prices
from curate.errors import ConfigError, DataError

__all__ = ["BatchAnnotation", "LLMAnnotator", "annotation_type", "buys_in_batches", "parse_label", "split_tokens"]

logger = logging.getLogger(__name__)

# Tokens per scored sequence that the prompt text does not show: a BOS token, and a merge at the
# prompt/option boundary for backends that tokenise the two together.
_SLACK = 2


@dataclass(frozen=True)
class BatchAnnotation(Annotation):
    """An annotation bought through a batch API: the ledger charges its tokens at the batch tier."""

    batch: bool = True


def buys_in_batches(backend) -> bool:
    """Whether ``backend`` sends its requests through a batch API (its tokens cost the batch tier)."""
    return getattr(backend, "batch_api", False) is True


def annotation_type(backend) -> type[Annotation]:
    """The annotation a machine annotator on ``backend`` yields: :class:`BatchAnnotation` through a
    batch API (the ledger charges the batch tier), else :class:`Annotation`."""
    return BatchAnnotation if buys_in_batches(backend) else Annotation


def parse_label(text: str | None, labels: Sequence[Any]) -> Any | None:
    """The one label a free-text answer names, or None.

    Tried in order: the whole answer (stripped of spaces, quotes and final punctuation) equals a
    label; equals one ignoring case; starts with exactly one label (followed by a non-letter);
    is the start of exactly one label (a cut-off answer). Anything else, including an answer that
    names two labels ("positive or negative"), is None: a failure, not a guess.
    """
    if text is None:
        return None
    answer = text.strip().strip("\"'`*").strip().rstrip(".!,;:").strip()
    if not answer:
        return None
    names = [(str(label), label) for label in labels]
    for name, label in names:
        if answer == name:
            return label
    folded = answer.casefold()
    exact = [label for name, label in names if folded == name.casefold()]
    if len(exact) == 1:
        return exact[0]
    starts = [(name, label) for name, label in names if folded.startswith(name.casefold())
              and not folded[len(name):len(name) + 1].isalnum()]
    if len(starts) == 1:
        name, label = starts[0]
        words = set(re.findall(r"\w+", folded[len(name):]))
        hedged = any(other.casefold() in words for other, _ in names if other != name)
        return None if hedged else label
    cut = [label for name, label in names if name.casefold().startswith(folded)]
    if not starts and len(cut) == 1:
        return cut[0]
    return None


def split_tokens(total: int, weights: Sequence[float]) -> list[int]:
    """Split an integer ``total`` in proportion to ``weights`` so that the parts sum to it exactly
    (largest remainders get the leftover units; equal weights when all are zero)."""
    n = len(weights)
    if n == 0:
        return []
    w = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        w = np.ones(n)
    exact = total * w / w.sum()
    parts = np.floor(exact).astype(np.int64)
    leftover = int(total - parts.sum())
    order = np.argsort(-(exact - parts), kind="stable")
    parts[order[:leftover]] += 1
    return parts.tolist()


class LLMAnnotator:
    """Label items with an LM over a closed label set.

    Args:
        backend: an :class:`~curate.backends.base.LMBackend` (``option_logprobs`` for scoring;
            without it, ``generate`` and :func:`parse_label`).
        labels: the label set; annotations carry these values.
        instruction: the task, e.g. "Is the sentiment of this review positive or negative?".
        template: how an item's text is shown; must contain ``{text}``.
        shots: in-context examples per item, from the labelled set.
        index: an :class:`~curate.index.EmbeddingIndex` over the pool, for nearest-neighbour shots.
        batch_size: items per backend call; annotations are yielded batch by batch (item by item,
            and the whole call at once, with a backend that streams).
        chat: render the prompt with the model's chat template.
        verbalizers: label -> the words the model answers with (default: the label itself).
        max_output_tokens: answer length when generating; part of the cost bound.
        max_input_tokens: the most input tokens billed per item (prompts are cut to fit).
    """

    name = "llm"

    def __init__(self, backend, labels: Sequence[Any], *, instruction: str, template: str = "{text}",
                 shots: int = 0, index=None, batch_size: int = 8, chat: bool = True,
                 verbalizers: Mapping[Any, str] | None = None, max_output_tokens: int = 1,
                 max_input_tokens: int = 512) -> None:
        self.backend = backend
        self.labels = labels
        self.instruction = instruction
        self.template = template
        self.shots = shots
        self.index = index
        self.batch_size = batch_size
        self.chat = chat
        self.verbalizers = verbalizers
        self.max_output_tokens = max_output_tokens
        self.max_input_tokens = max_input_tokens
        self._check()

    # ---------------------------------------------------------------- checks

    def _check(self) -> None:
        self._lookup = check_labels(self.labels, "LLMAnnotator")
        for name in ("shots", "batch_size", "max_output_tokens", "max_input_tokens"):
            value = getattr(self, name)
            low = 0 if name == "shots" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"The '{name}' parameter of LLMAnnotator must be an int >= {low}. Got {value!r} instead.")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise ConfigError(f"The 'instruction' parameter of LLMAnnotator must be a non-empty string. Got {self.instruction!r}.")
        if not isinstance(self.template, str) or "{text}" not in self.template:
            raise ConfigError(f"The 'template' parameter of LLMAnnotator must contain '{{text}}'. Got {self.template!r} instead.")
        try:
            self.template.format(text="")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"The 'template' {self.template!r} may only use the field {{text}} (double other braces: "
                              f"'{{{{' and '}}}}'); formatting it failed with {type(err).__name__}: {err}.") from None
        verbalizers = dict(self.verbalizers or {})
        unknown = [k for k in verbalizers if str(k) not in self._lookup]
        if unknown:
            raise ConfigError(f"verbalizers name unknown label(s) {unknown}. Labels: {list(self.labels)}.")
        by_name = {str(k): v for k, v in verbalizers.items()}
        self._verbal = [by_name.get(str(label), str(label)) for label in self.labels]
        if any(not isinstance(v, str) or not v.strip() for v in self._verbal):
            raise ConfigError(f"Every verbalizer must be a non-empty string. Got {self._verbal!r}.")
        if len({v.strip() for v in self._verbal}) != len(self._verbal):
            raise ConfigError(f"Verbalizers must be distinct (the model answers with them). Got {self._verbal!r}.")
        if not callable(getattr(self.backend, "option_logprobs", None)) and not callable(getattr(self.backend, "generate", None)):
            raise ConfigError(f"The backend {type(self.backend).__name__} has neither option_logprobs nor generate.")

    @property
    def scores_options(self) -> bool:
        """Whether the backend scores a closed option set (else the annotator generates and parses)."""
        return callable(getattr(self.backend, "option_logprobs", None))

    @property
    def batch_api(self) -> bool:
        """Whether the backend buys through a batch API (priced at the batch tier)."""
        return buys_in_batches(self.backend)

    def worst_case_micros(self, prices: Prices) -> int:
        return prices.micros(input_tokens=self.max_input_tokens, output_tokens=self.max_output_tokens,
                             batch=self.batch_api)

    def item_micros(self, pool, ids: np.ndarray, prices: Prices) -> np.ndarray:
        """The most labelling each item can cost: its prompt's measured tokens (without shots: with
        them, the input bound) and the output cap when the label is generated. Much tighter than
        :meth:`worst_case_micros`, so a money budget buys what it can; the loop trims each batch
        to these costs, and what is charged (the backend's count) stays within them."""
        ids = np.asarray(ids, dtype=np.int64)
        out = 0 if self.scores_options else self.max_output_tokens
        if self.shots:
            return np.full(len(ids), prices.micros(input_tokens=self.max_input_tokens, output_tokens=out), dtype=np.int64)
        cache = self._item_tokens_cache(pool)
        todo = [i for i in ids.tolist() if i not in cache]
        for i, text in zip(todo, pool.texts(todo) if todo else [], strict=True):
            cache[i] = self._fit(text, [])[1]
        return np.array([prices.micros(input_tokens=cache[i], output_tokens=out) for i in ids.tolist()], dtype=np.int64)

    def _item_tokens_cache(self, pool) -> dict[int, int]:
        if getattr(self, "_tokens_pool", None) is not pool:
            self._tokens_pool, self._tokens = pool, {}
        return self._tokens

    # ---------------------------------------------------------------- annotation

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if not len(ids):
            return
        failures = 0
        stream = getattr(self.backend, "stream", None)
        made = self._streamed(stream, pool, ids, labeled) if callable(stream) else self._batched(pool, ids, labeled)
        for ann in made:
            failures += ann.label is None
            yield ann
        logger.info("llm annotated %d item(s), %d failure(s)", len(ids), failures)

    def _items(self, pool, ids: np.ndarray, labeled: Mapping[int, Any] | None) -> Iterator[tuple]:
        """``(batch ids, their texts, their shots as (text, label) pairs)``, ``batch_size`` ids at a time."""
        examples = self._examples(labeled)
        example_vectors = None
        if self.shots and examples and self.index is not None:
            example_vectors = self.index.vectors_of([i for i, _ in examples])
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start:start + self.batch_size]
            shots = self._retrieve(batch, examples, example_vectors)
            shot_ids = sorted({i for row in shots for i, _ in row})
            shot_text = dict(zip(shot_ids, pool.texts(shot_ids), strict=True)) if shot_ids else {}
            yield batch, pool.texts(batch), [[(shot_text[i], label) for i, label in row] for row in shots]

    def _streamed(self, stream, pool, ids: np.ndarray, labeled: Mapping[int, Any] | None) -> Iterator[Annotation]:
        """One request per item through ``backend.stream``; each annotation as soon as its request is back."""
        make = annotation_type(self.backend)
        ask = self._score if self.scores_options else self._generate

        def one(item: tuple) -> tuple:
            # The prompt is rendered where it is sent: a chat backend remembers a bounded number of
            # renderings, and a batch of many items would outgrow it if all were rendered first.
            item_id, text, shots = item
            prompt, _, note = self._fit(text, shots)
            labels, confidences, answer_notes, _ = ask([prompt])
            return item_id, labels[0], confidences[0], "; ".join(n for n in (note, answer_notes[0]) if n)

        items = ((int(i), text, shots) for batch, texts, rows in self._items(pool, ids, labeled)
                 for i, text, shots in zip(batch.tolist(), texts, rows, strict=True))
        for _, (item_id, label, confidence, note), used in stream(one, items):
            if used.input_tokens > self.max_input_tokens:
                logger.warning("the backend billed %d input tokens for item %d, over the bound of %d per item",
                               used.input_tokens, item_id, self.max_input_tokens)
            yield make(item_id, label, "llm", confidence, input_tokens=used.input_tokens,
                       output_tokens=used.output_tokens, note=note)

    def _batched(self, pool, ids: np.ndarray, labeled: Mapping[int, Any] | None) -> Iterator[Annotation]:
        """``batch_size`` prompts per backend call; tokens split over the batch's items by their prompts."""
        for batch, texts, rows in self._items(pool, ids, labeled):
            prompts, costs, notes = [], [], []
            for text, shots in zip(texts, rows, strict=True):
                prompt, cost, note = self._fit(text, shots)
                prompts.append(prompt)
                costs.append(cost)
                notes.append(note)
            before_in, before_out = self.backend.usage.input_tokens, self.backend.usage.output_tokens
            if self.scores_options:
                labels, confidences, answer_notes, written = self._score(prompts)
            else:
                labels, confidences, answer_notes, written = self._generate(prompts)
            used_in = self.backend.usage.input_tokens - before_in
            used_out = self.backend.usage.output_tokens - before_out
            if used_in > self.max_input_tokens * len(batch):
                logger.warning("the backend billed %d input tokens for %d item(s), over the bound of %d per item",
                               used_in, len(batch), self.max_input_tokens)
            tokens_in = split_tokens(used_in, costs)
            tokens_out = split_tokens(used_out, written)
            for k, item_id in enumerate(batch.tolist()):
                note = "; ".join(n for n in (notes[k], answer_notes[k]) if n)
                yield Annotation(item_id, labels[k], "llm", confidences[k], input_tokens=tokens_in[k],
                                 output_tokens=tokens_out[k], note=note, call_end=k == len(batch) - 1)

    def _score(self, prompts: list[str]):
        logprobs = np.asarray(self.backend.option_logprobs(prompts, self._options(), normalize=True), dtype=np.float64)
        if logprobs.shape != (len(prompts), len(self._verbal)):
            raise DataError(f"option_logprobs returned shape {logprobs.shape}; expected ({len(prompts)}, {len(self._verbal)}).")
        probs = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        labels = [self.labels[b] for b in best]
        confidences = [float(probs[r, b]) for r, b in enumerate(best)]
        return labels, confidences, [""] * len(prompts), [0] * len(prompts)

    def _generate(self, prompts: list[str]):
        outputs = self.backend.generate(prompts, n=1, max_new_tokens=self.max_output_tokens, temperature=0.0)
        labels, confidences, notes, written = [], [], [], []
        for samples in outputs:
            gen = samples[0]
            verbal = parse_label(gen.text, self._verbal)
            labels.append(None if verbal is None else self.labels[self._verbal.index(verbal)])
            confidences.append(None if verbal is None else math.exp(gen.logprobs.total))
            notes.append("" if verbal is not None else f"unparseable answer {gen.text!r}")
            written.append(len(gen.logprobs.tokens))
        return labels, confidences, notes, written

    # ---------------------------------------------------------------- shots

    def _examples(self, labeled: Mapping[int, Any] | None) -> list[tuple[int, Any]]:
        """Labelled ``(id, label)`` pairs usable as shots (labels outside the set are left out)."""
        if not self.shots or not labeled:
            return []
        out = [(int(i), self._lookup[str(label)]) for i, label in labeled.items()
               if label is not None and str(label) in self._lookup]
        return out if self.index is None else sorted(out)  # sorted: ties between neighbours break by id

    def _retrieve(self, batch: np.ndarray, examples: list[tuple[int, Any]], vectors) -> list[list[tuple[int, Any]]]:
        """Shots of each item, least similar first (so the nearest sits next to the item and the
        farthest is dropped first); without an index, the first labelled examples in order."""
        if not self.shots or not examples:
            return [[] for _ in batch]
        if vectors is None:
            return [[e for e in examples if e[0] != item_id][: self.shots] for item_id in batch.tolist()]
        example_ids = np.array([i for i, _ in examples], dtype=np.int64)
        sims = self.index.vectors_of(batch) @ np.asarray(vectors).T
        sims[example_ids[None, :] == batch[:, None]] = -np.inf  # never an item as its own example
        rows = []
        for r in range(len(batch)):
            order = np.argsort(-sims[r], kind="stable")[: self.shots]
            order = order[np.isfinite(sims[r, order])]
            rows.append([examples[j] for j in order[::-1]])
        return rows

    # ---------------------------------------------------------------- prompts and their cost

    def _options(self) -> list[str]:
        # After a chat template the answer starts a new turn; after "Answer:" it follows a space.
        return list(self._verbal) if self.chat else [" " + v for v in self._verbal]

    def _render(self, text: str, shots: list[tuple[str, Any]]) -> str:
        blocks = [f"{self.instruction.strip()}\nAnswer with one of: {', '.join(self._verbal)}."]
        for shot_text, label in shots:
            verbal = self._verbal[list(self.labels).index(label)]
            blocks.append(f"{self.template.format(text=shot_text)}\nAnswer: {verbal}")
        blocks.append(self.template.format(text=text) + ("" if self.chat else "\nAnswer:"))
        body = "\n\n".join(blocks)
        if self.chat:
            return self.backend.chat_prompt([{"role": "user", "content": body}], add_generation_prompt=True)
        return body

    def _count(self, text: str) -> int:
        tokenizer = getattr(self.backend, "tokenizer", None)
        if tokenizer is not None:
            return len(tokenizer.encode(text, add_special_tokens=False))
        ascii_chars = sum(1 for ch in text if ord(ch) < 128)
        return math.ceil(ascii_chars / 3) + len(text.encode("utf-8")) - ascii_chars

    def _billed(self, prompt: str) -> int:
        """Input tokens the backend will bill for one prompt."""
        if not self.scores_options:
            return self._count(prompt) + _SLACK
        if self._single_pass():
            return self._count(prompt) + _SLACK
        # Scored one option at a time: the prompt is read once per option.
        return sum(self._count(prompt) + self._count(option) + _SLACK for option in self._options())

    def _single_pass(self) -> bool:
        """Whether the backend scores all options in one pass over the prompt: the transformers
        backend does when every option is one distinct token."""
        if not hasattr(self, "_single_pass_"):
            single = False
            try:
                from curate.backends.hf import TransformersBackend
            except ImportError:  # pragma: no cover - the module ships with curate
                TransformersBackend = None  # noqa: N806
            if TransformersBackend is not None and isinstance(self.backend, TransformersBackend):
                first = [self.backend.tokenizer.encode(o, add_special_tokens=False) for o in self._options()]
                single = all(len(t) == 1 for t in first) and len({t[0] for t in first}) == len(first)
            self._single_pass_ = single
        return self._single_pass_

    def _fit(self, text: str, shots: list[tuple[str, Any]]) -> tuple[str, int, str]:
        """The prompt cut to the input bound (farthest shots first, then the text), its billed
        tokens, and a note on what was cut."""
        prompt = self._render(text, shots)
        cost = self._billed(prompt)
        dropped = 0
        while cost > self.max_input_tokens and shots:
            shots = shots[1:]
            dropped += 1
            prompt = self._render(text, shots)
            cost = self._billed(prompt)
        note = f"dropped {dropped} shot(s) to fit max_input_tokens" if dropped else ""
        if cost <= self.max_input_tokens:
            return prompt, cost, note
        lo, hi = 0, len(text)  # the longest prefix of the text that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._billed(self._render(text[:mid], [])) <= self.max_input_tokens:
                lo = mid
            else:
                hi = mid - 1
        prompt = self._render(text[:lo], [])
        cost = self._billed(prompt)
        if cost > self.max_input_tokens:
            raise ConfigError(f"max_input_tokens={self.max_input_tokens} is too small: the instruction, template and "
                              f"options alone bill {cost} tokens. Raise max_input_tokens or shorten the instruction.")
        note = "; ".join(n for n in (note, f"text cut to {lo} of {len(text)} characters") if n)
        return prompt, cost, note
