"""A kill inside one paid LLM call never changes what the run pays: the call's annotations are
journalled together, so a resumed run re-asks whole calls, batched as an uninterrupted run batches
them, and pays the shared prompt prefix exactly as often."""

from __future__ import annotations

import numpy as np
import pytest

from curate.acquire import make_strategy
from curate.annotate.base import Annotation
from curate.budget import Ledger, Prices
from curate.learners import EmbeddingClassifier
from curate.loop import ActiveLoop
from curate.pool import load_pool
from curate.stopping import MaxRounds

pytestmark = pytest.mark.unit

PREFIX, PER_ITEM, BATCH = 100, 10, 4  # a call of n items reads the prefix once: 100 + 10 n tokens


class Killed(Exception):
    pass


class BatchedLLM:
    """Labels from the data, billed like an LLM batch with a shared prefix; optionally killed after
    the ``die_after``-th annotation it yields (inside a call)."""

    def __init__(self, die_after: int | None = None) -> None:
        self.die_after = die_after
        self.yielded = 0

    def annotate(self, pool, ids, *, labeled=None):
        ids = np.asarray(ids, dtype=np.int64)
        gold = pool.column("label")
        for start in range(0, len(ids), BATCH):
            batch = ids[start:start + BATCH].tolist()
            tokens = [PER_ITEM + (PREFIX if k == 0 else 0) for k in range(len(batch))]  # the prefix on the first
            for k, item in enumerate(batch):
                if self.die_after is not None and self.yielded == self.die_after:
                    raise Killed()
                self.yielded += 1
                yield Annotation(item, gold[item], "llm", 0.9, input_tokens=tokens[k], call_end=k == len(batch) - 1)

    def worst_case_micros(self, prices):
        return prices.micros(input_tokens=PREFIX + PER_ITEM)


def loop(tmp_path, annotator, name="run"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    pool = load_pool([{"text": f"t{i}", "label": int(v)} for i, v in enumerate(x[:, 0] > 0)])
    return ActiveLoop(pool, strategy=make_strategy("margin"), annotator=annotator, learner=EmbeddingClassifier(x, [0, 1]),
                      run_dir=tmp_path / name, init_size=10, batch_size=10, stopping=MaxRounds(3),
                      ledger=Ledger(Prices(llm_input_per_million=1e6)), seed=0)


@pytest.mark.parametrize("die_after", [1, 2, 5, 13, 22])
def test_a_kill_inside_a_call_costs_nothing_extra(tmp_path, die_after):
    whole = loop(tmp_path, BatchedLLM(), "whole").run()
    with pytest.raises(Killed):
        loop(tmp_path, BatchedLLM(die_after=die_after)).run()
    resumed = loop(tmp_path, BatchedLLM()).run()
    assert resumed.labels == whole.labels
    assert resumed.ledger.spent_micros == whole.ledger.spent_micros
    assert sorted((c.item_id, c.input_tokens) for c in resumed.ledger.entries) == sorted(
        (c.item_id, c.input_tokens) for c in whole.ledger.entries)


def test_an_llm_annotator_spends_a_money_budget_to_its_last_affordable_label(tmp_path, tiny_backend):
    """Batches are sized by each item's measured prompt, not the 512-token bound: with token prices
    only, the run buys until the next label would not fit."""
    from curate.annotate.llm import LLMAnnotator

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    pool = load_pool([{"text": f"review number {i} was {'good' if v else 'bad'}"} for i, v in enumerate(x[:, 0] > 0)])
    prices = Prices(llm_input_per_million=10_000.0)  # 0.01 a token
    annotator = LLMAnnotator(tiny_backend, ["positive", "negative"], instruction="Sentiment?", batch_size=4)
    per_item = annotator.item_micros(pool, np.arange(60), prices)
    budget = 2.5
    assert annotator.worst_case_micros(prices) > 4 * per_item.max()  # the old sizing bound was far above
    result = ActiveLoop(pool, strategy=make_strategy("random"), annotator=annotator,
                        learner=EmbeddingClassifier(x, ["positive", "negative"]), run_dir=tmp_path / "run",
                        init_size=6, batch_size=6, stopping=MaxRounds(50), ledger=Ledger(prices, budget=budget),
                        seed=0).run()
    spent = result.ledger.spent_micros
    assert spent <= budget * 1e6
    open_items = np.setdiff1d(np.arange(60), np.fromiter(result.labels, np.int64))
    # Stopped for money: the cheapest item still open would not have fitted (bounds, so the real
    # charges are at most these) — nothing affordable was left unbought.
    assert "money budget" in result.stop_reason
    assert per_item[open_items].min() > budget * 1e6 - spent
    assert spent > 0.6 * budget * 1e6
