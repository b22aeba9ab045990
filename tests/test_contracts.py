"""The contract suites of curate.testing, applied to every paradigm's strategies, annotators and learners.

Numpy-only parts here are the fast unit layer; the annotators on a tiny LM built from a config are
the integration layer (tiny models, no hub)."""

from __future__ import annotations

import numpy as np
import pytest

from curate.acquire import REGISTRY, PoolState, StrategyContext
from curate.budget import Prices
from curate.index import EmbeddingIndex
from curate.plugins import installed
from curate.pool import load_pool
from curate.testing import check_annotator, check_learner, check_strategy

N, C = 60, 3
PRICES = Prices(human_per_label=0.4, llm_input_per_million=2.0, llm_output_per_million=8.0)


def _state() -> PoolState:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8))[rng.integers(0, 4, N)] + 0.3 * rng.normal(size=(N, 8))
    logits = rng.normal(size=(N, C))
    margin = rng.normal(size=N)
    return PoolState(size=N, labeled=np.array([1, 4, 7]), index=EmbeddingIndex.from_vectors(x, kind="flat"),
                     probs=np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
                     pool=load_pool([{"text": f"item {i}"} for i in range(N)]),
                     arrays={"mc_probs": rng.dirichlet(np.ones(C), size=(5, N)),
                             "committee_probs": rng.dirichlet(np.ones(2), size=(4, N)),
                             "token_entropy": rng.random(N), "perplexity": rng.random(N) * 5, "margin": margin,
                             "prompt_entropy": rng.random(N)})


installed()  # every installed paradigm's strategies join the registry
# Every strategy that needs no LM, no teacher and no response learner (those: test_acquire_llm,
# test_responses, test_distill); the paradigms' own included.
NAMES = [s.name for s in REGISTRY if not s.needs & {"backend", "teacher", "responses"}]


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_strategy_keeps_the_contract(name):
    check_strategy(REGISTRY.build(name, {}, StrategyContext()), _state())


def test_the_paradigms_strategies_are_among_them():
    assert {"reward_margin", "ensemble_disagreement", "entropy_certainty", "reward_margin_kcenter"} <= set(NAMES)


def test_the_contract_catches_a_broken_strategy():
    class Repeats:
        def select(self, state, budget, *, rng):
            from curate.acquire import Selection

            return Selection(np.full(budget, state.candidates[0], dtype=np.int64))

    with pytest.raises(AssertionError, match="Repeats: must return at most 5 unique ids"):
        check_strategy(Repeats(), _state())


def test_learners_keep_the_contract():
    from curate.paradigms.icl.annotate import DemoSetLearner
    from curate.paradigms.preference import RewardModelLearner

    from curate.learners import EmbeddingClassifier

    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, 8)).astype(np.float32)
    ids = np.arange(12)
    check_learner(EmbeddingClassifier(x, ["a", "b", "c"]), ids, ["a", "b", "c"] * 4, size=N)
    check_learner(DemoSetLearner(x, ["no", "yes"]), ids, ["no", "yes"] * 6, size=N)
    check_learner(RewardModelLearner(x, rng.normal(size=(N, 8)), members=3), ids, ["a", "b"] * 6, size=N)


def test_the_contract_catches_a_learner_that_declares_too_much():
    from curate.learners import EmbeddingClassifier

    class Claims(EmbeddingClassifier):
        capabilities = frozenset({"probs", "arrays:margin"})

        def arrays(self):
            return {}

    x = np.random.default_rng(0).normal(size=(N, 4))
    with pytest.raises(AssertionError, match=r"declares arrays:margin but arrays\(\) has only \[\]"):
        check_learner(Claims(x, ["a", "b"]), np.arange(6), ["a", "b"] * 3, size=N)


def test_gold_and_hybrid_annotators_keep_the_contract():
    from curate.annotate import GoldAnnotator
    from curate.annotate.hybrid import HybridAnnotator

    pool = load_pool([{"text": f"t{i}", "label": "pos" if i % 2 else "neg"} for i in range(10)])
    got = check_annotator(GoldAnnotator(), pool, [0, 3, 5], prices=PRICES)
    assert [a.label for a in sorted(got, key=lambda a: a.item_id)] == ["neg", "pos", "pos"]

    class Unsure:  # a machine labeller at the seam: confident on even ids only, billed by the token
        name = "llm"

        def annotate(self, pool, ids, *, labeled=None):
            from curate.annotate.base import Annotation

            for i in np.asarray(ids).tolist():
                yield Annotation(i, "neg", "llm", 0.95 if i % 2 == 0 else 0.5, input_tokens=30, output_tokens=1)

        def worst_case_micros(self, prices):
            return prices.micros(input_tokens=30, output_tokens=1)

    hybrid = HybridAnnotator(Unsure(), GoldAnnotator(), threshold=0.9)
    got = check_annotator(hybrid, pool, [0, 1, 2, 3], prices=PRICES)
    assert {a.item_id: a.source for a in got if a.label is not None} == {0: "llm", 1: "human", 2: "llm", 3: "human"}


def test_lm_annotators_keep_the_contract_on_a_tiny_model(tiny_backend, tiny_lm_dir):
    from curate.paradigms.preference import PairwiseJudge, pairs_from_preferences

    from curate.annotate.llm import LLMAnnotator
    from curate.responses import RecordedTeacher, TeacherAnnotator

    reviews = load_pool([{"text": t} for t in ("the film was wonderful", "the food was cold", "a great phone")])
    check_annotator(LLMAnnotator(tiny_backend, ["positive", "negative"], instruction="Sentiment?"), reviews, [0, 1, 2],
                    prices=PRICES)
    pairs = pairs_from_preferences([{"prompt": "say hi", "chosen": "hi there", "rejected": "no"}] * 3, seed=0)
    check_annotator(PairwiseJudge(tiny_backend, max_prompt_tokens=8, max_response_tokens=8), pairs, [0, 2],
                    prices=PRICES)
    prompts = load_pool([{"prompt": p, "response": r} for p, r in (("name a fruit", "apple"), ("count", "1 2 3"))])
    check_annotator(RecordedTeacher("response", tokenizer=str(tiny_lm_dir)).prepare(prompts), prompts, [0, 1],
                    prices=PRICES)
    check_annotator(TeacherAnnotator(tiny_backend, max_new_tokens=4, max_input_tokens=32), prompts, [1],
                    prices=PRICES)
