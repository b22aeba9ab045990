"""Generation as a query source of the loop: each round an LLM writes new candidates outside the
pool, rejection sampling checks them, and the accepted ones join the pool (journalled, embedded,
added to the shared index) before the round's acquisition runs.

    query = GenerationQuery.labelled(Generator(backend), task="movie review sentiment",
                                     labels=["negative", "positive"], filters=[...], embedder=embedder,
                                     per_round=8, label="annotate")
    ActiveLoop(pool, ..., generators=[query])

``label="annotate"``: generated rows are unlabelled candidates; the strategy may pick them and the
annotator labels them like any pool item (x' goes through acquisition and annotation).
``label="intended"``: a row keeps the label it was written for (checked by
:class:`~curate.generate.filters.LabelConsistencyFilter`), recorded as source ``generated``; only
the generation's tokens are paid.

Generation is paid from the round's purse (what the batch of labels leaves of the money budget);
:meth:`GenerationQuery.worst_case_micros` is the most one round's generation can spend, which the
loop keeps aside, so the budget is never crossed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.errors import ConfigError
from curate.generate.candidates import Candidate
from curate.generate.filters import Filter
from curate.generate.sampling import GenerationResult, generate_accepted

__all__ = ["GenerationContext", "GenerationQuery"]

LABEL_MODES = ("annotate", "intended")


@dataclass(frozen=True)
class GenerationContext:
    """What a writer may look at: the pool as it is now, the shared index, the labels so far."""

    pool: Any
    index: Any
    labels: Mapping[int, Any]
    round: int


Writer = Callable[[int, np.random.Generator, GenerationContext], list[Candidate]]


class GenerationQuery:
    """Writes up to ``per_round`` accepted candidates in the rounds it is due.

    Args:
        write: ``(size, rng, context) -> candidates``; the factories below cover the usual ones.
        filters: rejection sampling, in order (cheap checks first).
        embedder: embeds accepted rows for the shared index and the learner (use the index's).
        per_round: accepted candidates wanted per due round.
        every / first_round: due in rounds ``first_round``, ``first_round + every``, ...
            (``first_round=0`` is a cold start: the seed round generates too).
        label: ``"annotate"`` or ``"intended"`` (see the module docstring).
        backends: every backend whose tokens the writer and filters spend (they are billed).
        worst_case_tokens: ``(input, output)`` tokens one candidate can cost at most, generation
            and filters together; with a money budget it bounds what a round may spend.
        max_candidates: the most candidates written per round (default ``4 * per_round``).
        batch_size: candidates written per generation call.
    """

    def __init__(self, write: Writer, filters: Sequence[Filter], *, embedder, per_round: int, every: int = 1,
                 first_round: int = 1, label: str = "annotate", backends: Sequence = (),
                 worst_case_tokens: tuple[int, int] = (0, 0), max_candidates: int | None = None,
                 batch_size: int = 8) -> None:
        for name, value, low in (("per_round", per_round, 1), ("every", every, 1), ("first_round", first_round, 0),
                                 ("batch_size", batch_size, 1)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"The '{name}' parameter of GenerationQuery must be an integer >= {low}. "
                                  f"Got {value!r} instead.")
        if label not in LABEL_MODES:
            raise ConfigError(f"The 'label' parameter of GenerationQuery must be one of {LABEL_MODES}. Got {label!r}.")
        if len(worst_case_tokens) != 2 or min(worst_case_tokens) < 0:
            raise ConfigError(f"worst_case_tokens must be (input, output) token counts >= 0; got {worst_case_tokens!r}.")
        self.write = write
        self.filters = list(filters)
        self.embedder = embedder
        self.per_round = int(per_round)
        self.every = int(every)
        self.first_round = int(first_round)
        self.label = label
        self.backends = list(backends)
        self.worst_case_tokens = tuple(int(t) for t in worst_case_tokens)
        self.max_candidates = int(max_candidates) if max_candidates is not None else 4 * self.per_round
        self.batch_size = int(batch_size)

    # ------------------------------------------------------------------ factories

    @classmethod
    def labelled(cls, generator, *, task: str, labels: Sequence[Any], filters: Sequence[Filter], embedder,
                 shots: int = 3, **kwargs) -> GenerationQuery:
        """Label-conditioned generation, balanced over ``labels``, in the style of the labelled
        examples of each class so far (a class with none yet gets the cold-start prompt)."""
        labels = list(labels)

        def write(size: int, rng: np.random.Generator, ctx: GenerationContext) -> list[Candidate]:
            by_label: dict[Any, list[int]] = {}
            for item_id, lab in ctx.labels.items():
                by_label.setdefault(lab, []).append(item_id)
            examples = {lab: ctx.pool.texts(sorted(ids)) for lab, ids in by_label.items() if lab in labels}
            # Round robin from a random label, so small batches do not always favour the first class.
            start = int(rng.integers(len(labels)))
            return generator.for_labels(task, labels[start:] + labels[:start], size, rng=rng,
                                        examples=examples or None, shots=shots)

        kwargs.setdefault("backends", [generator.backend])
        return cls(write, filters, embedder=embedder, **kwargs)

    @classmethod
    def coverage(cls, generator, *, filters: Sequence[Filter], embedder, task: str = "", clusters: int | None = None,
                 shots: int = 3, **kwargs) -> GenerationQuery:
        """Coverage-steered generation: new examples near pool clusters no labelled item covers
        (unlabelled candidates: use ``label="annotate"``)."""
        if kwargs.get("label") == "intended":
            raise ConfigError("Coverage-steered candidates have no intended label; use label='annotate'.")

        def write(size: int, rng: np.random.Generator, ctx: GenerationContext) -> list[Candidate]:
            if ctx.index is None:
                raise ConfigError("Coverage-steered generation needs the loop's shared index (ActiveLoop(index=...)).")
            return generator.coverage(ctx.pool, ctx.index, sorted(ctx.labels), size, rng=rng, task=task,
                                      clusters=clusters, shots=shots)

        kwargs.setdefault("backends", [generator.backend])
        return cls(write, filters, embedder=embedder, **kwargs)

    @classmethod
    def instructions(cls, generator, *, filters: Sequence[Filter], embedder, kind: str = "task instruction",
                     shots: int = 4, **kwargs) -> GenerationQuery:
        """Self-Instruct: new prompts in the style of the pool's prompts (labelled ones first), for
        pools of prompts (SFT, preference data, distillation)."""
        if kwargs.get("label") == "intended":
            raise ConfigError("Generated instructions have no intended response; use label='annotate'.")

        def write(size: int, rng: np.random.Generator, ctx: GenerationContext) -> list[Candidate]:
            seeds = ctx.pool.texts(sorted(ctx.labels)) if len(ctx.labels) >= shots else ctx.pool.texts()
            return generator.instructions(seeds, size, rng=rng, shots=shots, kind=kind)

        kwargs.setdefault("backends", [generator.backend])
        return cls(write, filters, embedder=embedder, **kwargs)

    # ------------------------------------------------------------------ used by the loop

    def due(self, round: int) -> bool:
        return round >= self.first_round and (round - self.first_round) % self.every == 0

    def candidate_micros(self, prices) -> int:
        return prices.micros(input_tokens=self.worst_case_tokens[0], output_tokens=self.worst_case_tokens[1])

    def worst_case_micros(self, prices) -> int:
        """The most one due round's generation can spend."""
        return self.max_candidates * self.candidate_micros(prices)

    def pool_row(self, candidate: Candidate, pool) -> dict:
        """The pool row a candidate becomes: its text in the pool's text role (``text``, else
        ``prompt``); the gold label stays empty (the intended label is journalled, not gold)."""
        role = "text" if "text" in pool.roles else "prompt" if "prompt" in pool.roles else None
        if role is None:
            raise ConfigError(f"Generated candidates need a pool with a 'text' or 'prompt' role; this one has {pool.roles}.")
        return {role: candidate.text}

    def run(self, context: GenerationContext, purse, *, target: int, rng: np.random.Generator,
            on_batch: Callable[[list[Candidate]], None]) -> GenerationResult:
        """Generate until ``target`` are accepted, ``max_candidates`` are written, or the purse
        cannot pay for one more candidate; ``on_batch`` receives each batch's accepted ones."""
        prices = purse.ledger.prices
        paid = prices.micros(input_tokens=10**6, output_tokens=10**6) > 0
        if purse.limit_micros is not None and paid and self.worst_case_tokens == (0, 0):
            raise ConfigError("With a money budget and priced LLM tokens, GenerationQuery needs worst_case_tokens "
                              "(the most tokens one candidate costs) so generation never spends past the budget.")
        ledger = _PurseLedger(purse, self.candidate_micros(prices), self.max_candidates)
        return generate_accepted(lambda size, r: self.write(size, r, context), self.filters, target, rng=rng,
                                 backends=self.backends, ledger=ledger,
                                 worst_case_micros=ledger.per_candidate, batch_size=self.batch_size,
                                 max_batches=-(-self.max_candidates // self.batch_size), on_batch=on_batch)


class _PurseLedger:
    """The ledger face ``generate_accepted`` needs, spending from the loop's purse (every charge is
    journalled as it is made) and writing at most ``max_candidates`` candidates."""

    def __init__(self, purse, per_candidate: int, max_candidates: int) -> None:
        self.purse = purse
        self.per_candidate = per_candidate
        self.left_candidates = max_candidates
        # Free candidates (unpriced tokens) need no cap: generate_accepted wants none then.
        self.budget = None if purse.limit_micros is None or per_candidate <= 0 else purse.limit_micros

    def affordable(self, per_item_micros: int, wanted: int) -> int:
        size = min(wanted, self.left_candidates)
        if self.purse.limit_micros is not None and per_item_micros > 0:
            size = min(size, self.purse.left_micros // per_item_micros)
        size = max(0, size)
        self.left_candidates -= size
        return size

    def charge(self, source: str, *, input_tokens: int = 0, output_tokens: int = 0, batch: bool = False):
        return self.purse.charge(source, input_tokens=input_tokens, output_tokens=output_tokens, batch=batch)

    def describe(self) -> str:
        spent = self.purse.spent_micros / 1e6
        return f"generation spent {spent:.6f}" + ("" if self.budget is None else f" of {self.budget / 1e6:.6f}")
