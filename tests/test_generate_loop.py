"""Generation as a query source of ActiveLoop: generated rows join the pool mid-run, go through
acquisition and annotation, are paid from the money budget, and survive a restart."""

from __future__ import annotations

import numpy as np
import pytest
from test_generate import Scripted, Words

from curate.acquire.base import Selection
from curate.annotate.base import Annotation
from curate.budget import Ledger, Prices
from curate.errors import ConfigError, DataError
from curate.generate import DuplicateFilter, GenerationQuery, Generator, LengthFilter
from curate.index import EmbeddingIndex
from curate.journal import Journal
from curate.learners import EmbeddingClassifier
from curate.loop import ActiveLoop
from curate.pool import load_pool
from curate.stopping import MaxRounds

POOL = [("a good film, great acting", "pos"), ("a bad film, awful plot", "neg"), ("great fun and good music", "pos"),
        ("boring and bad, a waste", "neg"), ("good story and great cast", "pos"), ("awful script, bad jokes", "neg"),
        ("a great and good ride", "pos"), ("bad acting, awful pacing", "neg")]


class Keywords:
    """An annotator at the seam: labels any text, pool row or generated, by its words (billed as people)."""

    name = "keywords"

    def annotate(self, pool, ids, *, labeled=None):
        for i, text in zip(np.asarray(ids).tolist(), pool.texts(ids), strict=True):
            label = "pos" if ("good" in text or "great" in text) else "neg"
            yield Annotation(i, label, "human", 1.0, human_labels=1)

    def worst_case_micros(self, prices):
        return prices.micros(human_labels=1)


class Newest:
    """Picks the highest ids: proves generated rows reach acquisition and annotation."""

    def select(self, state, budget, *, rng):
        cands = state.candidates
        return Selection(np.sort(cands)[::-1][:budget].astype(np.int64))


def make(tmp_path, texts, *, label="annotate", per_round=2, rounds=3, ledger=None, strategy=None, write=None, **kw):
    pool = load_pool([{"text": t, "label": y} for t, y in POOL])
    words = Words()
    index = EmbeddingIndex.from_vectors(words.encode(pool.texts()), kind="flat")
    backend = Scripted(texts=texts)
    filters = [LengthFilter(min_chars=8), DuplicateFilter(words, threshold=0.95, pool_texts=pool.texts(), index=index)]
    if write is None:
        query = GenerationQuery.labelled(Generator(backend, chat=False), task="film reviews", labels=["neg", "pos"],
                                         filters=filters, embedder=words, per_round=per_round, label=label,
                                         worst_case_tokens=(10, 5), batch_size=2, **kw)
    else:
        query = GenerationQuery(write, filters, embedder=words, per_round=per_round, label=label, backends=[backend],
                                worst_case_tokens=(10, 5), batch_size=2, **kw)
    learner = EmbeddingClassifier(words.encode(pool.texts()), ["neg", "pos"])
    loop = ActiveLoop(pool, strategy=strategy or Newest(), annotator=Keywords(), learner=learner,
                      run_dir=tmp_path / "run", index=index, init_size=2, batch_size=2, stopping=MaxRounds(rounds),
                      ledger=ledger, generators=[query])
    return loop, backend


def test_generated_rows_join_the_pool_and_get_annotated(tmp_path):
    texts = [f"a good new film number {i}" if i % 2 else f"an awful new film number {i}" for i in range(20)]
    loop, _ = make(tmp_path, texts)
    result = loop.run()
    assert len(result.pool) == len(POOL) + 4                 # rounds 1 and 2 each added 2
    assert len(loop.index) == len(result.pool) and len(loop.learner.features) == len(result.pool)
    journal = Journal(tmp_path / "run" / "journal.sqlite")
    rows = journal.generated()
    assert [g["item_id"] for g in rows] == [8, 9, 10, 11] and {g["round"] for g in rows} == {1, 2}
    assert [result.pool.texts([g["item_id"]])[0] for g in rows] == [g["row"]["text"] for g in rows]
    # Newest picked the generated rows, and the annotator labelled them like pool items.
    bought = {r["item_id"]: r for r in journal.label_rows()}
    assert all(bought[i]["source"] == "human" for i in (8, 9, 10, 11))
    assert result.labels[9] == ("pos" if "good" in result.pool.texts([9])[0] else "neg")
    assert journal.get_meta("generation:1:0")["accepted"] == 2
    journal.close()


