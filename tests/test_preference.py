"""The preference paradigm: pairs, strategies (with curate's acquisition contract), the pairwise
judge (position swap, ties), learners (reward model, DPO, TRL reward model), a full loop round
with a DPO step, export with provenance, recipes and the ``curate prefs`` CLI.

Tiny models come from the ``tiny_lm_dir`` fixture; scripted fakes stand only at the backend and
embedder seams. The real SmolLM2 runs only in the test marked ``real``.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
from curate.paradigms.preference import (
    LABELS,
    STRATEGIES,
    PairwiseJudge,
    RewardModelLearner,
    bt_probs,
    chosen_rejected,
    dpo_margin,
    load_pair_pool,
    make_preference_strategy,
    pair_pool,
    pairs_from_preferences,
    preference_dataset,
    read_alpaca_eval,
    read_hh_rlhf,
    split_dialogue,
)

from curate.acquire import PoolState
from curate.annotate.base import GoldAnnotator
from curate.backends.base import Usage, log_softmax_rows
from curate.errors import ConfigError, DataError
from curate.index import EmbeddingIndex

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
WORDS = ["the cat sat on the mat", "the film was wonderful and moving", "a great phone with a long battery life",
         "terrible plot and a boring ending", "what is the capital of france? paris.", "numbers 0 1 2 3 4 5",
         "the food was cold and the service rude", "positive negative neutral yes no maybe"]


def preference_rows(n=12):
    return [{"prompt": WORDS[i % 8], "chosen": WORDS[(i + 1) % 8], "rejected": WORDS[(i + 3) % 8]} for i in range(n)]


# ---------------------------------------------------------------------------------------------- pairs


def test_pairs_put_the_chosen_response_at_a_seeded_random_position():
    rows = preference_rows(40)
    pool = pairs_from_preferences(rows, seed=3)
    labels = pool.column("label")
    assert set(labels) == {"a", "b"} and 10 < labels.count("a") < 30
    for row, label, a, b in zip(rows, labels, pool.column("response_a"), pool.column("response_b"), strict=True):
        assert (a, b) == ((row["chosen"], row["rejected"]) if label == "a" else (row["rejected"], row["chosen"]))
    assert pairs_from_preferences(rows, seed=3).column("label") == labels
    assert pairs_from_preferences(rows, seed=4).column("label") != labels
    assert "Response A:" in pool.texts([0])[0] and pool.column("prompt_id")[5] == 5


def test_ties_and_chosen_rejected():
    rows = preference_rows(4)
    rows[1]["tie"] = True
    pool = pairs_from_preferences(rows, seed=0)
    assert pool.column("label")[1] == "tie"
    out = chosen_rejected(pool, [0, 1, 2], [pool.column("label")[i] for i in range(3)])
    assert [r["id"] for r in out] == [0, 2] and out[0]["chosen"] == rows[0]["chosen"]
    with pytest.raises(ConfigError, match="takes pair labels a, b, tie"):
        chosen_rejected(pool, [0], ["A"])
    with pytest.raises(DataError, match="missing response_b"):
        pair_pool([{"prompt": "p", "response_a": "x"}])


def test_readers_split_dialogues_and_alpaca_preferences(tmp_path):
    assert split_dialogue("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like so") == (
        "Human: hi\n\nAssistant: hello\n\nHuman: how?", "like so")
    hh = tmp_path / "hh.jsonl.gz"
    with gzip.open(hh, "wt") as f:
        f.write(json.dumps({"chosen": "\n\nHuman: q\n\nAssistant: good", "rejected": "\n\nHuman: q\n\nAssistant: bad"}) + "\n")
        f.write(json.dumps({"chosen": "\n\nHuman: x\n\nAssistant: a", "rejected": "\n\nHuman: y\n\nAssistant: b"}) + "\n")
    rows = read_hh_rlhf(hh)
    # The prompt keeps its turn markers: prompt + reply is the transcript, as TRL's trainers join them.
    assert len(rows) == 1 and rows[0]["prompt"] == "\n\nHuman: q\n\nAssistant:" and rows[0]["chosen"] == " good"
    alpaca = tmp_path / "ann.json"
    alpaca.write_text(json.dumps([{"instruction": "i", "output_1": "one", "output_2": "two", "preference": p}
                                  for p in ("1", "2", "0", 1.5, 2.0)]))
    rows = read_alpaca_eval(alpaca)
    assert [r["chosen"] for r in rows] == ["one", "two", "one", "one", "two"]
    assert [r["tie"] for r in rows] == [False, False, True, True, False]
    pool = load_pair_pool(alpaca, "alpaca_eval", offset=1, limit=2)
    assert len(pool) == 2 and pool.column("label")[1] == "tie"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "response_a": "x", "response_b": "y"}) + "\n")
    assert "label" not in load_pair_pool(pairs).columns


@pytest.mark.data
def test_real_preference_data_reads(shared_data):
    hh = read_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base" / "test.jsonl.gz")
    assert len(hh) > 2290 and all(r["chosen"] != r["rejected"] for r in hh)
    alpaca = read_alpaca_eval(shared_data / "alpaca_eval/results/alpaca-7b/alpaca_eval_gpt4/annotations.json")
    assert len(alpaca) == 805 and sum(r["tie"] for r in alpaca) == 16


# ---------------------------------------------------------------------------------------------- strategies

N = 60


def make_state(labeled=(0, 5, 9)) -> PoolState:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8))[rng.integers(0, 4, N)] + 0.3 * rng.normal(size=(N, 8))
    committee = rng.dirichlet(np.ones(2), size=(5, N))
    return PoolState(size=N, labeled=np.array(labeled), index=EmbeddingIndex.from_vectors(x, kind="flat"),
                     arrays={"margin": rng.normal(size=N), "committee_probs": committee,
                             "prompt_entropy": rng.random(N) * 5})


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request):
    return make_preference_strategy(request.param)


def test_contract_budget_unique_unlabelled_deterministic(strategy):
    state = make_state()
    sel = strategy.select(state, 10, rng=np.random.default_rng(1))
    assert len(sel.ids) == 10 and sel.ids.dtype == np.int64 and len(np.unique(sel.ids)) == 10
    assert not np.isin(sel.ids, state.labeled).any() and np.isin(sel.ids, state.candidates).all()
    assert sel.scores is None or len(sel.scores) == 10
    again = strategy.select(state, 10, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(sel.ids, again.ids)


def test_contract_state_untouched_and_narrowed(strategy):
    state = make_state()
    before = copy.deepcopy((state.labeled, state.candidates, dict(state.arrays), state.index.vectors.copy()))
    strategy.select(state, 5, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(before[0], state.labeled)
    np.testing.assert_array_equal(before[1], state.candidates)
    for key, value in before[2].items():
        np.testing.assert_array_equal(value, state.arrays[key])
    np.testing.assert_array_equal(before[3], state.index.vectors)
    narrowed = state.narrowed(state.candidates[::3])
    assert np.isin(strategy.select(narrowed, 4, rng=np.random.default_rng(0)).ids, state.candidates[::3]).all()


def test_contract_errors_and_zero_budget(strategy):
    with pytest.raises(ConfigError, match="No unlabelled candidates"):
        strategy.select(make_state(labeled=range(N)), 1, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="only 57 unlabelled candidates are left"):
        strategy.select(make_state(), 58, rng=np.random.default_rng(0))
    assert len(strategy.select(make_state(), 0, rng=np.random.default_rng(0)).ids) == 0


def test_strategies_pick_what_they_promise():
    margin = np.array([3.0, -0.1, 0.5, -2.0, 0.05, 1.0])
    committee = np.stack([bt_probs(np.array([0, 0, 0, 0, 0, 0.0])), bt_probs(np.array([0, 4, 0, -3, 0, 1.0]))])
    entropy = np.array([9.0, 1.0, 8.0, 7.0, 0.5, 2.0])
    state = PoolState(size=6, arrays={"margin": margin, "committee_probs": committee, "prompt_entropy": entropy})
    rng = np.random.default_rng(0)
    assert make_preference_strategy("margin").select(state, 2, rng=rng).ids.tolist() == [4, 1]
    assert make_preference_strategy("disagreement").select(state, 2, rng=rng).ids.tolist() == [1, 3]
    # Shortlist the 3 highest-entropy prompts (0, 2, 3), then the most certain of them (|margin|).
    sel = make_preference_strategy("entropy_certainty", shortlist=1.5).select(state, 2, rng=rng)
    assert sel.ids.tolist() == [0, 3] and sel.info["shortlist"] == 3
    with pytest.raises(ConfigError, match="needs PoolState.arrays\\['margin'\\]"):
        make_preference_strategy("margin").select(PoolState(size=6), 1, rng=rng)
    with pytest.raises(ConfigError, match="Did you mean 'margin'"):
        make_preference_strategy("margn")


def test_dpo_margin_and_bradley_terry():
    m = dpo_margin(np.array([-10.0, -5.0]), np.array([-12.0, -4.0]), np.array([-11.0, -5.0]), np.array([-11.0, -5.0]),
                   beta=0.5)
    np.testing.assert_allclose(m, [0.5 * (1 - (-1)), 0.5 * (0 - 1)])
    p = bt_probs(np.array([0.0, 50.0, -50.0]))
    np.testing.assert_allclose(p[:, 0], [0.5, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(p.sum(1), 1.0)
    with pytest.raises(ConfigError, match="beta"):
        dpo_margin(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), beta=0)


# ---------------------------------------------------------------------------------------------- judge


class ScriptedJudgeLM:
    """A backend fake: the log-odds of "A" over "B" are quality(first shown) − quality(second) + bias."""

    name = "scripted"

    def __init__(self, quality: dict[str, float], bias: float) -> None:
        self.quality = quality
        self.bias = bias
        self.usage = Usage()
        self.seen: list[str] = []

    def chat_prompt(self, messages, *, add_generation_prompt=True):
        return "<user>" + messages[0]["content"] + "<assistant>"

    def option_logprobs(self, prompts, options, *, normalize=True):
        assert list(options) == ["A", "B"]
        rows = []
        for p in prompts:
            first, second = re.search(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\nWhich", p, re.S).groups()
            self.seen.append(first)
            rows.append([self.quality.get(first, 0.0) + self.bias, self.quality.get(second, 0.0)])
            self.usage.add(len(p) // 4, 0, kind="options")
        return log_softmax_rows(np.array(rows))


def judge_pool():
    return pair_pool([{"prompt": "q1", "response_a": "good", "response_b": "bad", "label": "a"},
                      {"prompt": "q2", "response_a": "bad", "response_b": "good", "label": "b"},
                      {"prompt": "q3", "response_a": "fine", "response_b": "fine too", "label": "tie"}])


def test_judge_asks_both_orders_and_cancels_position_bias():
    lm = ScriptedJudgeLM({"good": 1.0, "bad": -1.0, "fine": 0.05, "fine too": 0.0}, bias=3.0)
    judge = PairwiseJudge(lm, tie_band=0.05)
    pool = judge_pool()
    v = judge.judge(pool.column("prompt"), pool.column("response_a"), pool.column("response_b"))
    # Every pair is shown twice, once with each response first.
    assert lm.seen == ["good", "bad", "fine", "bad", "good", "fine too"]
    np.testing.assert_allclose(v.logodds_ab, [2 + 3, -2 + 3, 0.05 + 3])
    np.testing.assert_allclose(v.logodds_ba, [2 - 3, -2 - 3, 0.05 - 3])
    np.testing.assert_allclose(v.logodds, [2.0, -2.0, 0.05])      # the bias of 3 is gone exactly
    np.testing.assert_allclose(v.position_bias, 3.0)
    assert v.order_labels("ab") == ["a", "a", "a"]                    # one order alone follows the position
    assert v.order_labels("ba") == ["b", "b", "b"]
    assert v.labels == ["a", "b", "tie"]                              # p(a) = 0.512 lies in the tie band
    np.testing.assert_allclose(v.confidence, [1 / (1 + np.exp(-2))] * 2 + [1 / (1 + np.exp(-0.05))])
    assert sum(v.input_tokens) == lm.usage.input_tokens and "orders disagree" in v.notes[0]


def test_judge_tie_rules():
    lm = ScriptedJudgeLM({}, bias=0.0)
    ab, ba = np.array([2.0, 0.1, 1.0, 0.0]), np.array([1.0, 0.1, -0.5, 0.0])
    labels, conf = PairwiseJudge(lm, tie_band=0.05).decide(ab, ba)
    assert labels == ["a", "tie", "a", "tie"]                         # p = .82, .525, .56, .5
    assert PairwiseJudge(lm, tie_band=0.0).decide(ab, ba)[0] == ["a", "a", "a", "tie"]
    assert PairwiseJudge(lm, tie_band=0.0, consistent=True).decide(ab, ba)[0] == ["a", "a", "tie", "tie"]
    assert PairwiseJudge(lm, ties=False).decide(ab, ba)[0] == ["a", "a", "a", "a"]
    assert conf.min() >= 0.5 and conf[3] == 0.5                       # a tie is never a confident label
    with pytest.raises(ConfigError, match="tie_band"):
        PairwiseJudge(lm, tie_band=0.7)


def test_judge_annotates_bills_tokens_and_routes_unsure_pairs_to_people():
    from curate.annotate.hybrid import HybridAnnotator
    from curate.budget import Prices

    lm = ScriptedJudgeLM({"good": 1.0, "bad": -1.0}, bias=2.0)
    judge = PairwiseJudge(lm, max_response_tokens=1)
    pool = judge_pool()
    anns = list(judge.annotate(pool, np.array([0, 1, 2])))
    assert [a.label for a in anns] == ["a", "b", "tie"] and all(a.source == "llm" for a in anns)
    assert sum(a.input_tokens for a in anns) == lm.usage.input_tokens
    assert "cut b to fit" in anns[2].note  # "fine too" is over 1 token of 4 characters
    assert judge.worst_case_micros(Prices(llm_input_per_million=1e6)) >= max(a.input_tokens for a in anns)
    hybrid = HybridAnnotator(judge, GoldAnnotator("label"), threshold=0.8)
    out = list(hybrid.annotate(pool, np.array([0, 1, 2])))
    final = {a.item_id: a for a in out if a.label is not None}
    assert final[0].source == "llm" and final[2].source == "human" and final[2].label == "tie"


def test_judge_runs_on_a_real_tiny_backend(tiny_backend):
    pool = judge_pool()
    judge = PairwiseJudge(tiny_backend, max_prompt_tokens=8, max_response_tokens=8, batch_size=2)
    v = judge.judge(pool.column("prompt"), pool.column("response_a"), pool.column("response_b"))
    assert len(v.labels) == 3 and set(v.labels) <= set(LABELS) and np.isfinite(v.logodds).all()
    assert sum(v.input_tokens) == tiny_backend.usage.input_tokens > 0


# ---------------------------------------------------------------------------------------------- reward model


def synthetic_pairs(n=200, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim)
    fa, fb = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
    labels = ["a" if v > 0 else "b" for v in (fa - fb) @ w]
    return fa, fb, labels


def test_reward_model_learns_is_symmetric_and_has_an_ensemble():
    fa, fb, labels = synthetic_pairs()
    learner = RewardModelLearner(fa, fb, members=4, C=10.0)
    np.testing.assert_allclose(learner.predict_proba(np.arange(3)), 0.5)   # before any label
    ids = np.arange(100)
    learner.fit(ids, labels[:100])
    pred = np.where(learner.predict_proba(np.arange(100, 200))[:, 0] > 0.5, "a", "b")
    assert np.mean(pred == np.array(labels[100:])) > 0.9
    swapped = RewardModelLearner(fb, fa, members=0, C=10.0)
    swapped.fit(ids, ["b" if v == "a" else "a" for v in labels[:100]])
    np.testing.assert_allclose(swapped.margin(), -learner.margin(), atol=1e-6)
    arrays = learner.arrays()
    assert arrays["committee_probs"].shape == (4, 200, 2) and arrays["margin"].shape == (200,)
    again = RewardModelLearner(fa, fb, members=4, C=10.0)
    again.fit(ids, labels[:100])
    np.testing.assert_allclose(again.committee_probs(), learner.committee_probs())


def test_reward_model_takes_ties_as_one_half():
    fa, fb, _ = synthetic_pairs(20)
    learner = RewardModelLearner(fa, fb, members=0)
    learner.fit(np.arange(20), ["tie"] * 20)
    np.testing.assert_allclose(learner.margin(), 0.0, atol=1e-6)
    with pytest.raises(ConfigError, match="members"):
        RewardModelLearner(fa, fb, members=1)


# ---------------------------------------------------------------------------------------------- DPO


def direct_logprob(model_dir: Path, prompt: str, completion: str) -> float:
    """Sum of log p(completion tokens | prompt) computed straight from the model's logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([p + c])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[len(p) + k - 1, t] for k, t in enumerate(c)))


