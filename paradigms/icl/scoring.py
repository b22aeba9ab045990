"""Option log-probs for many prompts that share heads: the ICL evaluation's inner loop.

ICL prompts repeat themselves: the prompt of a test input and its content-free twins (contextual
calibration) differ only after the demonstrations; with a fixed demonstration set every prompt
shares everything but the input. Here prompts come in *groups* (by a key the caller gives, e.g. the
demonstration ids) and the backend's ``score_options`` does the rest: the transformers backend runs
each group's head once and reuses its KV cache, with logits at the answer position only; every other
backend scores the prompts through its ``option_logprobs``. Either way the result is the same as
scoring each full prompt alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from curate.backends.base import ScoringStats

__all__ = ["ScoringStats", "score_options"]


def score_options(backend, prompts: Sequence[str], options: Sequence[str], *, groups: Sequence[Hashable] | None = None,
                  max_batch_tokens: int = 4096, max_batch_size: int = 16, stats: ScoringStats | None = None) -> np.ndarray:
    """``(len(prompts), len(options))`` log-probs of each option after each prompt, renormalised over
    the options (log-softmax per row).

    Args:
        groups: one key per prompt; prompts with equal keys share a head (e.g. the same
            demonstrations) that runs once. None: each prompt alone (still batched).
        max_batch_tokens / max_batch_size: the padded tokens and rows of one forward batch.
        stats: what the call cost is added to it, when given.
    """
    prompts = list(prompts)
    keys = list(range(len(prompts))) if groups is None else list(groups)
    result = backend.score_options(prompts, options, groups=keys, normalize=True,
                                   max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size)
    if stats is not None:
        stats.add(result.stats)
    return result.logprobs
