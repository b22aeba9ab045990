"""Uncertainty-driven distillation: the teacher probe (its price and its score against a direct
computation), both training modes on a tiny teacher and student, the money budget, recipes and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from curate.budget import Ledger, Prices
from curate.errors import ConfigError, DataError

QUESTIONS = ["the cat sat on", "numbers 1 2 3", "what is the capital of france?", "the film was",
             "the food was cold", "a great phone with", "terrible plot and", "positive or negative?",
             "the service was rude", "count 4 5 6", "the mat was", "a long battery life"]
ANSWERS = ["the mat <<1+1=2>>\n#### 2", "4 5 6\n#### 6", "paris.\n#### 1,000", "wonderful and moving\n#### 3",
           "and the service rude\n#### 4", "a long battery life\n#### 5", "a boring ending\n#### 7",
           "positive\n#### 8", "and the food cold\n#### 9", "7 8 9\n#### 10", "on the cat\n#### 11",
           "a great phone\n#### 12"]
PRICES = Prices(llm_input_per_million=1000.0, llm_output_per_million=3000.0)
LORA = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}
TRAIN = {"max_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-3}


@pytest.fixture(scope="module")

def gsm8k_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gsm") / "train.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in zip(QUESTIONS, ANSWERS, strict=True)))
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A second tiny LM with the student's tokenizer and other weights."""
    from conftest import build_tiny_model, build_tiny_tokenizer, save_lm

    tok = build_tiny_tokenizer()
    return save_lm(build_tiny_model(len(tok), seed=1), tok, tmp_path_factory.mktemp("tiny-teacher"))


@pytest.fixture(scope="module")
def other_tokenizer_dir(tmp_path_factory):
    """A tiny LM whose tokenizer was trained on other text (another vocabulary)."""
    from conftest import CHATML, build_tiny_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["zebra quartz jumps over lazy fox"] * 50, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    folder = tmp_path_factory.mktemp("tiny-other")
    build_tiny_model(len(fast), seed=2).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def _pool(gsm8k_file):
    from curate.paradigms.distill.data import load_prompt_pool

    return load_prompt_pool(str(gsm8k_file), "gsm8k")


def _learner(pool, model_dir, run_dir, **kw):
    from curate.responses import ResponseLearner

    return ResponseLearner(pool, model_dir, run_dir=run_dir, lora=LORA, train=TRAIN, max_length=64, max_new_tokens=6,
                           **kw)


# ------------------------------------------------------------------ data


def test_gsm8k_rows_lose_calculator_spans_and_keep_the_final_answer(gsm8k_file):
    from curate.paradigms.distill.data import final_answer, read_gsm8k

    rows = read_gsm8k(gsm8k_file)
    assert rows[0] == {"prompt": "the cat sat on", "response": "the mat \n#### 2", "final": "2"}
    assert rows[2]["final"] == "1000"
    assert [r["prompt"] for r in read_gsm8k(gsm8k_file, offset=2, limit=3)] == QUESTIONS[2:5]
    assert final_answer("so she pays 18 + 2.50 = 20.50 dollars") == "20.5"
    assert final_answer("#### -3") == "-3" and final_answer("no number") is None
    assert final_answer("it is 5 then 7.0") == "7"
    bad = gsm8k_file.with_name("bad.jsonl")
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        read_gsm8k(bad)


# ------------------------------------------------------------------ the probe