DPO_TRAIN = {"learning_rate": 5e-3, "per_device_train_batch_size": 4}
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def test_a_full_loop_round_with_dpo_steps_margins_and_export(tiny_lm_dir, tmp_path):
    from curate.paradigms.preference.dpo import DPOLearner
    from curate.paradigms.preference.export import journal_provenance

    from curate.budget import Ledger, Prices
    from curate.loop import ActiveLoop
    from curate.stopping import MaxRounds

    pool = pairs_from_preferences(preference_rows(12), seed=1)
    run = tmp_path / "run"

    def make_loop():
        learner = DPOLearner(pool, str(tiny_lm_dir), run_dir=run, beta=0.5, lora=LORA, train=DPO_TRAIN)
        loop = ActiveLoop(pool, strategy=make_preference_strategy("margin"), annotator=GoldAnnotator("label"),
                          learner=learner, run_dir=run, init_size=4, batch_size=4, stopping=MaxRounds(2),
                          ledger=Ledger(Prices(human_per_label=0.5)), extra_arrays=lambda m: m.arrays(), seed=0)
        return loop, learner

    loop, learner = make_loop()
    result = loop.run()
    assert result.stop_reason == "2 rounds done (max 2)" and len(result.labels) == 8
    assert [h["pairs"] for h in learner.history_] == [4, 4] and learner.rounds_ == 2
    assert Path(learner.policy_) == run / "policy" / "round-2" and not (run / "policy" / "round-1").exists()
    assert json.loads((run / "policy" / "state.json").read_text())["trained_ids"] == sorted(result.labels)

    # The margin equals a direct computation from the policy's and the reference's log-probs.
    margins = learner.margin()
    rows = pool.dataset
    for i in (0, 5, 11):
        prompt = learner.render(rows[i]["prompt"])
        diff = [direct_logprob(Path(learner.policy_), prompt, rows[i][k]) - direct_logprob(tiny_lm_dir, prompt, rows[i][k])
                for k in ("response_a", "response_b")]
        assert margins[i] == pytest.approx(0.5 * (diff[0] - diff[1]), abs=1e-6)
    assert np.abs(margins).max() > 1e-4
    np.testing.assert_allclose(learner.predict_proba(np.arange(12))[:, 0], 1 / (1 + np.exp(-margins)))

    # The round's pairs out as TRL preference data with provenance.
    labels, info = journal_provenance(run)
    data = preference_dataset(pool, labels, provenance=info, margins=margins)
    assert data.column_names[:3] == ["prompt", "chosen", "rejected"] and len(data) == 8
    row = data[0]
    assert row["curate_judge"] == "human" and row["curate_confidence"] == 1.0 and row["curate_round"] in (0, 1)
    i = row["curate_pair_id"]
    assert row["curate_margin"] == pytest.approx(margins[i] if labels[i] == "a" else -margins[i])
    assert "margin" not in data.column_names  # TRL's RewardTrainer would put it into its loss

    # A resumed run adopts the saved policy and trains nothing twice.
    loop, learner = make_loop()
    assert loop.run().stop_reason == "2 rounds done (max 2)"
    assert learner.policy_ == str(run / "policy" / "round-2") and learner.rounds_ == 2