def test_intended_labels_are_free_and_generation_is_billed_exactly(tmp_path):
    texts = [f"generated review {i} good" if i % 2 else f"generated review {i} bad" for i in range(40)]
    prices = Prices(human_per_label=1.0, llm_input_per_million=1e5, llm_output_per_million=1e5)  # 0.1 per token
    ledger = Ledger(prices, budget=9.0)
    loop, backend = make(tmp_path, texts, label="intended", rounds=10, ledger=ledger, per_round=3)
    result = loop.run()
    journal = Journal(tmp_path / "run" / "journal.sqlite")
    gen_rows = journal.generated()
    sources = {r["item_id"]: r["source"] for r in journal.label_rows()}
    assert gen_rows and all(sources[g["item_id"]] == "generated" for g in gen_rows)
    assert all(result.labels[g["item_id"]] == g["label"] for g in gen_rows)
    charges = journal.charges()
    generation = [c for c in charges if c.source == "generation"]
    # 15 tokens at 0.1 each per written candidate, billed as written; intended labels cost nothing.
    written = sum(journal.get_meta(f"generation:{r}:0")["generated"] for r in range(1, 10)
                  if journal.get_meta(f"generation:{r}:0"))
    assert sum(c.micros for c in generation) == written * 1_500_000
    assert all(c.micros == 0 for c in charges if c.source == "generated")
    assert result.ledger.spent_micros == sum(c.micros for c in charges) <= ledger.budget_micros
    assert result.stop_reason.startswith("money budget reached")
    journal.close()


def test_resume_reappends_generated_rows(tmp_path):
    texts = [f"fresh text {i} is good" for i in range(30)]
    loop, _ = make(tmp_path, texts, rounds=2)
    first = loop.run()
    assert len(first.pool) == len(POOL) + 2
    again, _ = make(tmp_path, texts[2:], rounds=4)  # a new process: the pool as it was given
    result = again.run()
    assert len(result.pool) == len(POOL) + 6 and len(again.index) == len(result.pool)
    assert result.pool.texts([8, 9]) == first.pool.texts([8, 9])
    journal = Journal(tmp_path / "run" / "journal.sqlite")
    assert [g["item_id"] for g in journal.generated()] == list(range(8, 14))
    assert [r.round for r in journal.rounds()] == [0, 1, 2, 3]
    journal.close()


def test_a_crash_mid_generation_keeps_what_was_journalled(tmp_path):
    calls = {"n": 0}
    texts = [f"written sentence {i} good" for i in range(30)]

    def write(size, rng, ctx):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        return [Generator(backend, chat=False).for_labels("t", ["neg", "pos"], size, rng=rng)][0]

    loop, backend = make(tmp_path, texts, write=write, per_round=4, rounds=2)
    with pytest.raises(RuntimeError, match="killed"):
        loop.run()
    journal = Journal(tmp_path / "run" / "journal.sqlite")
    assert len(journal.generated()) == 2 and journal.get_meta("generation:1:0") is None
    journal.close()
    again, backend = make(tmp_path, texts[2:], write=write, per_round=4, rounds=2)
    result = again.run()
    journal = Journal(tmp_path / "run" / "journal.sqlite")
    rows = journal.generated()
    assert len(rows) == 4 and len(result.pool) == len(POOL) + 4  # the rest of round 1's target, not 4 more
    assert len({g["row"]["text"] for g in rows}) == 4
    journal.close()


def test_errors_name_what_is_wrong(tmp_path):
    loop, _ = make(tmp_path, [f"text {i} good" for i in range(10)], rounds=2)
    loop.run()
    pool = load_pool([{"text": t, "label": y} for t, y in POOL])
    learner = EmbeddingClassifier(Words().encode(pool.texts()), ["neg", "pos"])
    plain = ActiveLoop(pool, strategy=Newest(), annotator=Keywords(), learner=learner, run_dir=tmp_path / "run",
                       init_size=2, batch_size=2, stopping=MaxRounds(3))
    with pytest.raises(ConfigError, match="grew by generation"):
        plain.run()

    class NoRows:
        classes = ["neg", "pos"]

        def fit(self, ids, labels): ...

    with pytest.raises(ConfigError, match="add_rows"):
        ActiveLoop(pool, strategy=Newest(), annotator=Keywords(), learner=NoRows(), run_dir=tmp_path / "x",
                   generators=[loop.generators[0]])
    with pytest.raises(ConfigError, match="'label' parameter"):
        GenerationQuery(lambda *a: [], [], embedder=Words(), per_round=1, label="gold")
    with pytest.raises(ConfigError, match="no intended label"):
        GenerationQuery.coverage(Generator(Scripted()), filters=[], embedder=Words(), per_round=1, label="intended")
    free = Ledger(Prices(human_per_label=1.0, llm_input_per_million=1.0), budget=5.0)
    bad, _ = make(tmp_path / "b", [f"t {i} good" for i in range(10)], ledger=free)
    bad.generators[0].worst_case_tokens = (0, 0)
    with pytest.raises(ConfigError, match="worst_case_tokens"):
        bad.run()


