"""Keep generating until enough candidates pass every filter, or the cost cap is reached.

Costs come from the token usage the backends record (generator and LLM filters alike), priced by
the :class:`~curate.budget.Ledger`. Before each batch the batch shrinks so that even its worst case
fits what is left of the cap, so the cap is never crossed: generation stops exactly where one more
candidate could not be paid for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from curate.annotate.llm import buys_in_batches
from curate.budget import Ledger
from curate.errors import ConfigError
from curate.generate.candidates import Candidate
from curate.generate.filters import Filter, FilterReport, apply_filters

__all__ = ["GenerationResult", "generate_accepted"]

logger = logging.getLogger(__name__)


@dataclass
class GenerationResult:
    accepted: list[Candidate]
    report: FilterReport
    ledger: Ledger
    stop_reason: str


def generate_accepted(make_batch: Callable[[int, np.random.Generator], list[Candidate]], filters: Sequence[Filter],
                      target: int, *, rng: np.random.Generator, backends: Sequence = (), ledger: Ledger | None = None,
                      worst_case_micros: int = 0, batch_size: int = 8, max_batches: int = 1000,
                      on_batch: Callable[[list[Candidate]], None] | None = None) -> GenerationResult:
    """Generate in batches of ``batch_size`` until ``target`` candidates are accepted.

    Args:
        make_batch: ``(size, rng) -> candidates``, e.g. ``lambda n, rng: gen.for_labels(task, labels, n, rng=rng)``.
        filters: applied in order to every batch.
        backends: every backend whose tokens this spends (the generator's and the filters'), charged to ``ledger``.
        ledger: prices and the cost cap (``ledger.budget``); None = free and uncapped.
        worst_case_micros: an upper bound on what one candidate costs (generation and filtering):
            batches shrink to fit the cap with it.
        on_batch: called with each batch's accepted candidates as soon as they are known (a loop
            journals them there, so a crash loses no paid-for candidate).
    """
    if target < 0 or batch_size < 1:
        raise ConfigError(f"target must be >= 0 and batch_size >= 1; got {target} and {batch_size}.")
    ledger = ledger if ledger is not None else Ledger()
    if ledger.budget is not None and worst_case_micros <= 0:
        raise ConfigError("A cost cap needs worst_case_micros, the most one candidate can cost, so it is never crossed.")
    report = FilterReport()
    accepted: list[Candidate] = []
    reason = f"{target} accepted"
    for _ in range(max_batches):
        if len(accepted) >= target:
            break
        size = ledger.affordable(worst_case_micros, batch_size)
        if size <= 0:
            reason = f"cost cap reached: {ledger.describe()}"
            break
        before = [(b.usage.input_tokens, b.usage.output_tokens) for b in backends]
        kept = apply_filters(make_batch(size, rng), filters, report)
        # One charge per price tier: tokens bought through a batch API cost the batch tier.
        for batch in (False, True):
            tier = [(b, s) for b, s in zip(backends, before, strict=True) if buys_in_batches(b) is batch]
            used_in = sum(b.usage.input_tokens - s[0] for b, s in tier)
            used_out = sum(b.usage.output_tokens - s[1] for b, s in tier)
            if used_in or used_out:
                ledger.charge("generation", input_tokens=used_in, output_tokens=used_out, batch=batch)
        kept = kept[: target - len(accepted)]
        accepted.extend(kept)
        if on_batch is not None and kept:
            on_batch(kept)
        logger.info("generation: %d/%d accepted (%s)", len(accepted), target, ledger.describe())
        if len(accepted) >= target:
            break
    else:
        reason = f"stopped after {max_batches} batches with {len(accepted)} of {target} accepted"
    return GenerationResult(accepted, report, ledger, reason)
