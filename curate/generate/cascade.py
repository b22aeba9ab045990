"""NoiseAL-style cascade: a cheap model screens, a stronger (costlier) model labels what passes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from curate.annotate.base import Annotation
from curate.budget import Prices
from curate.generate.candidates import Candidate

__all__ = ["CascadeAnnotator"]


class CascadeAnnotator:
    """An annotator: ``screen`` (a filter backed by a cheap model, e.g. :class:`JudgeFilter`)
    rejects items first; only the rest go to ``strong`` (any annotator). The screen's tokens are
    charged on a cost-only record per item, so both stages reach the ledger."""

    name = "cascade"

    def __init__(self, screen, strong, *, screen_backend, screen_worst_case_micros: int = 0) -> None:
        self.screen = screen
        self.strong = strong
        self.screen_backend = screen_backend
        self.screen_worst_case_micros = screen_worst_case_micros

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        before = (self.screen_backend.usage.input_tokens, self.screen_backend.usage.output_tokens)
        verdicts = self.screen.check([Candidate(t) for t in pool.texts(ids)])
        used_in = self.screen_backend.usage.input_tokens - before[0]
        used_out = self.screen_backend.usage.output_tokens - before[1]
        share_in = _split(used_in, len(ids))
        share_out = _split(used_out, len(ids))
        passed = []
        for i, (item, verdict) in enumerate(zip(ids.tolist(), verdicts, strict=True)):
            note = "passed the screen" if verdict is None else f"screened out: {verdict}"
            yield Annotation(item, None, "screen", input_tokens=share_in[i], output_tokens=share_out[i], note=note)
            if verdict is None:
                passed.append(item)
        yield from self.strong.annotate(pool, np.array(passed, dtype=np.int64), labeled=labeled)

    def worst_case_micros(self, prices: Prices) -> int:
        return self.screen_worst_case_micros + self.strong.worst_case_micros(prices)


def _split(total: int, n: int) -> list[int]:
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]
