"""Pure functions of log-probs and rewards: the DPO implicit-reward margin, Bradley–Terry
probabilities, and the policy's predictive entropy of a prompt.

DPO's policy defines an implicit reward ``r(x, y) = β · log πθ(y|x)/πref(y|x)`` (Rafailov et al.
2023), so the margin of a pair is ``β · ([log πθ(a|x) − log πref(a|x)] − [log πθ(b|x) − log πref(b|x)])``
and ``P(a ≻ b) = σ(margin)``. A small |margin| means the policy is unsure which response is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curate.errors import ConfigError

__all__ = ["PairLogprobs", "bt_probs", "dpo_margin", "pair_logprobs", "sigmoid"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))  # stable for large |x|


def dpo_margin(policy_a: np.ndarray, policy_b: np.ndarray, ref_a: np.ndarray, ref_b: np.ndarray,
               beta: float) -> np.ndarray:
    """``β · ((log πθ(a) − log πref(a)) − (log πθ(b) − log πref(b)))`` from summed log-probs."""
    if not beta > 0:
        raise ConfigError(f"The 'beta' parameter must be positive. Got {beta!r} instead.")
    arrays = [np.asarray(v, dtype=np.float64) for v in (policy_a, policy_b, ref_a, ref_b)]
    if len({a.shape for a in arrays}) != 1:
        raise ConfigError(f"dpo_margin needs four arrays of one shape; got {[a.shape for a in arrays]}.")
    pa, pb, ra, rb = arrays
    return beta * ((pa - ra) - (pb - rb))


def bt_probs(margin: np.ndarray) -> np.ndarray:
    """``(n, 2)`` Bradley–Terry probabilities ``[P(a ≻ b), P(b ≻ a)]`` from reward margins ``r_a − r_b``."""
    p = sigmoid(margin)
    return np.stack([p, 1.0 - p], axis=-1)


class PairLogprobs:
    """Summed log-probs of both responses of each pair under one model, and the summed entropy of
    the model's next-token distribution along each response.

    The entropy sum is the model's predictive entropy of the prompt, ``H(Y | x)``, estimated on
    that response: by the chain rule ``E_y[Σ_t H(p(· | x, y<t))] = H(Y | x)`` when ``y`` is drawn
    from the model, so responses sampled from the policy give an unbiased estimate with less
    variance than ``−log p(y|x)`` (the Monte-Carlo estimate of Muldrew et al. 2024); for responses
    written by others it is a proxy.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray, entropy_a: np.ndarray, entropy_b: np.ndarray) -> None:
        self.a = a
        self.b = b
        self.entropy_a = entropy_a
        self.entropy_b = entropy_b

    @property
    def prompt_entropy(self) -> np.ndarray:
        return (self.entropy_a + self.entropy_b) / 2.0


def pair_logprobs(backend, prompts: Sequence[str], responses_a: Sequence[str],
                  responses_b: Sequence[str]) -> PairLogprobs:
    """Score both responses of every pair in one backend call (one length-bucketed batch)."""
    n = len(prompts)
    if not (len(responses_a) == n == len(responses_b)):
        raise ConfigError(f"pair_logprobs needs equal lengths; got {n}, {len(responses_a)}, {len(responses_b)}.")
    if n == 0:
        empty = np.zeros(0)
        return PairLogprobs(empty, empty, empty, empty)
    runs = backend.completion_logprobs(list(prompts) * 2, list(responses_a) + list(responses_b))
    totals = np.array([r.total for r in runs], dtype=np.float64)
    entropy = np.array([float(np.sum(r.entropy)) if r.entropy is not None else np.nan for r in runs])
    return PairLogprobs(totals[:n], totals[n:], entropy[:n], entropy[n:])
