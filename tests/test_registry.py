"""The one strategy registry: unique names, needs read by the machine, refusals that name what works."""

from __future__ import annotations

import pytest

from curate.acquire.registry import REGISTRY, StrategyRegistry, StrategySpec, check_needs
from curate.errors import ConfigError


def test_every_name_means_one_thing_and_every_need_is_known():
    known = {"probs", "responses", "index", "backend", "teacher", "pool"}
    for spec in REGISTRY:
        assert all(n in known or n.startswith("arrays:") for n in spec.needs), spec
        assert spec.summary
    with pytest.raises(ConfigError, match="registered by core already"):
        REGISTRY.add(StrategySpec("margin", lambda ctx: None, frozenset(), "x", owner="someone"))


def test_needs_are_checked_against_what_a_run_has():
    spec = REGISTRY.get("badge")
    check_needs(spec, {"probs", "index", "pool"})
    with pytest.raises(ConfigError, match=r"needs the shared embedding index, class probabilities from the learner, "
                                          r"which x does not have. Strategies x can use: random, answer_entropy"):
        check_needs(spec, {"responses", "pool"}, who="x")
    assert set(REGISTRY.usable({"pool"})) == {"random"}


def test_aliases_resolve_and_unknown_names_suggest():
    registry = StrategyRegistry([StrategySpec("answer_entropy", lambda ctx: "built", frozenset({"responses"}))])
    assert registry.build("entropy", aliases={"entropy": "answer_entropy"}, available={"responses"}) == "built"
    with pytest.raises(ConfigError, match="Did you mean 'answer_entropy'"):
        registry.get("answer_entropi")


def test_installed_paradigms_register_their_strategies_and_runners():
    from curate.bench.registry import runners
    from curate.plugins import get_paradigm, installed

    found = installed()
    assert {"classify", "icl", "sft", "prefs", "distill"} <= set(found)
    assert {"reward_margin", "entropy_certainty", "probe", "probe_kcenter"} <= set(REGISTRY.names())
    assert get_paradigm("classification").name == "classify" and REGISTRY.get("probe").owner == "distill"
    assert {"classification", "icl", "sft"} <= set(runners())
