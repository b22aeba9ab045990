"""Selection by an LLM: Ask-LLM, SelectLLM-style in-cluster choice, and IFD.

The LM is injected (any :mod:`curate.backends` backend). Scores are cached per pool id inside a
scorer, so a multi-round loop asks the LM about each item once. Tokens spent are reported in
``Selection.info`` where a strategy returns one.
"""

from __future__ import annotations

import numpy as np

from curate.acquire.base import PoolState, Selection, check_budget
from curate.errors import ConfigError
from curate.index import kmeans

__all__ = ["IFD", "AskLLM", "SelectLLM"]

ASK_LLM_QUESTION = (
    "###\n{text}\n###\n"
    "Is the example between the ### marks informative and well-formed, so that it would help "
    "train a language model? Answer yes or no."
)


class _CachedScores:
    """Per-id score cache, tied to one pool object (a new pool clears it)."""

    def __init__(self) -> None:
        self._pool_key: int | None = None
        self._scores: dict[int, float] = {}

    def get(self, pool, ids: np.ndarray, compute) -> np.ndarray:
        if self._pool_key != id(pool):
            self._pool_key, self._scores = id(pool), {}
        todo = [i for i in ids.tolist() if i not in self._scores]
        if todo:
            self._scores.update(zip(todo, compute(np.array(todo, dtype=np.int64)), strict=True))
        return np.array([self._scores[i] for i in ids.tolist()], dtype=np.float64)


def _require_pool(state: PoolState, who: str):
    if state.pool is None:
        raise ConfigError(f"{who} reads texts: it needs PoolState.pool.")
    return state.pool


class AskLLM:
    """Ask-LLM (Sachdeva et al. 2024): score = the LM's probability of answering "yes" to a
    quality question about the item. A scorer: wrap it in ``TopK`` to select."""

    def __init__(self, backend, *, question: str = ASK_LLM_QUESTION, options: tuple[str, str] = ("yes", "no"),
                 chat: bool = True) -> None:
        if "{text}" not in question:
            raise ConfigError("The Ask-LLM question must contain {text} where the item goes.")
        self.backend = backend
        self.question = question
        self.options = options
        self.chat = chat
        self._cache = _CachedScores()

    def prompt(self, text: str) -> str:
        content = self.question.replace("{text}", text)
        return self.backend.chat_prompt([{"role": "user", "content": content}]) if self.chat else content

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        pool = _require_pool(state, "Ask-LLM")

        def compute(todo: np.ndarray) -> np.ndarray:
            logp = self.backend.option_logprobs([self.prompt(t) for t in pool.texts(todo)], list(self.options))
            return np.exp(logp[:, 0])

        return self._cache.get(pool, np.asarray(ids, dtype=np.int64), compute)


class IFD:
    """Instruction-following difficulty (Li et al. 2024): ppl(response | instruction) / ppl(response).

    High IFD = the instruction helps little to predict the response = a hard, informative pair.
    Pairs with IFD >= ``drop_above`` (the instruction does not help at all; often misaligned) rank
    last, as the paper recommends. Needs ``prompt`` and ``response`` columns.
    """

    def __init__(self, backend, *, drop_above: float | None = 1.0, chat: bool = True) -> None:
        self.backend = backend
        self.drop_above = drop_above
        self.chat = chat
        self._cache = _CachedScores()

    def values(self, pool, ids: np.ndarray) -> np.ndarray:
        """The raw IFD of each pair."""
        if not {"prompt", "response"} <= set(pool.roles):
            raise ConfigError(f"IFD needs 'prompt' and 'response' columns; the pool has roles {pool.roles}.")
        rows = pool.select(ids)
        prompts = list(rows["prompt"])
        if self.chat:
            prompts = [self.backend.chat_prompt([{"role": "user", "content": p}]) for p in prompts]
        responses = list(rows["response"])
        conditioned = self.backend.perplexity(responses, prompts=prompts)
        alone = self.backend.perplexity(responses)
        return conditioned / alone

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        pool = _require_pool(state, "IFD")
        ifd = self._cache.get(pool, np.asarray(ids, dtype=np.int64), lambda todo: self.values(pool, todo))
        if self.drop_above is not None:
            return np.where(ifd >= self.drop_above, -np.inf, ifd)
        return ifd