def test_dpo_learner_rejects_bad_settings(tiny_lm_dir, tmp_path):
    from curate.paradigms.preference.dpo import DPOLearner

    pool = pairs_from_preferences(preference_rows(4))
    with pytest.raises(ConfigError, match="mode"):
        DPOLearner(pool, str(tiny_lm_dir), run_dir=tmp_path, mode="online")
    learner = DPOLearner(pool, str(tiny_lm_dir), run_dir=tmp_path, train={"learning_rte": 1e-3})
    with pytest.raises(ConfigError, match="Did you mean 'learning_rate'"):
        learner.fit(np.arange(4), pool.column("label"))
    learner = DPOLearner(pool, str(tiny_lm_dir), run_dir=tmp_path, beta=0.1, train={"beta": 0.3})
    with pytest.raises(ConfigError, match="set it on the learner"):
        learner.fit(np.arange(4), pool.column("label"))
    np.testing.assert_array_equal(learner.margin(), 0.0)  # untrained: the policy is the reference


def test_trl_reward_model_round(tiny_lm_dir, tmp_path):
    from curate.paradigms.preference.trl_reward import TRLRewardLearner

    pool = pairs_from_preferences(preference_rows(8), seed=2)
    learner = TRLRewardLearner(pool, str(tiny_lm_dir), run_dir=tmp_path, train={"learning_rate": 1e-3})
    np.testing.assert_array_equal(learner.margin(), 0.0)
    learner.fit(np.arange(8), pool.column("label"))
    assert (tmp_path / "reward" / "round-1" / "config.json").exists()
    margin = learner.margin()
    assert margin.shape == (8,) and np.abs(margin).max() > 0
    np.testing.assert_allclose(learner.predict_proba()[:, 0], 1 / (1 + np.exp(-margin)))


