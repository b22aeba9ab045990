"""Selection by an LLM: Ask-LLM, SelectLLM-style in-cluster choice, and IFD.

The LM is injected (any :mod:`curate.backends` backend). Its tokens are paid for: inside an
:class:`~curate.loop.ActiveLoop` the loop hands each strategy the round's
:class:`~curate.budget.Purse` (``use_purse``), and every LM call is priced before it is made (an
upper bound on its tokens), refused when the purse cannot pay it (the run stops at the money
budget: :class:`~curate.budget.SelectionBudgetReached`), and charged at the tokens the backend
reports, journalled together with the scores it bought, as it returns. Scores are bought once per
item: a later round, or a run resumed after a kill, reads them back from the journal.
``worst_case_micros`` gives the loop the most a selection can spend, for its budget and its
worst-case estimate. Outside a loop (no purse) nothing is charged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from curate.acquire.base import PoolState, Selection, check_budget
from curate.budget import Prices, SelectionBudgetReached
from curate.errors import ConfigError
from curate.index import kmeans

__all__ = ["IFD", "AskLLM", "SelectLLM", "token_bound"]

SOURCE = "selection"  # the ledger's source of what LLM selection spends

ASK_LLM_QUESTION = (
    "###\n{text}\n###\n"
    "Is the example between the ### marks informative and well-formed, so that it would help "
    "train a language model? Answer yes or no."
)


def token_bound(backend, texts: Sequence[str]) -> list[int]:
    """An upper bound on the tokens of each text under ``backend``: its tokenizer's count where it
    has one (plus a few for special tokens), else the UTF-8 bytes (a byte-level BPE never makes
    more tokens than bytes)."""
    tokenizer = _tokenizer(backend)
    if tokenizer is None:
        return [len(t.encode("utf-8")) + 8 for t in texts]
    return [len(ids) + 8 for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


def _tokenizer(backend):
    try:
        return getattr(backend, "tokenizer", None)
    except Exception:  # a remote backend without a local tokenizer may raise here: fall back to bytes
        return None


class _PaidScores:
    """Per-item LM scores, bought once: cached in memory, read back from the journal through the
    purse, and bought ``batch_size`` items per LM call, each call priced first and charged after."""

    def __init__(self, backend, scorer: str, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1. Got {batch_size!r} instead.")
        self.backend = backend
        self.scorer = scorer
        self.batch_size = batch_size
        self.purse = None
        self._pool_key: int | None = None
        self._scores: dict[int, float] = {}
        self._bounds_key: int | None = None
        self._bounds: dict[int, int] = {}  # id -> its input-token bound, tokenised once per pool

    def bound(self, pool, ids: np.ndarray, per_item: Callable[[np.ndarray], Sequence[int]]) -> int:
        """The input-token bound of scoring ``ids``: ``per_item(todo)`` for items not bounded yet
        (the worst case is asked every round; the texts are tokenised once)."""
        if self._bounds_key != id(pool):
            self._bounds_key, self._bounds = id(pool), {}
        todo = np.array([i for i in np.asarray(ids, dtype=np.int64).tolist() if i not in self._bounds], dtype=np.int64)
        if len(todo):
            self._bounds.update(zip(todo.tolist(), (int(n) for n in per_item(todo)), strict=True))
        return sum(self._bounds[i] for i in np.asarray(ids, dtype=np.int64).tolist())

    def use_purse(self, purse) -> None:
        self.purse = purse
        self._scores.update(purse.bought(self.scorer))

    def get(self, pool, ids: np.ndarray, compute: Callable[[np.ndarray], np.ndarray],
            bound: Callable[[np.ndarray], int]) -> np.ndarray:
        """Scores of ``ids``; ``compute(todo)`` asks the LM, ``bound(todo)`` bounds its input tokens."""
        if self._pool_key != id(pool):
            if self._pool_key is not None and self.purse is None:
                self._scores = {}  # another pool outside a loop: scores are per pool
            self._pool_key = id(pool)
        todo = np.array([i for i in ids.tolist() if i not in self._scores], dtype=np.int64)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            self._buy(chunk, compute, bound)
        return np.array([self._scores[i] for i in ids.tolist()], dtype=np.float64)

    def _buy(self, chunk: np.ndarray, compute, bound) -> None:
        purse = self.purse
        if purse is not None:
            most = purse.price(input_tokens=bound(chunk))
            if not purse.can_afford(most):
                raise SelectionBudgetReached(
                    f"{self.scorer} cannot afford its next LM call ({len(chunk)} items, up to {most / 1e6:.6f}; "
                    f"{purse.left_micros / 1e6:.6f} left for selection this round)")
        usage = self.backend.usage
        before = (usage.input_tokens, usage.output_tokens)
        values = np.asarray(compute(chunk), dtype=np.float64)
        bought = dict(zip(chunk.tolist(), values.tolist(), strict=True))
        if purse is not None:
            purse.charge(SOURCE, input_tokens=usage.input_tokens - before[0],
                         output_tokens=usage.output_tokens - before[1], scores=(self.scorer, bought))
        self._scores.update(bought)

    def unscored(self, pool) -> np.ndarray:
        return np.setdiff1d(np.arange(len(pool), dtype=np.int64), np.fromiter(self._scores, np.int64))


def _require_pool(state: PoolState, who: str):
    if state.pool is None:
        raise ConfigError(f"{who} reads texts: it needs PoolState.pool.")
    return state.pool


class AskLLM:
    """Ask-LLM (Sachdeva et al. 2024): score = the LM's probability of answering "yes" to a
    quality question about the item. A scorer: wrap it in ``TopK`` to select. Paid per item, once
    (see the module docstring)."""

    def __init__(self, backend, *, question: str = ASK_LLM_QUESTION, options: tuple[str, str] = ("yes", "no"),
                 chat: bool = True, batch_size: int = 16) -> None:
        if "{text}" not in question:
            raise ConfigError("The Ask-LLM question must contain {text} where the item goes.")
        self.backend = backend
        self.question = question
        self.options = options
        self.chat = chat
        self._paid = _PaidScores(backend, "ask_llm", batch_size)

    def prompt(self, text: str) -> str:
        content = self.question.replace("{text}", text)
        return self.backend.chat_prompt([{"role": "user", "content": content}]) if self.chat else content

    def use_purse(self, purse) -> None:
        self._paid.use_purse(purse)

    def _bound(self, pool, ids: np.ndarray) -> int:
        return self._paid.bound(pool, ids, lambda todo: self._item_bounds(pool, todo))

    def _item_bounds(self, pool, ids: np.ndarray) -> list[int]:
        # Each option is scored after the prompt: at most (prompt + option) tokens read per option.
        options = max(token_bound(self.backend, list(self.options)))
        prompts = token_bound(self.backend, [self.prompt(t) for t in pool.texts(ids)])
        return [len(self.options) * (n + options) for n in prompts]

    def worst_case_micros(self, prices: Prices, *, pool=None, batch: int | None = None) -> int:
        """Scoring every item of ``pool`` not scored yet."""
        return prices.micros(input_tokens=self._bound(pool, self._paid.unscored(pool)))

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        pool = _require_pool(state, "Ask-LLM")

        def compute(todo: np.ndarray) -> np.ndarray:
            logp = self.backend.option_logprobs([self.prompt(t) for t in pool.texts(todo)], list(self.options))
            return np.exp(logp[:, 0])

        return self._paid.get(pool, np.asarray(ids, dtype=np.int64), compute, lambda todo: self._bound(pool, todo))


class IFD:
    """Instruction-following difficulty (Li et al. 2024): ppl(response | instruction) / ppl(response).

    High IFD = the instruction helps little to predict the response = a hard, informative pair.
    Pairs with IFD >= ``drop_above`` (the instruction does not help at all; often misaligned) rank
    last, as the paper recommends. Needs ``prompt`` and ``response`` columns. Paid per item, once
    (see the module docstring).
    """

    def __init__(self, backend, *, drop_above: float | None = 1.0, chat: bool = True, batch_size: int = 16) -> None:
        self.backend = backend
        self.drop_above = drop_above
        self.chat = chat
        self._paid = _PaidScores(backend, "ifd", batch_size)

    def use_purse(self, purse) -> None:
        self._paid.use_purse(purse)

    def _pairs(self, pool, ids: np.ndarray) -> tuple[list[str], list[str]]:
        if not {"prompt", "response"} <= set(pool.roles):
            raise ConfigError(f"IFD needs 'prompt' and 'response' columns; the pool has roles {pool.roles}.")
        rows = pool.select(ids)
        prompts = list(rows["prompt"])
        if self.chat:
            prompts = [self.backend.chat_prompt([{"role": "user", "content": p}]) for p in prompts]
        return prompts, list(rows["response"])

    def _bound(self, pool, ids: np.ndarray) -> int:
        return self._paid.bound(pool, ids, lambda todo: self._item_bounds(pool, todo))

    def _item_bounds(self, pool, ids: np.ndarray) -> list[int]:
        prompts, responses = self._pairs(pool, ids)
        # The response is read twice: after its instruction and alone.
        return [p + 2 * r for p, r in zip(token_bound(self.backend, prompts), token_bound(self.backend, responses),
                                          strict=True)]

    def worst_case_micros(self, prices: Prices, *, pool=None, batch: int | None = None) -> int:
        """Scoring every pair of ``pool`` not scored yet."""
        return prices.micros(input_tokens=self._bound(pool, self._paid.unscored(pool)))

    def values(self, pool, ids: np.ndarray) -> np.ndarray:
        """The raw IFD of each pair (asks the LM; nothing is cached or charged here)."""
        prompts, responses = self._pairs(pool, ids)
        conditioned = self.backend.perplexity(responses, prompts=prompts)
        alone = self.backend.perplexity(responses)
        return conditioned / alone

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        pool = _require_pool(state, "IFD")
        ifd = self._paid.get(pool, np.asarray(ids, dtype=np.int64), lambda todo: self.values(pool, todo),
                             lambda todo: self._bound(pool, todo))
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
        self.purse = None

    def use_purse(self, purse) -> None:
        self.purse = purse

    def worst_case_micros(self, prices: Prices, *, pool=None, batch: int | None = None) -> int:
        """One selection of ``batch`` items: one cluster prompt each, every option read after it."""
        return prices.micros(input_tokens=(batch or 1) * self.per_cluster * (self._prompt_bound() + 8))

    def _prompt_bound(self) -> int:
        # per_cluster items of at most max_chars (+ "...") each, the question and the chat template.
        listing = self.per_cluster * (4 * (self.max_chars + 3) + 8)
        return len(self.question.encode("utf-8")) + listing + 64

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
        # The choices bought in this round before a restart (the same seed draws the same groups).
        scorer = f"select_llm:round{self.purse.round}" if self.purse is not None else None
        before_restart = self.purse.bought(scorer) if self.purse is not None else {}
        chosen, confidence = [], []
        usage = self.backend.usage
        start = (usage.input_tokens, usage.output_tokens)
        for ids_shown, prompt in zip(shown, prompts, strict=True):
            known = [int(i) for i in ids_shown.tolist() if int(i) in before_restart]
            if len(ids_shown) == 1 or known:
                pick = known[0] if known else int(ids_shown[0])
                chosen.append(pick)
                confidence.append(before_restart.get(pick, 1.0))
                continue
            options = [str(j + 1) for j in range(len(ids_shown))]
            if self.purse is not None:
                most = self.purse.price(input_tokens=len(options) * (token_bound(self.backend, [prompt])[0] + 8))
                if not self.purse.can_afford(most):
                    raise SelectionBudgetReached(
                        f"SelectLLM cannot afford its next LM call (up to {most / 1e6:.6f}; "
                        f"{self.purse.left_micros / 1e6:.6f} left for selection this round)")
            before = (usage.input_tokens, usage.output_tokens)
            logp = self.backend.option_logprobs([prompt], options)[0]
            pick, conf = int(ids_shown[int(np.argmax(logp))]), float(np.exp(logp.max()))
            if self.purse is not None:
                self.purse.charge(SOURCE, input_tokens=usage.input_tokens - before[0],
                                  output_tokens=usage.output_tokens - before[1], scores=(scorer, {pick: conf}))
            chosen.append(pick)
            confidence.append(conf)
        order = np.argsort(-np.array(confidence), kind="stable")
        tokens = (usage.input_tokens - start[0], usage.output_tokens - start[1])
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
