"""Labels that are responses: the SFT learner round (a real TRL step on a tiny model), its
self-training rule and cap, the uncertainty scorer, the teachers' billing and the export."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from curate.acquire.base import PoolState
from curate.acquire.strategies import TopK
from curate.budget import Ledger, Prices
from curate.errors import ConfigError, DataError
from curate.loop import ActiveLoop
from curate.pool import load_pool
from curate.responses import (
    AnswerUncertainty,
    RecordedTeacher,
    ResponseLearner,
    SelfTraining,
    TeacherAnnotator,
    response_dataset,
    semantic_dispersion,
)
from curate.stopping import MaxRounds

PROMPTS = ["the cat sat on", "numbers 1 2 3", "what is the capital of france?", "the film was",
           "the food was cold", "a great phone with", "terrible plot and", "positive or negative?",
           "the service was rude", "count 4 5 6", "the mat was", "a long battery life"]
ANSWERS = ["the mat", "4 5 6", "paris.", "wonderful and moving", "and the service rude", "a long battery life",
           "a boring ending", "positive", "and the food cold", "7 8 9", "on the cat", "a great phone"]


def prompt_pool(n=12):
    return load_pool([{"prompt": p, "response": a} for p, a in zip(PROMPTS[:n], ANSWERS[:n], strict=True)])


TRAIN = {"max_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-3}


def test_self_training_cap_is_a_share_of_the_round():
    rule = SelfTraining(threshold=1.0, max_fraction=0.25)
    assert [rule.cap(n) for n in (0, 1, 3, 4, 12)] == [0, 0, 1, 1, 4]
    assert SelfTraining(threshold=1.0, max_fraction=0.5).cap(4) == 4
    with pytest.raises(ConfigError, match="max_fraction"):
        SelfTraining(threshold=1.0, max_fraction=1.0)
    with pytest.raises(ConfigError, match="measure"):
        SelfTraining(threshold=1.0, measure="vibes")


def test_pseudo_labels_go_to_the_most_confident_prompts_under_the_threshold_up_to_the_cap(tiny_lm_dir, tmp_path):
    from curate.responses import Answer

    pool = prompt_pool()
    rule = SelfTraining(threshold=0.75, max_fraction=0.5, candidates=12)
    learner = ResponseLearner(pool, tiny_lm_dir, run_dir=tmp_path, self_training=rule)
    # Scripted answers at the seam: id i is answered with entropy i/10; id 5 ran out of tokens.
    learner.answers = lambda ids: [Answer(f"a{i}", i / 10, 1.0, 3, finished=i != 5) for i in ids]
    picked = learner._pseudo_label({0, 1, 2, 3}, bought=4, round_no=1)
    assert picked == [4, 6, 7]  # under 0.75, finished, not labelled; cap 4 not reached
    assert learner.pseudo_[4] == {"response": "a4", "round": 0, "uncertainty": 0.4}
    learner.pseudo_.clear()
    assert learner._pseudo_label({0, 1, 2, 3}, bought=2, round_no=1) == [4, 6]  # cap 2: the two surest
    assert learner._pseudo_label({0, 1, 2, 3}, bought=1, round_no=2) == [7]  # already pseudo-labelled ones stay


def test_semantic_dispersion():
    same = np.array([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    assert semantic_dispersion(same) == pytest.approx(0.0)
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert semantic_dispersion(opposite) == pytest.approx(2.0)
    orthogonal = np.eye(3)
    assert semantic_dispersion(orthogonal) == pytest.approx(1.0)


def test_a_full_round_with_uncertainty_self_training_provenance_and_export(tiny_lm_dir, tmp_path):
    pool = prompt_pool()
    learner = ResponseLearner(pool, tiny_lm_dir, run_dir=tmp_path / "run", chat=True, max_new_tokens=6,
                              lora={"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}, train=TRAIN,
                              self_training=SelfTraining(threshold=1e9, max_fraction=0.5, candidates=6,
                                                        require_finished=False),  # a random tiny model never stops
                              max_length=64)
    # A random tiny model answers with blank lines, which self-training rightly never keeps; give its
    # real answers (and their real uncertainties) visible text so the pseudo rows can be followed.
    real_answers = learner.answers
    learner.answers = lambda ids: [replace(a, text=f"answer {a.tokens} {i}") for i, a in zip(ids, real_answers(ids), strict=True)]
    scorer = AnswerUncertainty(learner, "entropy", sample=8)
    loop = ActiveLoop(pool, strategy=TopK(scorer), annotator=_gold(), learner=learner, run_dir=tmp_path / "run",
                      init_size=2, batch_size=2, stopping=MaxRounds(2), seed=0)
    result = loop.run()
    assert len(result.labels) == 4
    # Round 0 bought 2 -> up to 2 pseudo rows (max_fraction 0.5); round 1 the same.
    hist = learner.history_
    assert [h["bought"] for h in hist] == [2, 2]
    assert all(h["new_pseudo"] <= 2 for h in hist) and sum(h["new_pseudo"] for h in hist) >= 1
    assert not set(learner.pseudo_) & set(result.labels)  # a bought prompt is never pseudo-labelled
    assert (tmp_path / "run" / "model" / "round-2" / "config.json").exists()
    assert not (tmp_path / "run" / "model" / "round-1").exists()  # only the latest round is kept
    # The uncertainty scorer scored with the round's model and ranked unscored candidates last.
    state = PoolState.of(pool, labeled=np.array(sorted(result.labels)))
    scores = scorer.score(state, state.candidates)
    assert np.isfinite(scores).sum() == min(8, len(state.candidates))

    data = response_dataset(pool, tmp_path / "run", pseudo=learner.records(), format="messages")
    prov = data["provenance"]
    assert prov.count("human") == 4 and prov.count("pseudo") == len(learner.pseudo_)
    assert set(data.column_names) >= {"messages", "id", "provenance", "round", "score"}
    for row in data:
        if row["provenance"] == "human":
            assert row["messages"][1]["content"] == ANSWERS[row["id"]]
    # The export goes into SFTTrainer as it is.
    _train_on(data, tiny_lm_dir, tmp_path / "check")
    pc = response_dataset(pool, tmp_path / "run", pseudo=learner.records(), format="prompt_completion")
    assert {"prompt", "completion"} <= set(pc.column_names)
    _train_on(pc, tiny_lm_dir, tmp_path / "check2")

    # Resuming the finished run trains nothing twice and keeps the pseudo rows.
    again = ResponseLearner(pool, tiny_lm_dir, run_dir=tmp_path / "run", train=TRAIN)
    ids = np.array(sorted(result.labels))
    again.fit(ids, [result.labels[i] for i in ids])
    assert again.rounds_ == 2 and again.pseudo_ == learner.pseudo_


def _gold():
    from curate.annotate.base import GoldAnnotator

    return GoldAnnotator(column="response", source="human")


def _train_on(dataset, model_dir, out):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(out), max_steps=1, per_device_train_batch_size=2, report_to="none",
                     use_cpu=True, save_strategy="no", bf16=False, disable_tqdm=True)
    trainer = SFTTrainer(model=str(model_dir), args=args, train_dataset=dataset.remove_columns(
        [c for c in ("id", "provenance", "round", "score") if c in dataset.column_names]))
    assert trainer.train().training_loss > 0


def test_restart_from_base_trains_everything_from_the_initial_model(tiny_lm_dir, tmp_path):
    pool = prompt_pool()
    learner = ResponseLearner(pool, tiny_lm_dir, run_dir=tmp_path, restart="base", train=TRAIN, max_length=64)
    learner.fit(np.array([0, 1]), ANSWERS[:2])
    learner.fit(np.array([0, 1, 2]), ANSWERS[:3])
    assert [h["bought"] for h in learner.history_] == [2, 3]


def test_learner_rejects_bad_input(tiny_lm_dir, tmp_path):
    pool = prompt_pool()
    with pytest.raises(ConfigError, match="restart"):
        ResponseLearner(pool, tiny_lm_dir, run_dir=tmp_path, restart="never")
    with pytest.raises(ConfigError, match="prompt"):
        ResponseLearner(load_pool([{"text": "a"}]), tiny_lm_dir, run_dir=tmp_path)
    learner = ResponseLearner(pool, tiny_lm_dir, run_dir=tmp_path)
    with pytest.raises(DataError, match=r"items \[1\]"):
        learner.fit(np.array([0, 1]), ["fine", "  "])
    with pytest.raises(ConfigError, match="measure"):
        AnswerUncertainty(learner, "vibes")


def test_response_measures_follow_a_direct_computation(tiny_lm_dir, tmp_path):
    pool = prompt_pool()
    learner = ResponseLearner(pool, tiny_lm_dir, run_dir=tmp_path, chat=False, max_new_tokens=5)
    ids = np.array([0, 3, 5])
    backend = learner.backend()
    loss = AnswerUncertainty(learner, "loss").values(ids)
    direct = backend.perplexity([ANSWERS[i] for i in ids], prompts=[PROMPTS[i] for i in ids])
    np.testing.assert_allclose(loss, direct, rtol=1e-6)
    ifd = AnswerUncertainty(learner, "ifd").values(ids)
    np.testing.assert_allclose(ifd, direct / backend.perplexity([ANSWERS[i] for i in ids]), rtol=1e-6)
    answers = learner.answers(ids)
    gens = backend.generate([PROMPTS[i] for i in ids], max_new_tokens=5, temperature=0.0)
    assert [a.text for a in answers] == [g[0].text for g in gens]
    np.testing.assert_allclose(AnswerUncertainty(learner, "entropy").values(ids),
                               [g[0].logprobs.mean_entropy for g in gens], rtol=1e-6)


def test_teachers_bill_tokens_and_respect_a_money_budget(tiny_lm_dir, tiny_backend, tmp_path):
    from transformers import AutoTokenizer

    pool = prompt_pool()
    tok = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    teacher = RecordedTeacher(tokenizer=tok).prepare(pool)
    anns = list(teacher.annotate(pool, np.array([2, 3])))
    assert anns[0].label == ANSWERS[2] and anns[0].source == "llm"
    assert anns[0].input_tokens == len(tok(PROMPTS[2], add_special_tokens=False)["input_ids"])
    assert anns[1].output_tokens == len(tok(ANSWERS[3], add_special_tokens=False)["input_ids"])
    prices = Prices(llm_input_per_million=1000.0, llm_output_per_million=3000.0)
    worst = teacher.worst_case_micros(prices)
    assert worst == max(prices.micros(input_tokens=i, output_tokens=o) for i, o in teacher._tokens)

    # A budget the loop may not cross: every charge is an exact token price and the total stays under it.
    budget = 0.05
    learner = ResponseLearner(pool, tiny_lm_dir, run_dir=tmp_path / "b", train=TRAIN, max_length=64)
    loop = ActiveLoop(pool, strategy=TopK(AnswerUncertainty(learner, "entropy")), annotator=teacher, learner=learner,
                      run_dir=tmp_path / "b", init_size=3, batch_size=3, stopping=MaxRounds(10),
                      ledger=Ledger(prices, budget=budget), seed=1)
    result = loop.run()
    assert result.ledger.spent <= budget and "money budget" in result.stop_reason
    for c in result.ledger.entries:
        assert c.micros == prices.micros(input_tokens=c.input_tokens, output_tokens=c.output_tokens)

    short = len(tok(PROMPTS[0], add_special_tokens=False)["input_ids"])
    assert len(tok(PROMPTS[2], add_special_tokens=False)["input_ids"]) > short
    live = TeacherAnnotator(tiny_backend, chat=False, max_new_tokens=4, max_input_tokens=short, batch_size=2)
    out = {a.item_id: a for a in live.annotate(pool, np.array([0, 2]))}
    assert out[2].label is None and "not sent" in out[2].note and out[2].input_tokens == 0  # refused, not billed
    assert out[0].label is None or isinstance(out[0].label, str)
    assert out[0].input_tokens == short and 0 < out[0].output_tokens <= 4
    assert live.worst_case_micros(prices) == prices.micros(input_tokens=short, output_tokens=4)


def test_people_write_responses_through_the_queue(tmp_path):
    import json

    from curate.annotate.base import AwaitingHumanLabels
    from curate.annotate.human import HumanQueueAnnotator

    pool = prompt_pool()
    queue = HumanQueueAnnotator(tmp_path / "q", labels=None)
    with pytest.raises(AwaitingHumanLabels):
        list(queue.annotate(pool, np.array([1, 4])))
    batch = next((tmp_path / "q").glob("batch-*.jsonl"))
    rows = [json.loads(line) for line in batch.read_text().splitlines()]
    assert [r["text"] for r in rows] == [PROMPTS[1], PROMPTS[4]]  # the prompt alone, not the pool's answer
    (tmp_path / "q" / "answers.jsonl").write_text(json.dumps({"id": 1, "label": " 4 5 6 7 "}) + "\n"
                                                  + json.dumps({"id": 4, "label": 3}) + "\n")
    with pytest.raises(DataError, match="answers.jsonl:2.*free-text answer must be a string"):
        list(queue.annotate(pool, np.array([1])))
    (tmp_path / "q" / "answers.jsonl").write_text(json.dumps({"id": 1, "label": " 4 5 6 7 "}) + "\n")
    got = list(queue.annotate(pool, np.array([1])))
    assert got[0].label == "4 5 6 7" and got[0].human_labels == 1
    with pytest.raises(ConfigError, match="free-text"):
        HumanQueueAnnotator(tmp_path / "q", labels=None, fmt="labelstudio")


def test_saved_round_state_is_adopted_only_when_it_belongs_to_this_run(tmp_path):
    import json

    from curate.train import read_round_state

    path = tmp_path / "state.json"
    assert read_round_state(path, {1, 2}, model_key="model", what="model", items="items") is None
    path.write_text(json.dumps({"model": str(tmp_path), "trained_ids": [1, 2]}))
    assert read_round_state(path, {1, 2, 3}, model_key="model", what="model", items="items")["trained_ids"] == [1, 2]
    with pytest.raises(ConfigError, match=r"trained on items \[2\] that this run has not labelled"):
        read_round_state(path, {1}, model_key="model", what="model", items="items")
    path.write_text(json.dumps({"policy": "/gone/round-3", "trained_ids": []}))
    with pytest.raises(ConfigError, match="names the policy /gone/round-3, which is gone"):
        read_round_state(path, set(), model_key="policy", what="policy", items="pairs")
    assert read_round_state(path, set(), model_key="policy", what="policy", items="pairs",
                            known=("/gone/round-3",)) is not None  # a starting model named by id, not a folder
