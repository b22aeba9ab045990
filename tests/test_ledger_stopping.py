"""Ledger properties (never over budget, totals = sum of entries) and stopping criteria."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.budget import MICROS, Ledger, Prices
from curate.errors import ConfigError
from curate.stopping import (
    AllOf,
    AnyOf,
    History,
    LabelBudget,
    MaxRounds,
    MoneyBudget,
    Plateau,
    RoundRecord,
    StablePredictions,
    cohen_kappa,
)

charge_st = st.tuples(st.sampled_from(["human", "llm", "gold"]), st.integers(0, 1), st.integers(0, 5000),
                      st.integers(0, 500))


@settings(max_examples=200, deadline=None)
@given(charges=st.lists(charge_st, max_size=60), budget=st.floats(0, 5), human=st.floats(0, 0.5),
       inp=st.floats(0, 20), out=st.floats(0, 60))
def test_never_over_budget_and_totals_are_exact(charges, budget, human, inp, out):
    ledger = Ledger(Prices(human, inp, out), budget=budget)
    for source, h, i, o in charges:
        micros = ledger.price(human_labels=h, input_tokens=i, output_tokens=o)
        if ledger.can_afford(micros):
            ledger.charge(source, human_labels=h, input_tokens=i, output_tokens=o)
        else:
            with pytest.raises(ConfigError, match="would exceed the budget"):
                ledger.charge(source, human_labels=h, input_tokens=i, output_tokens=o)
        assert ledger.spent_micros <= ledger.budget_micros
    totals = ledger.totals()
    assert ledger.spent_micros == sum(e.micros for e in ledger.entries)
    by_source = sum(v for k, v in totals.items() if k.startswith("spent_"))
    assert round(by_source * MICROS) == ledger.spent_micros
    assert totals["input_tokens"] == sum(e.input_tokens for e in ledger.entries)


@settings(max_examples=100, deadline=None)
@given(per_item=st.integers(1, 10_000), budget=st.integers(0, 10**6), wanted=st.integers(0, 500))
def test_affordable_batches_fit_exactly(per_item, budget, wanted):
    ledger = Ledger(budget=budget / MICROS)
    n = ledger.affordable(per_item, wanted)
    assert 0 <= n <= wanted
    assert n * per_item <= ledger.budget_micros
    assert n == wanted or (n + 1) * per_item > ledger.budget_micros


def test_prices_by_hand_and_validation():
    prices = Prices(human_per_label=0.08, llm_input_per_million=0.15, llm_output_per_million=0.6)
    assert prices.micros(human_labels=2) == 160_000
    assert prices.micros(input_tokens=1_000_000, output_tokens=500_000) == 450_000
    with pytest.raises(ConfigError, match="'human_per_label' price"):
        Prices(human_per_label=-1)


def rec(r, labels=0, spent=0.0, metric=None, preds=None):
    return RoundRecord(r, labels, spent, metric, None if preds is None else np.array(preds))


def test_budgets_and_rounds():
    h = History([rec(0, 25, 2.5), rec(1, 50, 5.0)])
    assert MaxRounds(2).reason(h) and not MaxRounds(3).reason(h)
    assert LabelBudget(50).reason(h) and not LabelBudget(51).reason(h)
    assert MoneyBudget(5.0).reason(h) and not MoneyBudget(6.0).reason(h)
    assert MoneyBudget(5.5, min_left=0.5).reason(h)


def test_plateau():
    rising = History([rec(i, metric=m) for i, m in enumerate([0.5, 0.6, 0.7, 0.8])])
    flat = History([rec(i, metric=m) for i, m in enumerate([0.5, 0.8, 0.801, 0.799, 0.802])])
    assert Plateau(window=2, min_gain=0.01).reason(rising) is None
    assert "plateaued" in Plateau(window=3, min_gain=0.01).reason(flat)
    assert Plateau(window=3).reason(History([rec(0, metric=0.5)])) is None


def test_kappa_and_stable_predictions():
    assert cohen_kappa([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    assert cohen_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == -1.0
    # Hand-computed: po = 0.75, pe = 0.5*0.25 + 0.5*0.75 = 0.5 -> kappa 0.5.
    assert cohen_kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)
    changing = History([rec(0, preds=[0, 1, 0, 1]), rec(1, preds=[1, 1, 0, 1])])
    stable = History([rec(0, preds=[0, 1, 0, 1]), rec(1, preds=[1, 1, 0, 1]), rec(2, preds=[1, 1, 0, 1])])
    assert StablePredictions(0.99).reason(changing) is None
    assert "stabilised" in StablePredictions(0.99).reason(stable)
    assert StablePredictions(0.99, window=2).reason(stable) is None


def test_combinations():
    h = History([rec(0, 25, 1.0), rec(1, 50, 2.0)])
    assert AnyOf([LabelBudget(100), MaxRounds(2)]).reason(h) == "2 rounds done (max 2)"
    assert AllOf([LabelBudget(100), MaxRounds(2)]).reason(h) is None
    assert AllOf([LabelBudget(50), MaxRounds(2)]).reason(h)


def test_plateau_of_a_loss_waits_while_it_falls():
    from curate.stopping import History, Plateau, RoundRecord

    falling = History([RoundRecord(r, 10 * r, 0.0, loss, None) for r, loss in enumerate([2.0, 1.5, 1.2, 1.0])])
    assert Plateau(2, 0.05, higher_is_better=False).reason(falling) is None
    assert Plateau(2, 0.05).reason(falling) is not None  # read as accuracy, a falling curve "plateaued"
    flat = History([RoundRecord(r, 10 * r, 0.0, loss, None) for r, loss in enumerate([2.0, 1.5, 1.49, 1.495])])
    assert Plateau(2, 0.05, higher_is_better=False).reason(flat) is not None
