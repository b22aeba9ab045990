"""LLM selection: Ask-LLM, IFD and SelectLLM with a scripted backend at the seam, then a real tiny LM."""

from __future__ import annotations

import numpy as np
import pytest

from curate.acquire import PoolState, TopK, make_strategy
from curate.acquire.llm import IFD, AskLLM, SelectLLM, _kmeans_groups
from curate.backends.base import BaseBackend, TokenLogprobs
from curate.errors import ConfigError
from curate.index import EmbeddingIndex
from curate.pool import load_pool


class Scripted(BaseBackend):
    """Option log-probs and perplexities decided by the test, keyed by text content."""

    name = "scripted"

    def __init__(self, yes=None, ppl=None, pick=None):
        super().__init__()
        self.yes, self.ppl, self.pick = yes or {}, ppl or {}, pick or {}
        self.calls = 0

    def chat_prompt(self, messages, *, add_generation_prompt=True):
        return messages[-1]["content"]

    def option_logprobs(self, prompts, options, *, normalize=True):
        self.calls += len(prompts)
        self.usage.add(10 * len(prompts), 0)
        rows = []
        for p in prompts:
            if options == ["yes", "no"]:
                y = next(v for k, v in self.yes.items() if k in p)
                rows.append(np.log([y, 1 - y]))
            else:  # numbered choice: the scripted favourite's number gets 0.9
                lines = [ln for ln in p.splitlines() if ln[:1].isdigit()]
                probs = np.full(len(options), 0.1 / (len(options) - 1))
                for j, ln in enumerate(lines):
                    if any(f in ln for f in self.pick):
                        probs[:] = 0.1 / (len(options) - 1)
                        probs[j] = 0.9
                rows.append(np.log(probs))
        return np.array(rows)

    def completion_logprobs(self, prompts, completions):
        out = []
        for p, c in zip(prompts, completions, strict=True):
            ppl = self.ppl[(p != "", c)]
            out.append(TokenLogprobs(("x",), np.array([-np.log(ppl)])))
        return out


def test_ask_llm_ranks_by_p_yes_and_asks_once():
    pool = load_pool([{"text": t} for t in ["alpha", "beta", "gamma", "delta"]])
    backend = Scripted(yes={"alpha": 0.2, "beta": 0.9, "gamma": 0.5, "delta": 0.7})
    strategy = TopK(AskLLM(backend))
    state = PoolState.of(pool)
    sel = strategy.select(state, 2, rng=np.random.default_rng(0))
    assert sel.ids.tolist() == [1, 3]
    np.testing.assert_allclose(sel.scores, [0.9, 0.7], rtol=1e-6)
    strategy.select(state, 2, rng=np.random.default_rng(0))
    assert backend.calls == 4  # cached per id: the second round asked nothing
    with pytest.raises(ConfigError, match="must contain"):
        AskLLM(backend, question="no slot")


def test_ifd_equals_the_ratio_and_drops_unhelpful_instructions():
    rows = [{"prompt": "p1", "response": "r1"}, {"prompt": "p2", "response": "r2"}, {"prompt": "p3", "response": "r3"}]
    pool = load_pool(rows)
    # (conditioned?, response) -> perplexity
    ppl = {(True, "r1"): 4.0, (False, "r1"): 8.0, (True, "r2"): 9.0, (False, "r2"): 10.0,
           (True, "r3"): 12.0, (False, "r3"): 6.0}
    scorer = IFD(Scripted(ppl=ppl), chat=False)
    np.testing.assert_allclose(scorer.values(pool, np.array([0, 1, 2])), [0.5, 0.9, 2.0])
    sel = TopK(scorer).select(PoolState.of(pool), 3, rng=np.random.default_rng(0))
    assert sel.ids.tolist() == [1, 0, 2]  # IFD 2.0 >= 1: ranked last
    with pytest.raises(ConfigError, match="IFD needs 'prompt' and 'response'"):
        IFD(Scripted()).values(load_pool([{"text": "x"}]), np.array([0]))


def test_select_llm_takes_the_lms_pick_in_each_cluster():
    rng = np.random.default_rng(0)
    texts, vecs = [], []
    for c, center in enumerate(np.eye(3)):
        for j in range(5):
            texts.append(f"cluster{c} item{j}")
            vecs.append(center + 0.01 * rng.normal(size=3))
    pool = load_pool([{"text": t} for t in texts])
    index = EmbeddingIndex.from_vectors(np.array(vecs), kind="flat")
    backend = Scripted(pick={"cluster0 item3", "cluster1 item1", "cluster2 item4"})
    sel = SelectLLM(backend, per_cluster=5).select(PoolState.of(pool, index=index), 3, rng=np.random.default_rng(1))
    assert sorted(pool.texts(sel.ids)) == ["cluster0 item3", "cluster1 item1", "cluster2 item4"]
    assert sel.info["input_tokens"] == 30 and sel.info["clusters"] == 3


def test_select_llm_groups_are_the_planted_clusters_small_one_included():
    # A group of 3 among two of 40: k-means++ seeds (the shared kmeans) give it a cluster of its own.
    rng = np.random.default_rng(2)
    label = np.repeat([0, 1, 2], [40, 40, 3])
    vecs = (np.eye(8)[label] + 0.02 * rng.normal(size=(len(label), 8))).astype(np.float32)
    for seed in range(5):
        groups = _kmeans_groups(vecs, 3, np.random.default_rng(seed))
        assert sorted(sorted(g.tolist()) for g in groups) == [np.flatnonzero(label == c).tolist() for c in range(3)]
    again = _kmeans_groups(vecs, 3, np.random.default_rng(0))
    assert [g.tolist() for g in again] == [g.tolist() for g in _kmeans_groups(vecs, 3, np.random.default_rng(0))]


def test_select_llm_groups_are_never_empty():
    # Two distinct rows, five copies each, three groups: k-means leaves a cluster empty; it is refilled.
    vecs = np.repeat(np.eye(3, dtype=np.float32)[:2], 5, axis=0)
    groups = _kmeans_groups(vecs, 3, np.random.default_rng(0))
    assert len(groups) == 3 and all(len(g) for g in groups)
    assert sorted(np.concatenate(groups).tolist()) == list(range(10))
    assert [[i] for i in range(4)] == [g.tolist() for g in _kmeans_groups(vecs[:4], 5, np.random.default_rng(0))]


def test_registry_builds_llm_strategies_with_a_backend():
    backend = Scripted(yes={"a": 0.5})
    assert isinstance(make_strategy("ask_llm", backend=backend).scorer, AskLLM)
    assert isinstance(make_strategy("select_llm", backend=backend, per_cluster=4), SelectLLM)


def test_with_a_real_tiny_lm(tiny_backend):
    pool = load_pool([{"prompt": "what is the capital of france?", "response": "paris."},
                      {"prompt": "the cat sat on", "response": "the mat"}])
    ifd = IFD(tiny_backend).values(pool, np.array([0, 1]))
    assert ifd.shape == (2,) and np.isfinite(ifd).all() and (ifd > 0).all()
    scores = AskLLM(tiny_backend).score(PoolState.of(pool), np.array([0, 1]))
    assert ((scores > 0) & (scores < 1)).all()
