"""The cost ledger: what every label cost, in real currency.

People are paid per label; LLMs per million input and output tokens, from the usage their
backends record. Amounts are kept in integer micro-units, so that totals equal the sum of the
entries exactly, whatever the order of addition.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from curate.errors import ConfigError

__all__ = ["Charge", "Ledger", "Prices", "to_micros"]

MICROS = 1_000_000


def to_micros(amount: float) -> int:
    """Currency to integer micro-units, rounding up: a charge is never under-counted."""
    return int(math.ceil(round(amount * MICROS, 6)))


@dataclass(frozen=True)
class Prices:
    """What labels cost. ``human_per_label`` per human label; LLM prices per 1M tokens."""

    human_per_label: float = 0.0
    llm_input_per_million: float = 0.0
    llm_output_per_million: float = 0.0
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name in ("human_per_label", "llm_input_per_million", "llm_output_per_million"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
                raise ConfigError(f"The '{name}' price must be a non-negative number. Got {value!r} instead.")

    def micros(self, *, human_labels: int = 0, input_tokens: int = 0, output_tokens: int = 0) -> int:
        amount = (human_labels * self.human_per_label + input_tokens * self.llm_input_per_million / 1e6
                  + output_tokens * self.llm_output_per_million / 1e6)
        return to_micros(amount)


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
        if self.budget is not None and (self.budget < 0 or math.isnan(self.budget)):
            raise ConfigError(f"The money budget must be non-negative. Got {self.budget!r} instead.")

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

    def price(self, *, human_labels: int = 0, input_tokens: int = 0, output_tokens: int = 0) -> int:
        return self.prices.micros(human_labels=human_labels, input_tokens=input_tokens, output_tokens=output_tokens)

    def can_afford(self, micros: int) -> bool:
        return self.budget_micros is None or self.spent_micros + micros <= self.budget_micros

    def affordable(self, per_item_micros: int, wanted: int) -> int:
        """How many of ``wanted`` items fit the remaining budget at a worst-case cost per item."""
        if self.budget_micros is None or per_item_micros <= 0:
            return wanted
        left = self.budget_micros - self.spent_micros
        return max(0, min(wanted, left // per_item_micros))

    def charge(self, source: str, *, human_labels: int = 0, input_tokens: int = 0, output_tokens: int = 0,
               item_id: int | None = None, round: int | None = None) -> Charge:
        """Record a charge; refuse (ConfigError) one that would take spending past the budget."""
        micros = self.price(human_labels=human_labels, input_tokens=input_tokens, output_tokens=output_tokens)
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
