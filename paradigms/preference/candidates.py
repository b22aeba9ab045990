"""Candidate pairs sampled from a policy: ``n`` responses per prompt, paired up.

Any backend's ``generate`` works (transformers, vLLM, an OpenAI-compatible server). Identical
responses are dropped before pairing (a pair of equal responses has no preference to learn).
``pairing="all"`` forms every pair of the distinct responses of a prompt; ``"adjacent"`` pairs the
1st with the 2nd, the 3rd with the 4th, ... (n/2 pairs, each response used once). Each pair keeps
the policy's summed log-prob and the summed token entropy of both responses, from the sampling
itself (``logp_a``, ``entropy_a``, ...), so the prompt entropy costs nothing extra.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from curate.errors import ConfigError

from .pairs import pair_pool

__all__ = ["PAIRINGS", "sample_pairs"]

PAIRINGS = ("all", "adjacent")


def sample_pairs(backend, prompts: Sequence[str], *, n: int = 4, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int = 128, seed: int = 0, chat: bool = True, pairing: str = "all"):
    """A pair pool from ``n`` samples per prompt (prompts are wrapped in the chat template with ``chat``)."""
    if pairing not in PAIRINGS:
        raise ConfigError(f"The 'pairing' parameter must be one of {', '.join(PAIRINGS)}. Got {pairing!r} instead.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"The 'n' parameter of sample_pairs must be an int >= 2 (a pair needs two responses). Got {n!r}.")
    if temperature <= 0:
        raise ConfigError("sample_pairs needs temperature > 0: greedy decoding gives one response per prompt.")
    rendered = [backend.chat_prompt([{"role": "user", "content": p}]) if chat else p for p in prompts]
    samples = backend.generate(rendered, n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                               seed=seed)
    rows, skipped = [], 0
    for prompt_id, (prompt, gens) in enumerate(zip(prompts, samples, strict=True)):
        distinct = {}
        for g in gens:
            text = g.text.strip()
            if text and text not in distinct:
                distinct[text] = g
        options = list(distinct.values())
        if len(options) < 2:
            skipped += 1
            continue
        pairs = (itertools.combinations(options, 2) if pairing == "all"
                 else zip(options[0::2], options[1::2], strict=False))
        for a, b in pairs:
            rows.append({"prompt": prompt, "response_a": a.text.strip(), "response_b": b.text.strip(),
                         "prompt_id": prompt_id, "logp_a": a.logprobs.total, "logp_b": b.logprobs.total,
                         "entropy_a": _entropy(a), "entropy_b": _entropy(b)})
    if not rows:
        raise ConfigError(f"No prompt gave two distinct responses ({skipped} of {len(prompts)} did not); "
                          "raise the temperature or n.")
    return pair_pool(rows)


def _entropy(generation) -> float:
    ent = generation.logprobs.entropy
    return float(np.sum(ent)) if ent is not None else float(-generation.logprobs.total)
