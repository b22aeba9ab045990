"""The annotation seam: ids in, :class:`Annotation` records out, one per id, as they are bought.

``annotate`` yields annotations as soon as each is available (one by one for people and gold,
batch by batch for an LLM), so that the loop can commit every paid label to the journal before
anything depends on it. A label of ``None`` is a failure (unparseable answer, skipped item): it
still carries its cost, and the item stays unlabelled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from curate.budget import Prices
from curate.errors import ConfigError, DataError

__all__ = ["Annotation", "Annotator", "AwaitingHumanLabels", "GoldAnnotator"]


@dataclass(frozen=True)
class Annotation:
    item_id: int
    label: Any | None            # None = no usable label (failure or skip)
    source: str                  # "gold", "llm", "human", ...
    confidence: float | None = None
    human_labels: int = 0        # billable human labels (1 when a person answered)
    input_tokens: int = 0        # billable LLM tokens
    output_tokens: int = 0
    note: str = ""
    # False: more annotations bought by the same paid call follow (an LLM batch whose shared prompt
    # prefix was read once). The loop journals a call's annotations in one transaction, so a kill
    # never splits a call: a resumed run re-asks whole calls and pays what an uninterrupted run pays.
    call_end: bool = True

    @property
    def ok(self) -> bool:
        return self.label is not None


class AwaitingHumanLabels(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a human annotator whose queue was exported and is not answered yet: the loop saves
    its state and stops; ``curate resume`` continues once the answers are imported."""

    def __init__(self, path: str, count: int) -> None:
        super().__init__(f"{count} item(s) exported for people to label at {path}; import their answers, then resume.")
        self.path = path
        self.count = count


@runtime_checkable
class Annotator(Protocol):
    name: str

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        """Yield one :class:`Annotation` per id (in any order). ``labeled`` maps already-labelled
        ids to labels, for annotators that retrieve in-context examples."""
        ...

    def worst_case_micros(self, prices: Prices) -> int:
        """An upper bound on the cost of one item, so that a batch can shrink to fit the budget."""
        ...


class GoldAnnotator:
    """Reads labels from the pool's ``label`` column: for simulations and benchmarks, billed like
    ``source`` (``"human"`` by default) so that money curves are realistic."""

    name = "gold"

    def __init__(self, column: str = "label", source: str = "human", labels: Sequence[Any] | None = None) -> None:
        self.column = column
        self.source = source
        self.labels = None if labels is None else list(labels)  # the classes the gold labels must be among
        self._labels: list | None = None
        self._pool = None  # the pool the labels were read from (held, so its identity is not reused)

    def check(self, pool) -> None:
        """Before anything is bought: the gold column exists, has a label for every row, and (given
        ``labels``) only values among them, so a mismatch never costs a round."""
        if self.column not in pool.dataset.column_names:
            raise ConfigError(f"The gold annotator reads labels from column '{self.column}', which the pool "
                              f"{pool.source} does not have (columns: {', '.join(pool.dataset.column_names)}).")
        values = pool.column(self.column)
        missing = [i for i, v in enumerate(values) if v is None][:5]
        if missing:
            raise DataError(f"{pool.source}: the gold column '{self.column}' is empty at row(s) {missing}.")
        if self.labels is not None:
            known = {str(x) for x in self.labels}
            unknown = sorted({str(v) for v in values} - known)
            if unknown:
                rows = [i for i, v in enumerate(values) if str(v) not in known][:3]
                raise ConfigError(f"{pool.source}: gold labels {unknown[:5]} (column '{self.column}', e.g. row(s) "
                                  f"{rows}) are not among the recipe's labels {self.labels}. Make 'labels' list the "
                                  "classes the data uses.")

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        if self._pool is not pool:
            self._labels = pool.column(self.column)
            self._pool = pool
        for i in np.asarray(ids, dtype=np.int64).tolist():
            # Billed (and reported) as the people it stands in for, unless told it is free data.
            yield Annotation(i, self._labels[i], self.source, 1.0, human_labels=1 if self.source == "human" else 0,
                             note="gold label")

    def worst_case_micros(self, prices: Prices) -> int:
        return prices.micros(human_labels=1) if self.source == "human" else 0
