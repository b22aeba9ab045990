"""How unsure the current model is about each prompt: a scorer for the engine's strategies.

:class:`AnswerUncertainty` plugs into ``TopK`` (and the diversity / density wrappers) like any
other scorer; it reads the model from a :class:`~curate.responses.learner.ResponseLearner`, so each
round scores with that round's weights. Measures:

* ``entropy``: mean next-token entropy of the model's own greedy answer (nats);
* ``perplexity``: perplexity of that answer under the same model;
* ``semantic``: self-consistency: ``samples`` answers at temperature 1, embedded with the shared
  index's embedder; the score is their mean pairwise cosine distance (a semantic-entropy estimate:
  answers that say different things disagree in embedding space, paraphrases do not);
* ``loss``: perplexity of the pool's own ``response`` under the model (needs a response role);
* ``ifd``: instruction-following difficulty of the pool's response, ppl(r | prompt) / ppl(r).

Generating for every unlabelled prompt each round is the expensive part; ``sample`` scores a
seeded random subset of at most that many candidates per round and ranks the rest last.
"""

from __future__ import annotations

import numpy as np

from curate.acquire.base import PoolState
from curate.errors import ConfigError

__all__ = ["AnswerUncertainty", "MEASURES", "semantic_dispersion"]

MEASURES = ("entropy", "perplexity", "semantic", "loss", "ifd")


def semantic_dispersion(vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance among the rows of ``vectors`` (0 = all say the same)."""
    v = np.asarray(vectors, dtype=np.float64)
    if len(v) < 2:
        return 0.0
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms == 0, 1.0, norms)
    sims = v @ v.T
    n = len(v)
    mean_sim = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return float(max(0.0, 1.0 - mean_sim))


class AnswerUncertainty:
    """Scorer: the current model's uncertainty about each candidate prompt (higher = ask first).

    Args:
        learner: the :class:`~curate.responses.learner.ResponseLearner` being trained (any object
            with ``answers``, ``samples``, ``response_perplexity`` and ``rounds_`` works).
        measure: one of ``entropy``, ``perplexity``, ``semantic``, ``loss``, ``ifd``.
        samples: answers per prompt for ``semantic``.
        embedder: embeds the sampled answers for ``semantic`` (default: curate's embedder).
        sample: score at most this many candidates per round (a seeded random subset); None = all.
        seed: seeds the subset and the samples.
    """

    def __init__(self, learner, measure: str = "entropy", *, samples: int = 4, embedder=None,
                 sample: int | None = None, seed: int = 0) -> None:
        if measure not in MEASURES:
            raise ConfigError(f"Unknown answer-uncertainty measure '{measure}'. Known: {', '.join(MEASURES)}.")
        if measure == "semantic" and (not isinstance(samples, int) or samples < 2):
            raise ConfigError(f"The 'samples' parameter must be an int >= 2 for the semantic measure. Got {samples!r}.")
        if sample is not None and (not isinstance(sample, int) or sample < 1):
            raise ConfigError(f"The 'sample' parameter must be None or an int >= 1. Got {sample!r} instead.")
        self.learner = learner
        self.measure = measure
        self.samples = samples
        self.embedder = embedder
        self.sample = sample
        self.seed = seed

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        scores = np.full(len(ids), -np.inf)
        chosen = np.arange(len(ids))
        if self.sample is not None and len(ids) > self.sample:
            rng = np.random.default_rng([self.seed, int(getattr(self.learner, "rounds_", 0)), 11])
            chosen = np.sort(rng.choice(len(ids), size=self.sample, replace=False))
        if len(chosen):
            scores[chosen] = self.values(ids[chosen])
        return scores

    def values(self, ids: np.ndarray) -> np.ndarray:
        """The raw measure for each id, whatever the subset rule."""
        learner = self.learner
        if self.measure in ("entropy", "perplexity"):
            return np.array([a.uncertainty(self.measure) for a in learner.answers(ids)], dtype=np.float64)
        if self.measure == "semantic":
            if self.embedder is None:
                from curate.embed import load_embedder

                self.embedder = load_embedder()
            rows = learner.samples(ids, self.samples, seed=self.seed + int(getattr(learner, "rounds_", 0)))
            flat = [t if t.strip() else "(empty)" for row in rows for t in row]
            vectors = np.asarray(self.embedder.encode(flat), dtype=np.float64).reshape(len(ids), self.samples, -1)
            return np.array([semantic_dispersion(v) for v in vectors], dtype=np.float64)
        pool = learner.pool
        if "response" not in pool.roles:
            raise ConfigError(f"The '{self.measure}' measure scores the pool's own responses; the pool has roles "
                              f"{pool.roles}. Map a response column, or use entropy/perplexity/semantic.")
        responses = [str(r) for r in pool.select(ids)["response"]]
        conditioned = learner.response_perplexity(ids, responses)
        if self.measure == "loss":
            return conditioned
        alone = np.asarray(learner.backend().perplexity(responses), dtype=np.float64)
        return conditioned / alone