def test_candidates_sampled_from_the_policy(tiny_backend):
    from curate.paradigms.preference.candidates import sample_pairs

    pool = sample_pairs(tiny_backend, ["the cat sat", "the film was"], n=3, max_new_tokens=6, seed=0, pairing="all")
    assert 1 <= len(pool) <= 6 and set(pool.column("prompt_id")) <= {0, 1}
    assert all(a != b for a, b in zip(pool.column("response_a"), pool.column("response_b"), strict=True))
    assert "label" not in pool.columns and np.isfinite(pool.column("entropy_a")).all()
    with pytest.raises(ConfigError, match="temperature > 0"):
        sample_pairs(tiny_backend, ["x"], temperature=0)


# ---------------------------------------------------------------------------------------------- recipes and CLI


class HashEmbedder:
    """An embedder fake: bag-of-words hashed into 16 dimensions, unit length."""

    name = "hash16"
    dim = 16

    def encode(self, texts):
        out = np.zeros((len(texts), 16), dtype=np.float32)
        for r, text in enumerate(texts):
            for word in text.split():
                out[r, sum(map(ord, word)) % 16] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("prefs-*.yaml")))
def test_recipes_parse(name):
    from curate.paradigms.preference.config import load_prefs_config

    config = load_prefs_config(RECIPES / name)
    assert config.pool.path and config.learner.kind in ("reward_model", "dpo", "trl_reward")
    with pytest.raises(ConfigError, match="Did you mean 'acquire.batch_size'"):
        load_prefs_config(RECIPES / name, ["acquire.batch_sise=3"])


