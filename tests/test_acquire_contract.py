"""One contract every strategy passes: at most ``budget``, unique, unlabelled, deterministic for a
seed, state untouched, and a clear error on an empty pool or too large a budget."""

from __future__ import annotations

import copy
import zlib

import numpy as np
import pytest

from curate.acquire import REGISTRY, PoolState, make_strategy
from curate.backends.base import BaseBackend, TokenLogprobs, log_softmax_rows
from curate.errors import ConfigError
from curate.index import EmbeddingIndex
from curate.pool import load_pool

N, C = 80, 3
# LLM strategies get a deterministic fake backend at the seam (exact behaviour: tests/test_acquire_llm.py).
NEEDS_BACKEND = {"ask_llm", "select_llm", "ifd"}
# The core's strategies that build from a name alone (answer_* read a response learner: test_responses.py).
NAMES = [s.name for s in REGISTRY if s.owner == "core" and "responses" not in s.needs]


class HashedLM(BaseBackend):
    """Deterministic scores from the text's content; enough for the contract."""

    name = "hashed"

    def chat_prompt(self, messages, *, add_generation_prompt=True):
        return messages[-1]["content"]

    def option_logprobs(self, prompts, options, *, normalize=True):
        rows = [[(zlib.crc32(f"{p}|{o}".encode()) % 1000) / 100.0 for o in options] for p in prompts]
        return log_softmax_rows(np.array(rows))

    def completion_logprobs(self, prompts, completions):
        return [TokenLogprobs(("x",), np.array([-(zlib.crc32(f"{p}|{c}".encode()) % 500) / 100.0 - 0.01]))
                for p, c in zip(prompts, completions, strict=True)]


def make_state(labeled=(0, 5, 9)) -> PoolState:
    pool = load_pool([{"prompt": f"question {i}", "response": f"answer {i * 7 % 13}"} for i in range(N)])
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8))
    x = centers[rng.integers(0, 4, N)] + 0.3 * rng.normal(size=(N, 8))
    index = EmbeddingIndex.from_vectors(x, kind="flat")
    logits = rng.normal(size=(N, C))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mc = rng.dirichlet(np.ones(C), size=(5, N))
    committee = rng.dirichlet(np.ones(C), size=(4, N))
    return PoolState(size=N, labeled=np.array(labeled), index=index, probs=probs, pool=pool,
                     arrays={"mc_probs": mc, "committee_probs": committee, "token_entropy": rng.random(N),
                             "perplexity": rng.random(N) * 10})


@pytest.fixture(params=NAMES)
def strategy(request):
    if request.param in NEEDS_BACKEND:
        params = {"backend": HashedLM()}
        if request.param == "ifd":
            params["drop_above"] = None  # the fake's IFD values are arbitrary; keep every item rankable
        return make_strategy(request.param, **params)
    return make_strategy(request.param)


def test_returns_budget_unique_unlabelled_ids(strategy):
    state = make_state()
    sel = strategy.select(state, 10, rng=np.random.default_rng(1))
    assert len(sel.ids) == 10 and sel.ids.dtype == np.int64
    assert len(np.unique(sel.ids)) == 10
    assert not np.isin(sel.ids, state.labeled).any()
    assert np.isin(sel.ids, state.candidates).all()
    if sel.scores is not None:
        assert len(sel.scores) == len(sel.ids)


def test_deterministic_for_a_seed(strategy):
    state = make_state()
    a = strategy.select(state, 7, rng=np.random.default_rng(3)).ids
    b = strategy.select(state, 7, rng=np.random.default_rng(3)).ids
    assert (a == b).all()


def test_state_untouched(strategy):
    state = make_state()
    before = copy.deepcopy((state.labeled, state.candidates, state.probs, dict(state.arrays), state.index.vectors.copy()))
    strategy.select(state, 5, rng=np.random.default_rng(0))
    after = (state.labeled, state.candidates, state.probs, dict(state.arrays), state.index.vectors)
    for x, y in zip(before[:3], after[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    for key in before[3]:
        np.testing.assert_array_equal(before[3][key], after[3][key])
    np.testing.assert_array_equal(before[4], after[4])


def test_respects_narrowed_candidates(strategy):
    state = make_state()
    narrowed = state.narrowed(state.candidates[::3])
    sel = strategy.select(narrowed, 4, rng=np.random.default_rng(0))
    assert np.isin(sel.ids, state.candidates[::3]).all()


def test_empty_pool_and_too_large_budget_are_clear_errors(strategy):
    everything = make_state(labeled=range(N))
    with pytest.raises(ConfigError, match="No unlabelled candidates"):
        strategy.select(everything, 1, rng=np.random.default_rng(0))
    state = make_state()
    with pytest.raises(ConfigError, match="only 77 unlabelled candidates are left"):
        strategy.select(state, 78, rng=np.random.default_rng(0))


def test_zero_budget_returns_nothing(strategy):
    assert len(strategy.select(make_state(), 0, rng=np.random.default_rng(0)).ids) == 0


def test_unknown_strategy_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'entropy'"):
        make_strategy("entrpy")
    with pytest.raises(ConfigError, match="Bad parameters for strategy 'entropy'"):
        make_strategy("entropy", beta=2)
