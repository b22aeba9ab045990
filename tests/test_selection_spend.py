"""LLM selection pays for its tokens: priced before each call, charged and journalled as it returns,
inside the money budget, and never bought twice (later rounds and resumed runs read the journal)."""

from __future__ import annotations

import numpy as np
import pytest

from curate.acquire import TopK
from curate.acquire.llm import AskLLM, SelectLLM
from curate.annotate.base import GoldAnnotator
from curate.backends.base import BaseBackend
from curate.budget import Ledger, Prices
from curate.index import EmbeddingIndex
from curate.journal import Journal
from curate.learners import EmbeddingClassifier
from curate.loop import ActiveLoop
from curate.pool import load_pool
from curate.stopping import MaxRounds

pytestmark = pytest.mark.unit

PRICES = Prices(human_per_label=0.01, llm_input_per_million=1000.0)  # 0.001 per token read


class CountingLM(BaseBackend):
    """P(yes) from the item's number; reads 30 tokens per prompt and option, like a real backend's usage."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.scored: list[str] = []

    def chat_prompt(self, messages, *, add_generation_prompt=True):
        return messages[-1]["content"]

    def option_logprobs(self, prompts, options, *, normalize=True):
        self.scored += list(prompts)
        self.usage.add(30 * len(prompts) * len(options), 0)
        rows = []
        for p in prompts:
            digits = [int(w) for w in p.replace("#", " ").split() if w.isdigit()]
            yes = 0.05 + 0.9 * ((digits[0] * 37) % 100) / 100 if digits else 0.5
            rows.append(np.log([yes, 1 - yes]) if len(options) == 2 else np.log(np.full(len(options), 1 / len(options))))
        return np.array(rows)


def world(n=120):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    pool = load_pool([{"text": f"item {i}", "label": int(v)} for i, v in enumerate(y)])
    return x, pool


def ask_loop(tmp_path, backend, budget, rounds=4):
    x, pool = world()
    return ActiveLoop(pool, strategy=TopK(AskLLM(backend, batch_size=8)), annotator=GoldAnnotator(),
                      learner=EmbeddingClassifier(x, [0, 1]), run_dir=tmp_path / "run", init_size=6, batch_size=6,
                      stopping=MaxRounds(rounds), ledger=Ledger(PRICES, budget=budget), seed=0)


def test_ask_llm_tokens_are_in_the_ledger_and_the_journal(tmp_path):
    backend = CountingLM()
    result = ask_loop(tmp_path, backend, budget=100.0).run()
    spent = {c.source: c for c in result.ledger.entries if c.source == "selection"}
    selection = [c for c in result.ledger.entries if c.source == "selection"]
    assert spent and sum(c.input_tokens for c in selection) == backend.usage.input_tokens
    # Every candidate of round 1 scored once; rounds 2 and 3 read the scores again without paying.
    assert len(backend.scored) == 120 - 6 and len(set(backend.scored)) == len(backend.scored)
    journal = Journal.of(tmp_path / "run")
    assert len(journal.scores("ask_llm")) == 114
    assert sum(c.micros for c in journal.charges() if c.source == "selection") == sum(c.micros for c in selection)
    journal.close()
    estimate = ask_loop(tmp_path / "other", CountingLM(), budget=None).worst_case(4)
    assert estimate.selection_worst_case >= sum(c.micros for c in selection) / 1e6


def test_ask_llm_under_a_money_budget_stops_at_the_budget(tmp_path):
    # Round 0 buys 6 labels (0.06); scoring the 114 others costs 114 x 2 x 30 tokens = 6.84: the budget
    # of 3.0 cannot pay it, so the run stops while selecting, never past the budget.
    backend = CountingLM()
    result = ask_loop(tmp_path, backend, budget=3.0).run()
    assert result.stop_reason.startswith("money budget reached while selecting")
    assert result.ledger.spent_micros <= 3_000_000
    selection = sum(c.micros for c in result.ledger.entries if c.source == "selection")
    assert selection > 0 and selection == backend.usage.input_tokens * 1000
    assert len(result.labels) == 6
    # Resumed with more money: the scores bought before are read from the journal, not bought again.
    again = CountingLM()
    result2 = ask_loop(tmp_path, again, budget=100.0).run()
    assert not set(again.scored) & set(backend.scored)
    assert len(backend.scored) + len(again.scored) == 114
    assert result2.ledger.spent_micros <= 100_000_000 and len(result2.labels) == 24


def test_select_llm_pays_per_cluster_and_resumes_its_choices(tmp_path):
    x, pool = world()
    index = EmbeddingIndex.from_vectors(x)
    backend = CountingLM()
    loop = ActiveLoop(pool, strategy=SelectLLM(backend, per_cluster=4), annotator=GoldAnnotator(),
                      learner=EmbeddingClassifier(x, [0, 1]), run_dir=tmp_path / "run", index=index, init_size=6,
                      batch_size=5, stopping=MaxRounds(3), ledger=Ledger(PRICES, budget=50.0), seed=0)
    result = loop.run()
    selection = [c for c in result.ledger.entries if c.source == "selection"]
    assert len(selection) == len(backend.scored) == 10  # two rounds x five clusters
    assert sum(c.input_tokens for c in selection) == backend.usage.input_tokens
    assert loop.worst_case(3).selection_worst_case * 1e6 >= sum(c.micros for c in selection)