def test_iterative_dpo_recipe_samples_judges_and_trains(tmp_path, monkeypatch, tiny_lm_dir):
    """The prefs-dpo pipeline on the tiny model: candidates sampled from the policy, labelled by the
    judge, two LoRA DPO rounds, the labelled pairs exported with the judge's provenance."""
    from curate.paradigms.preference import PARADIGM
    from curate.paradigms.preference.config import load_prefs_config

    import curate.embed
    from curate.runs import RunFolder, execute

    monkeypatch.setattr(curate.embed, "load_embedder", lambda *a, **k: HashEmbedder())
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": w}) + "\n" for w in WORDS))
    config = load_prefs_config(data={
        "pool": {"path": str(prompts), "format": "prompts"},
        "candidates": {"n": 4, "max_new_tokens": 6, "pairing": "adjacent"},
        "acquire": {"init_size": 3, "strategy": "entropy_certainty", "batch_size": 3},
        "annotator": {"kind": "judge"}, "judge": {"tie_band": 0.0, "max_prompt_tokens": 16, "max_response_tokens": 8},
        "learner": {"kind": "dpo", "lora": LORA, "train": DPO_TRAIN},
        "lm": {"model": str(tiny_lm_dir), "device": "cpu"}, "prices": {"llm_input_per_million": 1.0},
        "stop": {"rounds": 2}})
    outcome = execute(PARADIGM, config, RunFolder(tmp_path / "run"))
    result, path, worst = outcome.result, Path(outcome.summary["export"]), outcome.estimate.total_worst_case
    assert result.stop_reason == "2 rounds done (max 2)" and worst > 0
    assert (tmp_path / "run" / "pairs.jsonl").exists() and (tmp_path / "run" / "policy" / "state.json").exists()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows and all(r["curate_judge"] == "llm" and 0.5 <= r["curate_confidence"] <= 1 for r in rows)
    assert result.ledger.spent > 0


