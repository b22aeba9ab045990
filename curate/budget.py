"""Money: prices, the ledger of every charge, the money budget, and how a round's batch fits it.

People are paid per label; LLMs per million input and output tokens, from the usage their
backends record. Amounts are kept in integer micro-units, so that totals equal the sum of the
entries exactly, whatever the order of addition.

The money budget is held once, by the :class:`Ledger`: the loop asks it how many items a round can
buy (:meth:`Ledger.fit_batch`), which selected items fit their exact costs (:meth:`Ledger.trim`),
and hands strategies that pay while selecting a :class:`Purse` drawn on it. :func:`worst_case`
is the most a loop can spend, computed before anything is bought.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from curate.errors import ConfigError, CurateError

__all__ = ["BatchFit", "Charge", "CostEstimate", "Ledger", "Prices", "Purse", "SelectionBudgetReached", "to_micros", "worst_case"]

MICROS = 1_000_000


def to_micros(amount: float) -> int:
    """Currency to integer micro-units, rounding up: a charge is never under-counted."""
    return int(math.ceil(round(amount * MICROS, 6)))


@dataclass(frozen=True)
class Prices:
    """What labels cost. ``human_per_label`` per human label; LLM prices per 1M tokens.

    ``batch_discount`` is the share taken off the token prices of requests sent through a batch API
    (OpenAI's Batch API: 0.5); 0 (the default) prices them like any other, which never under-counts.
    """

    human_per_label: float = 0.0
    llm_input_per_million: float = 0.0
    llm_output_per_million: float = 0.0
    currency: str = "USD"
    batch_discount: float = 0.0

    def __post_init__(self) -> None:
        for name in ("human_per_label", "llm_input_per_million", "llm_output_per_million"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(f"The '{name}' price must be a finite non-negative number. Got {value!r} instead.")
        d = self.batch_discount
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= 1:
            raise ConfigError(f"The 'batch_discount' price must be a share between 0 and 1 (0.5: batch requests cost "
                              f"half). Got {d!r} instead.")

    def micros(self, *, human_labels: int = 0, input_tokens: int = 0, output_tokens: int = 0,
               batch: bool = False) -> int:
        """The cost in micro-units; ``batch``: the tokens were bought through a batch API."""
        tokens = input_tokens * self.llm_input_per_million / 1e6 + output_tokens * self.llm_output_per_million / 1e6
        if batch:
            tokens *= 1.0 - self.batch_discount
        return to_micros(human_labels * self.human_per_label + tokens)


@dataclass(frozen=True)
class Charge:
    """One entry: who labelled (``source``), what it consumed, what it cost (micro-units)."""

    source: str
    micros: int
    human_labels: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    item_id: int | None = None
    round: int | None = None

    @property
    def amount(self) -> float:
        return self.micros / MICROS


@dataclass
class Ledger:
    """Charges against an optional money budget, which is never exceeded."""

    prices: Prices = field(default_factory=Prices)
    budget: float | None = None
    entries: list[Charge] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.budget is not None and not 0 <= self.budget < math.inf:
            raise ConfigError(f"The money budget must be a finite non-negative number (None: no money budget). "
                              f"Got {self.budget!r} instead.")

    @property
    def budget_micros(self) -> int | None:
        return None if self.budget is None else int(math.floor(round(self.budget * MICROS, 6)))

    @property
    def spent_micros(self) -> int:
        return sum(e.micros for e in self.entries)

    @property
    def spent(self) -> float:
        return self.spent_micros / MICROS

    @property
    def remaining(self) -> float:
        return math.inf if self.budget is None else (self.budget_micros - self.spent_micros) / MICROS

    def price(self, *, human_labels: int = 0, input_tokens: int = 0, output_tokens: int = 0, batch: bool = False) -> int:
        return self.prices.micros(human_labels=human_labels, input_tokens=input_tokens, output_tokens=output_tokens,
                                  batch=batch)

    def can_afford(self, micros: int) -> bool:
        return self.budget_micros is None or self.spent_micros + micros <= self.budget_micros

    @property
    def left_micros(self) -> int | None:
        return None if self.budget_micros is None else self.budget_micros - self.spent_micros

    def affordable(self, per_item_micros: int, wanted: int) -> int:
        """How many of ``wanted`` items fit the remaining budget at a worst-case cost per item."""
        if self.budget_micros is None or per_item_micros <= 0:
            return wanted
        return max(0, min(wanted, self.left_micros // per_item_micros))

    def fit_batch(self, size: int, *, per_item_micros: int, reserve_micros: int = 0, exact: bool = False) -> BatchFit:
        """How many of ``size`` items a round may buy at ``per_item_micros`` each (the worst case, or
        with ``exact`` costs the cheapest open item: the selection is trimmed afterwards), after
        keeping ``reserve_micros`` for what selection and generation may spend (the round's purse).
        The reserve gives way to labels: when both no longer fit, the money left buys labels only."""
        if self.budget_micros is None:
            return BatchFit(size, None, None)
        money = self.left_micros
        for_items = money - reserve_micros if money - reserve_micros >= per_item_micros else money
        if per_item_micros > for_items:
            return BatchFit(0, f"money budget reached ({self.describe()}); one more label could cost "
                               f"{per_item_micros / MICROS:.6f}", None)
        if exact:
            return BatchFit(size, None, money - for_items)
        fits = size if per_item_micros <= 0 else min(size, for_items // per_item_micros)
        return BatchFit(int(fits), None, money - fits * per_item_micros)

    def trim(self, costs: Sequence[int], *, keep_micros: int = 0) -> list[int]:
        """Positions of the items, in priority order, whose exact ``costs`` fit the money left
        (less ``keep_micros``); every item without a money budget."""
        if self.budget_micros is None:
            return list(range(len(costs)))
        money = self.left_micros - keep_micros
        keep = []
        for k, cost in enumerate(np.asarray(costs, dtype=np.int64).tolist()):
            if cost <= money:
                keep.append(k)
                money -= cost
        return keep

    def charge(self, source: str, *, human_labels: int = 0, input_tokens: int = 0, output_tokens: int = 0,
               item_id: int | None = None, round: int | None = None, batch: bool = False) -> Charge:
        """Record a charge (``batch``: tokens bought through a batch API, at the batch tier); refuse
        (ConfigError) one that would take spending past the budget."""
        micros = self.price(human_labels=human_labels, input_tokens=input_tokens, output_tokens=output_tokens,
                            batch=batch)
        if not self.can_afford(micros):
            raise ConfigError(f"Charging {micros / MICROS:.6f} {self.prices.currency} for {source} would exceed the "
                              f"budget ({self.spent:.6f} of {self.budget} spent).")
        entry = Charge(source, micros, human_labels, input_tokens, output_tokens, item_id, round)
        self.entries.append(entry)
        return entry

    def totals(self) -> dict[str, float]:
        by_source: dict[str, int] = {}
        for e in self.entries:
            by_source[e.source] = by_source.get(e.source, 0) + e.micros
        out = {f"spent_{k}": v / MICROS for k, v in sorted(by_source.items())}
        out.update(spent=self.spent, labels=sum(1 for e in self.entries if e.item_id is not None),
                   input_tokens=sum(e.input_tokens for e in self.entries),
                   output_tokens=sum(e.output_tokens for e in self.entries))
        if self.budget is not None:
            out["remaining"] = self.remaining
        return out

    def describe(self) -> str:
        t = self.totals()
        cur = self.prices.currency
        parts = [f"spent {t['spent']:.4f} {cur}" + (f" of {self.budget:.4f}" if self.budget is not None else "")]
        parts += [f"{k[6:]} {v:.4f}" for k, v in t.items() if k.startswith("spent_")]
        parts.append(f"tokens in/out {t['input_tokens']}/{t['output_tokens']}")
        return ", ".join(parts)

    @staticmethod
    def charge_to_dict(charge: Charge) -> dict:
        return asdict(charge)


@dataclass(frozen=True)
class BatchFit:
    """A round's batch under the money budget: its ``size``, or why the run stops
    (``stop_reason``), and what the round's purse holds (``purse_micros``; None: no money budget)."""

    size: int
    stop_reason: str | None
    purse_micros: int | None


class Purse:
    """Money a strategy may spend while it selects (a teacher probe), at most ``limit_micros``
    (None: no money budget). Each charge goes to the ledger and, through ``record``, to the run's
    journal as it is made, so a run killed mid-selection still knows what it spent."""

    def __init__(self, ledger: Ledger, record, round: int, limit_micros: int | None, recall=None) -> None:
        self.ledger = ledger
        self.record = record  # (charge, scores=None) -> None: the journal's record_charge
        self.round = round
        self.limit_micros = limit_micros
        self.recall = recall  # scorer -> {item id: score} bought before (the journal's scores), or None
        self.spent_micros = 0

    def bought(self, scorer: str) -> dict[int, float]:
        """Scores ``scorer`` bought in this run before (kept in the journal): never paid for again."""
        return {} if self.recall is None else dict(self.recall(scorer))

    @property
    def left_micros(self) -> int | None:
        return None if self.limit_micros is None else self.limit_micros - self.spent_micros

    def price(self, *, input_tokens: int = 0, output_tokens: int = 0, batch: bool = False) -> int:
        return self.ledger.price(input_tokens=input_tokens, output_tokens=output_tokens, batch=batch)

    def can_afford(self, micros: int) -> bool:
        return self.limit_micros is None or micros <= self.left_micros

    def charge(self, source: str, *, input_tokens: int = 0, output_tokens: int = 0,
               scores: tuple[str, dict[int, float]] | None = None, batch: bool = False) -> Charge:
        """Bill tokens (not a label: the charge names no item), journalled with the ``scores`` they
        bought (``(scorer, {item id: score})``); refuse one over the purse. ``batch``: bought through
        a batch API, at the batch tier."""
        micros = self.price(input_tokens=input_tokens, output_tokens=output_tokens, batch=batch)
        if not self.can_afford(micros):
            raise ConfigError(f"A {source} charge of {micros / MICROS:.6f} is over what selection may spend "
                              f"({self.left_micros / MICROS:.6f} left).")
        charge = self.ledger.charge(source, input_tokens=input_tokens, output_tokens=output_tokens, round=self.round,
                                    batch=batch)
        if scores is None:
            self.record(charge)
        else:
            self.record(charge, scores=scores)
        self.spent_micros += charge.micros
        return charge


class SelectionBudgetReached(CurateError):
    """A strategy that pays while it selects (an LLM scoring items) cannot afford its next call
    within the round's purse: the run stops at the money budget, with what it bought journalled."""


@dataclass(frozen=True)
class CostEstimate:
    """The most a loop can spend, before it starts: labels x the worst case per label, plus what
    selection (probes) and generation may spend in the rounds they run; capped by the money budget."""

    labels: int
    per_item_worst_case: float
    total_worst_case: float
    currency: str
    budget: float | None
    generation_worst_case: float = 0.0  # included in total_worst_case
    selection_worst_case: float = 0.0   # included in total_worst_case (probes that pay while selecting)

    def describe(self) -> str:
        extra = "".join(f" + {what} at most {amount:.4f} {self.currency}" for what, amount in
                        (("generation", self.generation_worst_case), ("selection", self.selection_worst_case)) if amount)
        text = (f"up to {self.labels} labels x at most {self.per_item_worst_case:.6f} {self.currency} each{extra} = "
                f"at most {self.total_worst_case:.4f} {self.currency}")
        if self.budget is not None:
            text += f" (money budget {self.budget:.4f}: {'fits' if self.total_worst_case <= self.budget else 'the budget stops it first'})"
        return text


def worst_case(loop, rounds: int | None) -> CostEstimate:
    """The worst case of ``loop`` (an :class:`~curate.loop.ActiveLoop`) over ``rounds`` rounds
    (None: until the pool or a budget runs out), without buying anything."""
    prices, n = loop.ledger.prices, len(loop.pool)
    if callable(getattr(loop.annotator, "item_micros", None)):
        per_item = int(np.max(loop.annotator.item_micros(loop.pool, loop.pool.ids, prices))) if n else 0
    else:
        per_item = int(loop.annotator.worst_case_micros(prices))
    if rounds is None:
        rounds = 1 + max(0, n - loop.init_size + loop.batch_size - 1) // loop.batch_size
    labels = min(loop.init_size + max(0, rounds - 1) * loop.batch_size, n)
    if loop.label_budget is not None:
        labels = min(labels, loop.label_budget)
    first, later = loop.spenders
    selection = sum(selection_bound(p, prices, loop.pool, loop.init_size) for p in first) if rounds else 0
    selection += sum(selection_bound(p, prices, loop.pool, loop.batch_size) for p in later) * max(0, rounds - 1)
    generation = sum(int(g.worst_case_micros(prices)) for g in loop.generators for r in range(rounds) if g.due(r))
    total = labels * per_item + selection + generation
    if loop.ledger.budget_micros is not None:
        total = min(total, loop.ledger.budget_micros)
    return CostEstimate(labels, per_item / MICROS, total / MICROS, prices.currency, loop.ledger.budget,
                        generation / MICROS, selection / MICROS)


def selection_bound(part, prices: Prices, pool, batch: int) -> int:
    """The most one selection by ``part`` (a probe, an LLM-selection strategy) spends:
    ``part.worst_case_micros(prices, pool=, batch=)``, or ``(prices)`` for parts written before
    the pool and batch were passed."""
    import inspect

    try:
        params = inspect.signature(part.worst_case_micros).parameters
    except (TypeError, ValueError):
        params = {}
    takes = "pool" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    return int(part.worst_case_micros(prices, pool=pool, batch=batch) if takes else part.worst_case_micros(prices))