SELECT_LLM_QUESTION = (
    "Here are {n} candidate examples for a training set:\n{examples}\n"
    "Which one example is the most informative and useful to label? Answer with its number only."
)


class SelectLLM:
    """SelectLLM-style selection (Parkar et al. 2024): cluster the candidates on the shared index
    into ``budget`` groups, show the LM up to ``per_cluster`` members of each, and take the one it
    picks (by option log-probs over the numbers). Selections are ordered by the LM's confidence."""

    def __init__(self, backend, *, per_cluster: int = 6, question: str = SELECT_LLM_QUESTION, chat: bool = True,
                 max_chars: int = 300, allow_fewer: bool = False) -> None:
        if not 2 <= per_cluster <= 9:
            raise ConfigError(f"per_cluster must be between 2 and 9 (single-digit answers). Got {per_cluster} instead.")
        self.backend = backend
        self.per_cluster = per_cluster
        self.question = question
        self.chat = chat
        self.max_chars = max_chars
        self.allow_fewer = allow_fewer

    def select(self, state: PoolState, budget: int, *, rng: np.random.Generator) -> Selection:
        k = check_budget(state, budget, allow_fewer=self.allow_fewer)
        if k == 0:
            return Selection(np.zeros(0, dtype=np.int64))
        pool = _require_pool(state, "SelectLLM")
        index = state.require_index("SelectLLM")
        cands = state.candidates
        groups = _kmeans_groups(index.vectors_of(cands), k, rng)
        shown, prompts = [], []
        for members in groups:
            pick = rng.permutation(members)[: self.per_cluster]
            shown.append(cands[pick])
            texts = [t if len(t) <= self.max_chars else t[: self.max_chars] + "..." for t in pool.texts(cands[pick])]
            listing = "\n".join(f"{j + 1}. {t}" for j, t in enumerate(texts))
            content = self.question.format(n=len(texts), examples=listing)
            prompts.append(self.backend.chat_prompt([{"role": "user", "content": content}]) if self.chat else content)
        chosen, confidence = [], []
        before = (self.backend.usage.input_tokens, self.backend.usage.output_tokens)
        for ids_shown, prompt in zip(shown, prompts, strict=True):
            if len(ids_shown) == 1:
                chosen.append(int(ids_shown[0]))
                confidence.append(1.0)
                continue
            logp = self.backend.option_logprobs([prompt], [str(j + 1) for j in range(len(ids_shown))])[0]
            chosen.append(int(ids_shown[int(np.argmax(logp))]))
            confidence.append(float(np.exp(logp.max())))
        order = np.argsort(-np.array(confidence), kind="stable")
        tokens = (self.backend.usage.input_tokens - before[0], self.backend.usage.output_tokens - before[1])
        return Selection(np.array(chosen, dtype=np.int64)[order], np.array(confidence, dtype=np.float32)[order],
                         {"clusters": len(groups), "input_tokens": tokens[0], "output_tokens": tokens[1]})


def _kmeans_groups(vectors: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split rows into ``k`` non-empty groups by the shared k-means (:func:`curate.index.kmeans`:
    k-means++ seeds, so well separated groups of candidates each get a cluster; everything drawn from
    ``rng``). Empty clusters are refilled from the largest one, so there are always exactly ``k`` groups."""
    n = len(vectors)
    if k >= n:
        return [np.array([i]) for i in range(n)]
    _, assign = kmeans(vectors, k, rng=rng, n_iter=20)
    groups = [np.flatnonzero(assign == c) for c in range(k)]
    for c in range(k):
        if len(groups[c]) == 0:
            big = max(range(k), key=lambda j: len(groups[j]))
            groups[c], groups[big] = groups[big][-1:], groups[big][:-1]
    return groups