def test_probe_disagreement_equals_a_direct_computation_and_is_billed_by_the_token(
        gsm8k_file, tiny_lm_dir, teacher_dir, tmp_path):
    import torch
    from curate.paradigms.distill.probe import TeacherProbe
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.backends.hf import TransformersBackend
    from curate.budget import Purse
    from curate.journal import Journal

    pool = _pool(gsm8k_file)
    student = _learner(pool, str(tiny_lm_dir), tmp_path / "s")
    teacher = TransformersBackend(str(teacher_dir), device="cpu")
    k = 4
    probe = TeacherProbe(student, teacher, tokens=k, sample=None, batch_size=3)
    ledger = Ledger(PRICES, budget=1.0)
    journal = Journal(tmp_path / "journal.sqlite")
    purse = Purse(ledger, journal.record_charge, 1, limit_micros=None)
    probe.use_purse(purse)
    ids = np.array([0, 3, 5, 7])
    assert probe.buy(ids) == [0, 3, 5, 7]
    got = probe.values(ids)

    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    t_model = AutoModelForCausalLM.from_pretrained(str(teacher_dir)).eval()
    s_model = AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir)).eval()
    for n, i in enumerate(ids.tolist()):
        messages = [{"role": "user", "content": QUESTIONS[i]}]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = t_model.generate(torch.tensor([p_ids]), max_new_tokens=k, do_sample=False,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        opening = out[0, len(p_ids):].tolist()
        text = tok.decode([t for t in opening if t != tok.eos_token_id])
        assert probe.probes_[i] == text
        c_ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = s_model(torch.tensor([p_ids + c_ids])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        nll = -sum(logp[len(p_ids) + j - 1, c].item() for j, c in enumerate(c_ids)) / len(c_ids)
        assert got[n] == pytest.approx(nll, rel=1e-4, abs=1e-5)
        # Billed: the rendered prompt in, the opening (at most k tokens) out, at the ledger's prices.
        i_paid = [p for p in probe.paid_ if p[0] == i][0]
        assert i_paid[1] == len(p_ids) and 1 <= i_paid[2] <= k
    charges = [c for c in ledger.entries if c.source == "probe"]
    assert len(charges) == 4 and all(c.item_id is None and c.round == 1 for c in charges)
    assert all(c.micros == PRICES.micros(input_tokens=c.input_tokens, output_tokens=c.output_tokens) for c in charges)
    assert [(c.input_tokens, c.output_tokens) for c in journal.charges()] == [p[1:] for p in probe.paid_]
    assert probe.buy(ids) == []  # bought once: the teacher's opening does not change
    # A purse that holds two probes' worth buys two and ranks the rest last.
    tight = TeacherProbe(student, teacher, tokens=k, sample=None)
    cost = max(PRICES.micros(input_tokens=a, output_tokens=k) for _, a, _ in probe.paid_)
    tight.use_purse(Purse(Ledger(PRICES, budget=1.0), journal.record_charge, 2, limit_micros=2 * cost))
    from curate.acquire.base import PoolState

    scores = tight.score(PoolState.of(pool), ids)
    assert np.isfinite(scores).sum() == 2 and tight.purse.spent_micros <= 2 * cost
    journal.close()


def test_recorded_probe_is_the_opening_of_the_recorded_answer(gsm8k_file, tiny_lm_dir, tmp_path):
    from curate.paradigms.distill.probe import TeacherProbe
    from transformers import AutoTokenizer

    from curate.responses import RecordedTeacher

    pool = _pool(gsm8k_file)
    tok = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    recorded = RecordedTeacher(tokenizer=tok).prepare(pool)
    probe = TeacherProbe(_learner(pool, str(tiny_lm_dir), tmp_path), recorded, tokens=3, sample=5,
                         cache=tmp_path / "probes.json")
    probe.buy([4])
    head = tok(pool.column("response")[4], add_special_tokens=False)["input_ids"][:3]
    assert probe.probes_[4] == tok.decode(head)
    assert probe.paid_ == [(4, recorded.tokens(pool, 4)[0], 3)]
    dearest = max(PRICES.micros(input_tokens=recorded.tokens(pool, i)[0],
                                output_tokens=min(3, recorded.tokens(pool, i)[1])) for i in range(len(pool)))
    assert probe.worst_case_micros(PRICES) == 5 * dearest
    again = TeacherProbe(probe.learner, recorded, tokens=3, cache=tmp_path / "probes.json")
    assert again.buy([4]) == [] and again.paid_ == probe.paid_  # the cache survives a restart


def test_bad_probe_parameters(tiny_lm_dir, gsm8k_file, tmp_path):
    from curate.paradigms.distill.probe import TeacherProbe

    learner = _learner(_pool(gsm8k_file), str(tiny_lm_dir), tmp_path)
    with pytest.raises(ConfigError, match="'tokens'"):
        TeacherProbe(learner, object(), tokens=0)
    with pytest.raises(ConfigError, match="generates or a RecordedTeacher"):
        TeacherProbe(learner, object())
    with pytest.raises(ConfigError, match="'sample'"):
        TeacherProbe(learner, object(), sample=0)


# ------------------------------------------------------------------ full rounds and the budget


def _recipe(gsm8k_file, tiny_lm_dir, **over):
    from curate.paradigms.distill.config import load_distill_config

    data = {"pool": {"path": str(gsm8k_file), "format": "gsm8k"},
            "eval": {"path": str(gsm8k_file), "format": "gsm8k", "loss_size": 4, "accuracy_size": 2,
                     "max_new_tokens": 4},
            "student": {"model": str(tiny_lm_dir), "lora": LORA, "train": TRAIN, "max_length": 64,
                        "max_new_tokens": 6},
            "acquire": {"init_size": 2, "batch_size": 2, "strategy": "probe", "probe_tokens": 3, "sample": 4},
            "prices": {"llm_input_per_million": 1000.0, "llm_output_per_million": 3000.0},
            "stop": {"rounds": 2}}
    for key, value in over.items():
        node = data
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return load_distill_config(data=data)


def test_sequence_mode_full_rounds_with_the_probe(gsm8k_file, tiny_lm_dir, tmp_path):

    summary = start_distill(_recipe(gsm8k_file, tiny_lm_dir), tmp_path / "run")
    assert summary["responses"] == 4 and len(summary["rounds"]) == 2
    assert summary["probes"] == 4 and summary["ledger"]["spent_probe"] > 0
    assert {"loss", "perplexity", "accuracy"} <= set(summary["eval"]) and summary["eval"]["n"] == 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "distilled.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["provenance"] for r in rows} == {"teacher"}
    test = [json.loads(line) for line in (tmp_path / "run" / "distilled.test.jsonl").read_text().splitlines()]
    assert test and test[0]["messages"][-1]["role"] == "assistant"  # the eval set's reference answers
    card = (tmp_path / "run" / "README.md").read_text()
    assert "paradigm: distill" in card and "path: distilled.test.jsonl" in card and "responses: 4" in card
    assert all(r["messages"][-1]["content"] == _pool(gsm8k_file).column("response")[r["id"]] for r in rows)
    # Run again: resumed, nothing bought or trained twice, no probe paid twice.
    again = start_distill(_recipe(gsm8k_file, tiny_lm_dir), tmp_path / "run", evaluate=False)
    assert again["ledger"] == summary["ledger"] and len(again["rounds"]) == 2


def test_the_money_budget_is_respected_exactly(gsm8k_file, tiny_lm_dir, tmp_path):
    from curate.paradigms.distill.run import build_distill

    prices = PRICES
    config = _recipe(gsm8k_file, tiny_lm_dir, **{"stop.rounds": 20, "stop.money": 0.2, "student.train":
                                                 {"max_steps": 1, "per_device_train_batch_size": 2}})
    run = build_distill(config, tmp_path / "b")
    result = run.loop.run()
    spent, budget = result.ledger.spent_micros, result.ledger.budget_micros
    assert spent <= budget and "money budget" in result.stop_reason
    for c in result.ledger.entries:  # every charge is tokens x price
        assert c.micros == prices.micros(input_tokens=c.input_tokens, output_tokens=c.output_tokens)
    answers = [c for c in result.ledger.entries if c.source == "llm"]
    assert {c.item_id for c in answers} == set(result.labels)
    for c in answers:
        assert (c.input_tokens, c.output_tokens) == run.annotator.tokens(run.pool, c.item_id)
    # Exact costs: nothing left that one more answer would fit.
    left = [i for i in range(len(run.pool)) if i not in result.labels]
    if left:
        cheapest = min(run.annotator.item_micros(run.pool, np.array(left), prices))
        assert budget - spent < cheapest


def test_token_mode_full_rounds_with_gkd_and_the_distillation_trainer(gsm8k_file, tiny_lm_dir, teacher_dir, tmp_path):

    config = _recipe(gsm8k_file, tiny_lm_dir, **{"student.mode": "token", "teacher.model": str(teacher_dir),
                                                 "acquire.strategy": "random"})
    config.eval = None
    summary = start_distill(config, tmp_path / "gkd")
    assert summary["responses"] == 4 and [h["method"] for h in summary["rounds"]] == ["gkd", "gkd"]
    assert all(math.isfinite(h["train_loss"]) for h in summary["rounds"])

    from curate.paradigms.distill.kd import train_token

    from curate.train import sft_rows

    rows = sft_rows(QUESTIONS[:2], ["the mat", "4 5 6"], chat=True)
    out = train_token(str(tiny_lm_dir), rows, tmp_path / "dt", teacher=str(teacher_dir), method="distillation",
                      lora=LORA, train={"max_steps": 1, "per_device_train_batch_size": 2, "max_completion_length": 3},
                      max_length=64)
    assert out["method"] == "distillation" and (tmp_path / "dt" / "config.json").exists()


def test_token_mode_is_refused_when_tokenizers_differ(gsm8k_file, tiny_lm_dir, other_tokenizer_dir, tmp_path):
    from curate.paradigms.distill.kd import check_shared_tokenizer, train_token
    from curate.paradigms.distill.run import build_distill

    with pytest.raises(ConfigError, match="share a tokenizer.*student.mode=sequence"):
        check_shared_tokenizer(str(tiny_lm_dir), str(other_tokenizer_dir))
    config = _recipe(gsm8k_file, tiny_lm_dir, **{"student.mode": "token", "teacher.model": str(other_tokenizer_dir)})
    with pytest.raises(ConfigError, match="share a tokenizer"):
        build_distill(config, tmp_path)
    with pytest.raises(ConfigError, match="conversational rows"):
        train_token(str(tiny_lm_dir), [{"prompt": "a", "completion": "b"}], tmp_path / "x", teacher=str(tiny_lm_dir))
    with pytest.raises(ConfigError, match="method"):
        train_token(str(tiny_lm_dir), [], tmp_path / "x", teacher=str(tiny_lm_dir), method="kl")
    from curate.paradigms.distill import student_learner

    pool = _pool(gsm8k_file)
    with pytest.raises(ConfigError, match="share a tokenizer"):
        student_learner(pool, str(tiny_lm_dir), run_dir=tmp_path, mode="token", teacher=str(other_tokenizer_dir))
    with pytest.raises(ConfigError, match="pass teacher="):
        student_learner(pool, str(tiny_lm_dir), run_dir=tmp_path, mode="token")
    with pytest.raises(ConfigError, match="'mode' parameter"):
        student_learner(pool, str(tiny_lm_dir), run_dir=tmp_path, mode="logits")


# ------------------------------------------------------------------ recipes and CLI


def test_bad_recipes_are_refused_with_a_suggestion(gsm8k_file, tiny_lm_dir):
    from curate.paradigms.distill.config import load_distill_config

    with pytest.raises(ConfigError, match="Did you mean 'acquire.strategy'"):
        load_distill_config(data={"pool": {"path": "x"}, "acquire": {"stratgy": "probe"}})
    with pytest.raises(ConfigError, match="acquire.strategy must be one of"):
        load_distill_config(data={"pool": {"path": "x"}, "acquire": {"strategy": "vibes"}})
    with pytest.raises(ConfigError, match="set teacher.model"):
        load_distill_config(data={"pool": {"path": "x"}, "student": {"mode": "token"}})
    with pytest.raises(ConfigError, match="teacher.kind=hf needs teacher.model"):
        load_distill_config(data={"pool": {"path": "x"}, "teacher": {"kind": "hf"}})
    with pytest.raises(ConfigError, match="names no pool"):
        load_distill_config(data={})
    with pytest.raises(ConfigError, match="acquire.batch_size must be an int >= 1"):
        load_distill_config(data={"pool": {"path": "x"}, "acquire": {"batch_size": 0}})


def test_shipped_recipes_parse():
    from pathlib import Path

    from curate.paradigms.distill.config import load_distill_config

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("distill-*.yaml"))
    assert recipes
    for recipe in recipes:
        config = load_distill_config(recipe)
        assert config.pool.path.endswith(".jsonl")


def test_cli_runs_a_recipe_and_resumes(gsm8k_file, tiny_lm_dir, tmp_path, capsys):
    import yaml

    from curate.cli import main

    recipe = tmp_path / "distill-tiny.yaml"
    config = _recipe(gsm8k_file, tiny_lm_dir, **{"stop.money": 0.5, "eval.accuracy_size": 0})
    from curate.config import to_dict

    recipe.write_text(yaml.safe_dump(to_dict(config)))
    assert main(["distill", str(recipe), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    assert "(money budget 0.5000: fits)" in capsys.readouterr().out  # probes and answers, within the budget
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
    assert main(["distill", str(recipe), "--out", str(tmp_path / "run"), "--set", "stop.rounds=1"]) == 0
    out = capsys.readouterr().out
    assert "Stopped: 1 rounds done" in out and "Held-out loss" in out and "Distilled data:" in out


def start_distill(config, run_dir, **options):
    from curate.paradigms.distill import PARADIGM

    from curate.runs import RunFolder, execute

    return execute(PARADIGM, config, RunFolder(run_dir), **options).summary