def test_cli_run_resume_export_and_judge(tmp_path, monkeypatch, capsys, tiny_lm_dir):
    import curate.embed
    from curate.cli import main

    monkeypatch.setattr(curate.embed, "load_embedder", lambda *a, **k: HashEmbedder())
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(40)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"pool: {{path: {prefs}, limit: 30}}\neval: {{path: {prefs}, offset: 30}}\n"
                      "acquire: {init_size: 6, strategy: disagreement, batch_size: 6}\n"
                      "learner: {kind: reward_model, members: 3}\nprices: {human_per_label: 0.5}\nstop: {rounds: 3}\n")
    out = tmp_path / "run"
    assert main(["prefs", "run", str(recipe), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Stopped: 3 rounds done" in text and "at most 9.0000 USD" in text
    exported = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert len(exported) == 18 and {"prompt", "chosen", "rejected", "curate_judge", "curate_confidence", "curate_round",
                                    "curate_margin"} <= set(exported[0])
    assert (out / "curve.csv").exists() and "paradigm: prefs" in (out / "config.yaml").read_text()
    assert main(["prefs", "resume", str(out)]) == 0
    assert "Stopped: 3 rounds done" in capsys.readouterr().out
    assert main(["prefs", "export", str(out), "--out", str(tmp_path / "again.jsonl")]) == 0
    assert len((tmp_path / "again.jsonl").read_text().splitlines()) == 18
    # The eval pairs (gold, ties left out) as the test split, and a dataset card beside both.
    test = [json.loads(line) for line in (tmp_path / "again.test.jsonl").read_text().splitlines()]
    assert test and {r["curate_judge"] for r in test} == {"gold"} and {"prompt", "chosen", "rejected"} <= set(test[0])
    card = (tmp_path / "README.md").read_text()
    assert "paradigm: prefs" in card and "pairs: 18" in card and "path: again.test.jsonl" in card
    assert (out / "README.md").exists() and (out / "preferences.test.jsonl").exists()
    assert main(["--quiet", "prefs", "run", str(recipe), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err

    judged = tmp_path / "judged.jsonl"
    assert main(["--quiet", "prefs", "judge", str(prefs), "--limit", "4", "--lm", str(tiny_lm_dir), "--device", "cpu",
                 "--max-prompt-tokens", "8", "--max-response-tokens", "8", "--out", str(judged)]) == 0
    text = capsys.readouterr().out
    assert "debiased" in text and "order a,b only" in text
    row = json.loads(judged.read_text().splitlines()[0])
    assert row["judge_label"] in LABELS and {"logodds_ab", "logodds_ba", "confidence"} <= set(row)


def test_cli_select_and_clear_errors(tmp_path, capsys, tiny_lm_dir):
    from curate.cli import main

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(10)))
    picks = tmp_path / "picks.jsonl"
    assert main(["--quiet", "prefs", "select", str(prefs), "--strategy", "margin", "--budget", "3",
                 "--policy", str(tiny_lm_dir), "--reference", str(tiny_lm_dir), "--out", str(picks)],
) == 0
    rows = [json.loads(line) for line in picks.read_text().splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3] and all(r["score"] == 0.0 for r in rows)  # policy == reference
    assert main(["--quiet", "prefs", "select", str(prefs), "--strategy", "disagreement", "--budget", "3",
                 "--out", str(picks)]) == 2
    assert "committee_probs" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "answer": "x"}) + "\n")
    assert main(["--quiet", "prefs", "judge", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "expected columns prompt/chosen/rejected" in capsys.readouterr().err


@pytest.mark.real
def test_smollm2_judge_both_orders_on_two_pairs():
    from curate.backends import load_backend

    lm = load_backend("hf", device="cpu")
    pool = pair_pool([{"prompt": "What is the capital of France?", "response_a": "Paris.", "response_b": "I like cheese."},
                      {"prompt": "How do I boil an egg?", "response_a": "No.",
                       "response_b": "Put it in boiling water for about eight minutes."}])
    v = PairwiseJudge(lm, max_prompt_tokens=32, max_response_tokens=32).judge(
        pool.column("prompt"), pool.column("response_a"), pool.column("response_b"))
    np.testing.assert_allclose(v.logodds, (v.logodds_ab + v.logodds_ba) / 2)
    assert np.isfinite(v.position_bias).all() and len(v.input_tokens) == 2 and min(v.input_tokens) > 50
