"""When to stop the loop: money, labels, rounds, a plateau, or predictions that stopped changing.

A criterion looks at the loop's :class:`History` and returns a reason to stop, or None.
``AnyOf``/``AllOf`` combine them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from curate.errors import ConfigError

__all__ = ["AllOf", "AnyOf", "History", "LabelBudget", "MaxRounds", "MoneyBudget", "Plateau",
           "RoundRecord", "StablePredictions", "StopCriterion", "cohen_kappa"]


@dataclass(frozen=True)
class RoundRecord:
    round: int
    labels: int                       # labels owned after the round
    spent: float                      # money spent after the round
    metric: float | None = None       # e.g. test accuracy, when evaluated
    stop_predictions: np.ndarray | None = None  # the model's predictions on the stop set


@dataclass
class History:
    rounds: list[RoundRecord] = field(default_factory=list)

    @property
    def last(self) -> RoundRecord | None:
        return self.rounds[-1] if self.rounds else None


class StopCriterion(Protocol):
    def reason(self, history: History) -> str | None: ...


class MaxRounds:
    def __init__(self, rounds: int) -> None:
        self.rounds = rounds

    def reason(self, history: History) -> str | None:
        done = len(history.rounds)
        return f"{done} rounds done (max {self.rounds})" if done >= self.rounds else None


class LabelBudget:
    def __init__(self, labels: int) -> None:
        self.labels = labels

    def reason(self, history: History) -> str | None:
        last = history.last
        return f"{last.labels} labels reached the label budget {self.labels}" if last and last.labels >= self.labels else None


class MoneyBudget:
    """Stop when less than ``min_left`` (default: nothing) of the money budget remains."""

    def __init__(self, amount: float, min_left: float = 0.0) -> None:
        self.amount = amount
        self.min_left = min_left

    def reason(self, history: History) -> str | None:
        last = history.last
        if last and self.amount - last.spent <= self.min_left + 1e-12:
            return f"spent {last.spent:.4f} of the money budget {self.amount:.4f}"
        return None


class Plateau:
    """Stop when the best metric of the last ``window`` rounds beats the best before them by less
    than ``min_gain``. ``higher_is_better=False`` for a metric that should fall (a held-out loss):
    best is then the lowest, and the gain is how far it fell."""

    def __init__(self, window: int = 3, min_gain: float = 0.005, *, higher_is_better: bool = True) -> None:
        if window < 1:
            raise ConfigError(f"The 'window' parameter of Plateau must be >= 1. Got {window} instead.")
        self.window = window
        self.min_gain = min_gain
        self.higher_is_better = higher_is_better

    def reason(self, history: History) -> str | None:
        sign = 1.0 if self.higher_is_better else -1.0
        values = [sign * r.metric for r in history.rounds if r.metric is not None]
        if len(values) <= self.window:
            return None
        before, recent = sign * max(values[: -self.window]), sign * max(values[-self.window:])
        if sign * (recent - before) < self.min_gain:
            return f"metric plateaued: best of the last {self.window} rounds {recent:.4f} vs {before:.4f} before"
        return None


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa between two label sequences (1.0 = identical; 0 = chance agreement)."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b) or len(a) == 0:
        raise ConfigError(f"cohen_kappa needs two non-empty sequences of equal length; got {len(a)} and {len(b)}.")
    labels = np.union1d(a, b)
    observed = np.mean(a == b)
    expected = sum(np.mean(a == c) * np.mean(b == c) for c in labels)
    return 1.0 if expected == 1.0 else float((observed - expected) / (1.0 - expected))


class StablePredictions:
    """Stop when successive models agree on a stop set: kappa >= ``threshold`` for ``window``
    consecutive pairs of rounds (Bloodgood & Vijay-Shanker 2009)."""

    def __init__(self, threshold: float = 0.99, window: int = 1) -> None:
        self.threshold = threshold
        self.window = window

    def reason(self, history: History) -> str | None:
        preds = [r.stop_predictions for r in history.rounds if r.stop_predictions is not None]
        if len(preds) <= self.window:
            return None
        kappas = [cohen_kappa(preds[i - 1], preds[i]) for i in range(len(preds) - self.window, len(preds))]
        if min(kappas) >= self.threshold:
            return f"predictions stabilised: kappa {min(kappas):.3f} >= {self.threshold} over {self.window} round(s)"
        return None


class AnyOf:
    def __init__(self, criteria: Sequence[StopCriterion]) -> None:
        self.criteria = list(criteria)

    def reason(self, history: History) -> str | None:
        for c in self.criteria:
            r = c.reason(history)
            if r:
                return r
        return None


class AllOf:
    def __init__(self, criteria: Sequence[StopCriterion]) -> None:
        if not criteria:
            raise ConfigError("AllOf needs at least one criterion.")
        self.criteria = list(criteria)

    def reason(self, history: History) -> str | None:
        reasons = [c.reason(history) for c in self.criteria]
        return " and ".join(reasons) if all(reasons) else None  # type: ignore[arg-type]