def test_pool_extended_checks_rows():
    pool = load_pool([{"text": "one", "label": "a"}, {"text": "two", "label": "b"}])
    grown = pool.extended([{"text": "three"}])
    assert len(pool) == 2 and grown.ids.tolist() == [0, 1, 2] and grown.column("label") == ["a", "b", None]
    with pytest.raises(DataError, match="columns \\['colour'\\]"):
        pool.extended([{"text": "x", "colour": "red"}])
    with pytest.raises(DataError, match="'text' role must be a non-empty string"):
        pool.extended([{"text": "  "}])


def test_recipe_generate_block_runs_and_writes_generated_rows(tmp_path, tiny_lm_dir):
    import json
    from importlib import resources

    from curate.paradigms.classify import PARADIGM
    from curate.paradigms.classify.config import load_classify_config as load_config
    from curate.paradigms.classify.run import generation_summary

    from curate.runs import RunFolder, execute

    recipe = resources.files("recipes") / "reviews-generate.yaml"
    overrides = [f"lm.model={tiny_lm_dir}", "lm.device=cpu", "generate.label_threshold=0", "generate.min_chars=1",
                 "generate.max_new_tokens=8", "stop.rounds=3", "init.size=4", "acquire.batch_size=4"]
    config = load_config(str(recipe), overrides)
    assert config.generate.per_round == 4 and config.generate.label == "intended"
    outcome = execute(PARADIGM, config, RunFolder(tmp_path / "run"))
    result, estimate = outcome.result, outcome.estimate
    plain = load_config(str(recipe), [*overrides, "generate=null"])

    # The estimate counts what generation may spend in its due rounds (1 and 2) on top of the labels.
    base = len(load_pool("sample:reviews"))
    plain_estimate = execute(PARADIGM, plain, RunFolder(tmp_path / "plain"), dry_run=True).estimate
    assert estimate.total_worst_case > plain_estimate.total_worst_case
    assert estimate.generation_worst_case > 0 and "+ generation at most" in estimate.describe()
    rows = [json.loads(line) for line in (tmp_path / "run" / "generated.jsonl").read_text().splitlines()]
    journal = Journal(tmp_path / "run" / "journal.sqlite")
    accepted = sum(journal.get_meta(f"generation:{r}:0")["accepted"] for r in (1, 2))
    journal.close()
    assert len(rows) == accepted and len(result.pool) == base + accepted
    assert all(r["label"] == r["intended_label"] and r["label_source"] == "generated" for r in rows)
    assert "round 1:" in generation_summary(tmp_path / "run")
    assert result.ledger.totals().get("spent_generation", 0) > 0
    with pytest.raises(ConfigError, match="generate.label"):
        load_config(str(recipe), ["generate.label=gold"])


def test_self_instruct_prompts_join_an_sft_loop(tmp_path, tiny_lm_dir):
    """Generated instructions enter a prompt pool, are bought like pool prompts, and the SFT learner
    trains on them; the export carries them."""
    from curate.responses import ResponseLearner, response_dataset

    pool = load_pool([{"prompt": p} for p in ("name a fruit", "count to three", "say hello politely",
                                             "spell the word cat", "give a colour", "name a planet")])

    class Answers:
        name = "teacher"

        def annotate(self, pool, ids, *, labeled=None):
            for i, prompt in zip(np.asarray(ids).tolist(), pool.texts(ids), strict=True):
                yield Annotation(i, f"an answer to: {prompt}", "llm", 1.0, input_tokens=5, output_tokens=5)

        def worst_case_micros(self, prices):
            return prices.micros(input_tokens=5, output_tokens=5)

    words = Words()
    index = EmbeddingIndex.from_vectors(words.encode(pool.texts()), kind="flat")
    backend = Scripted(texts=[f"write a short poem about topic {i}" for i in range(10)])
    query = GenerationQuery.instructions(Generator(backend, chat=False), filters=[LengthFilter(min_chars=5)],
                                         embedder=words, per_round=2, worst_case_tokens=(10, 5), batch_size=2)
    learner = ResponseLearner(pool, tiny_lm_dir, run_dir=tmp_path / "run", chat=False, max_length=32,
                              train={"max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-3})
    loop = ActiveLoop(pool, strategy=Newest(), annotator=Answers(), learner=learner, run_dir=tmp_path / "run",
                      index=index, init_size=2, batch_size=2, stopping=MaxRounds(2), generators=[query])
    result = loop.run()
    assert len(result.pool) == 8 and learner.pool is result.pool
    assert sorted(result.labels)[-2:] == [6, 7] and set(learner.trained_ids_) >= {6, 7}
    assert learner.prompts([6]) == ["write a short poem about topic 0"]
    data = response_dataset(result.pool, tmp_path / "run", format="prompt_completion")
    assert "an answer to: write a short poem about topic 1" in data["completion"]
