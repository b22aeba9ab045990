"""Active ICL: prompts, retrieval on planted geometry, perplexity re-ranking and calibration with scripted
log-probs, the prefix-sharing scorer against a plain full-logits loop on a tiny LM, vote-k against a direct
re-computation, selective annotation through the loop, and the CLI handlers."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import HashEmbedder
from curate.paradigms.icl.config import (
    AnnotateConfig,
    EvaluateConfig,
    PromptConfig,
    RetrieveConfig,
    load_icl_config,
)
from curate.paradigms.icl.evaluate import (
    build_prompts,
    contextual_calibration,
    evaluate_icl,
    evaluate_prompts,
    mean_sd,
)
from curate.paradigms.icl.prompts import Demo, PromptBuilder, display_order
from curate.paradigms.icl.retrieve import DemonstrationRetriever
from curate.paradigms.icl.scoring import ScoringStats, score_options

from curate.backends.base import BaseBackend, TokenLogprobs
from curate.errors import ConfigError, DataError
from curate.index import EmbeddingIndex

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
REVIEW = PromptConfig(input_template="Review: {text}", answer_template="Sentiment: {label}")


class Scripted(BaseBackend):
    """Option probabilities decided by the test input at the end of a prompt (text after the last
    "Review: "), and perplexities by which scripted key a text (or its prompt) contains."""

    name = "scripted"

    def __init__(self, p_first=None, ppl=None):
        super().__init__()
        self.p_first = p_first or {}  # input text -> probability of the first option
        self.ppl = ppl or {}          # substring -> mean negative log-likelihood
        self.option_calls: list[list[str]] = []
        self.ppl_calls: list[tuple[list[str], list[str] | None]] = []

    def chat_prompt(self, messages, *, add_generation_prompt=True):
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + ("|assistant:" if add_generation_prompt else "")

    def option_logprobs(self, prompts, options, *, normalize=True):
        self.option_calls.append(list(prompts))
        rows = []
        for p in prompts:
            x = p.rsplit("Review: ", 1)[1].split("\n", 1)[0]
            first = self.p_first.get(x, 0.5)
            rows.append(np.log([first, 1 - first] + [1e-9] * (len(options) - 2)))
        return np.array(rows)

    def completion_logprobs(self, prompts, completions):
        out = []
        for prompt, text in zip(prompts, completions, strict=True):
            nll = next(v for k, v in self.ppl.items() if k in prompt + text)
            out.append(TokenLogprobs(("t",), np.array([-nll])))
        return out

    def perplexity(self, texts, prompts=None):
        self.ppl_calls.append((list(texts), None if prompts is None else list(prompts)))
        return super().perplexity(texts, prompts)


def planted(q: np.ndarray, cosines, rng) -> np.ndarray:
    """Unit vectors with exactly the given cosine similarity to unit ``q``."""
    rows = []
    for c in cosines:
        v = rng.normal(size=q.shape)
        v -= (v @ q) * q
        v /= np.linalg.norm(v)
        rows.append(c * q + math.sqrt(1 - c * c) * v)
    return np.array(rows)


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("icl-*.yaml")))
def test_recipes_parse(name):
    config = load_icl_config(RECIPES / name)
    assert config.pool.path and config.inputs is not None and len(config.labels) >= 2
    assert PromptBuilder(config.prompt, config.labels).options  # the templates render
    with pytest.raises(ConfigError, match="Did you mean 'retrieve.k'"):
        load_icl_config(RECIPES / name, ["retrieve.kk=3"])


def test_config_errors_say_what_is_wrong():
    with pytest.raises(ConfigError, match="at least one field"):
        PromptConfig(input_template="Review:")
    with pytest.raises(ConfigError, match="must not use {label}"):
        PromptConfig(input_template="{text} ({label})")
    with pytest.raises(ConfigError, match=r"plain column names .*\['row\.text'\]"):
        PromptConfig(input_template="{row.text}")
    with pytest.raises(ConfigError, match="at its very end"):
        PromptConfig(answer_template="{label} is the answer")
    with pytest.raises(ConfigError, match="Did you mean 'knn'"):
        RetrieveConfig(method="knm")
    with pytest.raises(ConfigError, match="at least retrieve.k"):
        RetrieveConfig(k=8, candidates=4)
    with pytest.raises(ConfigError, match="rounds must be"):
        AnnotateConfig(strategy="uncertainty", rounds=1)
    with pytest.raises(ConfigError, match="content-free"):
        EvaluateConfig(content_free=[])
    with pytest.raises(ConfigError, match="unknown labels"):
        PromptBuilder(PromptConfig(verbalizers={"pos": "good"}), ["0", "1"])


# ---------------------------------------------------------------------------------------------- prompts


def test_plain_prompt_renders_exactly_with_verbalisers():
    cfg = PromptConfig(instruction="Classify the sentiment.", input_template="Review: {text}",
                       answer_template="Sentiment: {label}", verbalizers={"0": "negative", "1": "positive"})
    builder = PromptBuilder(cfg, [0, 1])
    text = builder.render("dull", [Demo(3, "superb", "1"), Demo(7, "awful", "0")])
    assert text == ("Classify the sentiment.\n\nReview: superb\nSentiment: positive\n\n"
                    "Review: awful\nSentiment: negative\n\nReview: dull\nSentiment:")
    assert builder.options == [" negative", " positive"]


def test_chat_prompt_puts_demonstrations_in_turns(tiny_backend):
    cfg = PromptConfig(instruction="Be brief.", input_template="Review: {text}", answer_template="Sentiment: {label}",
                       chat=True)
    builder = PromptBuilder.for_backend(cfg, ["negative", "positive"], tiny_backend)
    text = builder.render("dull", [Demo(1, "superb", "positive")])
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nReview: superb<|im_end|>\n"
                    "<|im_start|>assistant\nSentiment: positive<|im_end|>\n<|im_start|>user\nReview: dull<|im_end|>\n"
                    "<|im_start|>assistant\nSentiment:")
    with pytest.raises(ConfigError, match="chat template"):
        PromptBuilder(cfg, ["a", "b"])


def test_fit_drops_least_relevant_first_then_cuts_the_input():
    demos = [Demo(0, "most similar one", "a"), Demo(1, "second", "b"), Demo(2, "least similar", "a")]
    full = PromptBuilder(REVIEW, ["a", "b"]).fit("the input text", demos)
    assert full.demo_ids == [2, 1, 0] and full.dropped == 0  # most similar next to the input
    words = len(full.text.split())
    small = PromptBuilder(PromptConfig(**{**REVIEW.__dict__, "max_prompt_tokens": words - 3}), ["a", "b"])
    fitted = small.fit("the input text", demos)
    assert fitted.demo_ids == [1, 0] and fitted.dropped == 1 and not fitted.input_cut
    first = small.fit("the input text", demos, order="similar_first")
    assert first.demo_ids == [0, 1]
    tiny = PromptBuilder(PromptConfig(**{**REVIEW.__dict__, "max_prompt_tokens": 4}), ["a", "b"])
    cut = tiny.fit("the input text", demos)
    assert cut.demos == () and cut.input_cut and cut.text == "Review: the input\nSentiment:"
    with pytest.raises(ConfigError, match="too small"):
        PromptBuilder(PromptConfig(**{**REVIEW.__dict__, "max_prompt_tokens": 1}), ["a", "b"]).fit("x y", [])
    short = PromptBuilder(PromptConfig(**{**REVIEW.__dict__, "max_demo_tokens": 2}), ["a", "b"])
    assert short.render("q", [Demo(0, "one two three", "a")]).startswith("Review: one two\nSentiment: a")


RTE = PromptConfig(input_template="Premise: {premise}\nHypothesis: {hypothesis}", answer_template="Answer: {label}",
                   verbalizers={"entailment": "yes", "not_entailment": "no"})


def test_multi_field_templates_render_cut_and_fill_content_free_inputs():
    builder = PromptBuilder(RTE, ["entailment", "not_entailment"])
    demo = Demo(3, {"premise": "a cat sat on the mat", "hypothesis": "a cat sat"}, "entailment")
    text = builder.render({"premise": "dogs bark", "hypothesis": "cats bark"}, [demo])
    assert text == ("Premise: a cat sat on the mat\nHypothesis: a cat sat\nAnswer: yes\n\n"
                    "Premise: dogs bark\nHypothesis: cats bark\nAnswer:")
    assert builder.render("N/A", []) == "Premise: N/A\nHypothesis: N/A\nAnswer:"  # content-free: every field
    short = PromptBuilder(PromptConfig(**{**RTE.__dict__, "max_demo_tokens": 2}), ["entailment", "not_entailment"])
    assert short.demonstration(demo) == "Premise: a cat\nHypothesis: a cat\nAnswer: yes"
    tiny = PromptBuilder(PromptConfig(**{**RTE.__dict__, "max_prompt_tokens": 6}), ["entailment", "not_entailment"])
    cut = tiny.fit({"premise": "one two three four", "hypothesis": "five six seven"}, [demo])
    assert cut.input_cut and cut.demos == () and cut.text == "Premise: one\nHypothesis: five\nAnswer:"
    with pytest.raises(DataError, match="no field 'hypothesis'"):
        builder.render({"premise": "x"}, [])


def test_template_fields_are_checked_against_the_pool_columns():
    from curate.paradigms.icl.prompts import check_input_fields, embedding_texts, template_inputs

    from curate.pool import load_pool

    pool = load_pool([{"premise": "p0", "hypothesis": "h0", "label": "entailment"},
                      {"premise": "p1", "hypothesis": "h1", "label": "not_entailment"}])
    inputs = template_inputs(RTE, pool)
    assert inputs == [{"premise": "p0", "hypothesis": "h0"}, {"premise": "p1", "hypothesis": "h1"}]
    years = PromptConfig(input_template="In {year}: {question}")
    assert template_inputs(years, load_pool([{"question": "who won?", "year": 1999, "label": "x"}])) == [
        {"year": "1999", "question": "who won?"}]
    assert embedding_texts(RTE, inputs)[0] == "Premise: p0\nHypothesis: h0"
    assert template_inputs(REVIEW, load_pool([{"text": "t"}])) == ["t"]
    other = PromptConfig(input_template="Premise: {premise}\nHypothesis: {hypotesis}")
    with pytest.raises(ConfigError, match=r"uses \{hypotesis\}, but the pool \(<list>\) has no column 'hypotesis'\. "
                                          r"Columns: premise, hypothesis, label\..*Did you mean 'hypothesis'"):
        check_input_fields(other, pool)
    with pytest.raises(DataError, match=r"row 2: field 'premise' \(used by prompt.input_template\) is empty"):
        template_inputs(RTE, load_pool([{"premise": "p", "hypothesis": "h", "label": "a"},
                                        {"premise": " ", "hypothesis": "h", "label": "b"}]))


def test_display_orders():
    assert display_order(3, "similar_last") == [2, 1, 0]
    assert display_order(3, "similar_first") == [0, 1, 2]
    assert sorted(display_order(5, "random", np.random.default_rng(0))) == list(range(5))
    with pytest.raises(ConfigError, match="rng"):
        display_order(3, "random")


# ---------------------------------------------------------------------------------------------- retrieval


def geometry(seed=0):
    """A query, 4 labelled items planted at known similarities, an unlabelled one nearer than all of
    them, and 20 labelled items far away."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=16)
    q /= np.linalg.norm(q)
    near = planted(q, [0.95, 0.9, 0.85, 0.8], rng)  # ids 0..3
    closer_unlabelled = planted(q, [0.99], rng)       # id 4, not labelled
    far = planted(q, rng.uniform(-0.3, 0.3, 20), rng)  # ids 5..24
    vectors = np.vstack([near, closer_unlabelled, far])
    index = EmbeddingIndex.from_vectors(vectors, kind="flat")
    labelled = np.array([0, 1, 2, 3, *range(5, 25)])
    labels = ["a", "a", "b", "a"] + ["b"] * 20
    texts = [f"text {i}" for i in labelled]
    return q, index, labelled, labels, texts


def test_knn_returns_the_planted_nearest_in_order():
    q, index, ids, labels, texts = geometry()
    retriever = DemonstrationRetriever(RetrieveConfig(k=3, candidates=8), index=index, ids=ids, labels=labels, texts=texts)
    (demos,) = retriever.retrieve(q[None])
    assert [d.id for d in demos] == [0, 1, 2]  # the unlabelled id 4 is nearer but never used
    assert [d.label for d in demos] == ["a", "a", "b"] and demos[0].text == "text 0"
    (skip,) = retriever.retrieve(q[None], exclude=[0])
    assert [d.id for d in skip] == [1, 2, 3]
    prompt = PromptBuilder(REVIEW, ["a", "b"]).fit("query", demos)
    assert prompt.demo_ids == [2, 1, 0] and prompt.text.endswith("Review: text 0\nSentiment: a\n\nReview: query\nSentiment:")


def test_index_search_and_direct_comparison_agree():
    rng = np.random.default_rng(0)
    x, queries, ids = rng.normal(size=(50, 8)), rng.normal(size=(7, 8)), np.arange(100, 150)
    exact = EmbeddingIndex.from_vectors(x, ids, kind="flat")  # holds exactly the labelled set: FAISS answers
    wider = EmbeddingIndex.from_vectors(np.vstack([x, rng.normal(size=(5, 8))]), np.r_[ids, 0:5], kind="flat")
    kwargs = dict(ids=ids, labels=["a"] * 50, texts=["t"] * 50)
    a = DemonstrationRetriever(RetrieveConfig(k=4, candidates=6), index=exact, **kwargs)
    b = DemonstrationRetriever(RetrieveConfig(k=4, candidates=6), index=wider, **kwargs)
    exclude = [None, 101, None, 120, None, None, 149]
    got_a = [[d.id for d in row] for row in a.retrieve(queries, exclude=exclude)]
    got_b = [[d.id for d in row] for row in b.retrieve(queries, exclude=exclude)]
    assert got_a == got_b and 101 not in got_a[1]
    sims = queries @ x.T / np.linalg.norm(queries, axis=1)[:, None] / np.linalg.norm(x, axis=1)
    assert got_a[0] == [int(ids[j]) for j in np.argsort(-sims[0])[:4]]


def test_label_balancing_and_mmr():
    q, index, ids, labels, texts = geometry()
    balanced = DemonstrationRetriever(RetrieveConfig(k=2, candidates=4, balance_labels=True), index=index, ids=ids,
                                      labels=labels, texts=texts)
    assert [d.id for d in balanced.retrieve(q[None])[0]] == [0, 2]  # one 'a' and one 'b', nearest of each
    # With the query along e0: 'twin' is nearly 'base' (cosine ~0.9995), 'other' points elsewhere.
    q = np.eye(16)[0]
    base = np.zeros(16)
    base[:2] = [0.95, math.sqrt(1 - 0.95**2)]
    twin = np.zeros(16)
    twin[:3] = [0.94, math.sqrt(1 - 0.94**2) * math.cos(0.05), math.sqrt(1 - 0.94**2) * math.sin(0.05)]
    other = np.zeros(16)
    other[[0, 3]] = [0.9, math.sqrt(1 - 0.81)]
    vectors = np.vstack([base, twin, other])
    idx = EmbeddingIndex.from_vectors(vectors, kind="flat")
    cfg = dict(k=2, candidates=3)
    plain = DemonstrationRetriever(RetrieveConfig(**cfg), index=idx, ids=[0, 1, 2], labels=["a"] * 3, texts=["x"] * 3)
    mmr = DemonstrationRetriever(RetrieveConfig(**cfg, mmr=0.5), index=idx, ids=[0, 1, 2], labels=["a"] * 3, texts=["x"] * 3)
    sims = idx.vectors @ q
    assert sims[1] > sims[2]  # the twin is more similar than 'other', so plain k-NN takes it
    assert sorted(d.id for d in plain.retrieve(q[None])[0]) == [0, 1]
    assert sorted(d.id for d in mmr.retrieve(q[None])[0]) == [0, 2]  # MMR skips the redundant twin


def test_fixed_random_and_zero_shot_draws():
    q, index, ids, labels, texts = geometry()
    queries = np.tile(q, (5, 1))
    fixed = DemonstrationRetriever(RetrieveConfig(method="fixed", k=3), index=index, ids=ids, labels=labels, texts=texts)
    out = fixed.retrieve(queries, rng=np.random.default_rng(0))
    assert len({tuple(d.id for d in row) for row in out}) == 1 and len(out[0]) == 3
    again = fixed.retrieve(queries, rng=np.random.default_rng(0))
    assert [d.id for d in again[0]] == [d.id for d in out[0]]
    rand = DemonstrationRetriever(RetrieveConfig(method="random", k=3, balance_labels=True), index=index, ids=ids,
                                  labels=labels, texts=texts)
    rows = rand.retrieve(queries, rng=np.random.default_rng(0), exclude=[5] * 5)
    assert len({tuple(d.id for d in row) for row in rows}) > 1
    assert all(5 not in [d.id for d in row] and {d.label for d in row} == {"a", "b"} for row in rows)
    zero = DemonstrationRetriever(RetrieveConfig(method="zero_shot"), index=index, ids=ids, labels=labels, texts=texts)
    assert zero.retrieve(queries) == [[]] * 5
    with pytest.raises(ConfigError, match="rng"):
        fixed.retrieve(queries)


def test_perplexity_rerank_follows_scripted_logprobs():
    q, index, ids, labels, texts = geometry()
    # Candidates are the 6 nearest labelled: ids 0, 1, 2, 3 and the two nearest far ones.
    sims = index.vectors_of(ids) @ q
    six = [int(i) for i in ids[np.argsort(-sims, kind="stable")[:6]]]
    nll = {f"text {i}\n": v for i, v in zip(six, [3.0, 0.5, 2.0, 0.1, 5.0, 1.0], strict=True)}
    backend = Scripted(ppl=nll)
    builder = PromptBuilder(REVIEW, ["a", "b"])
    cfg = RetrieveConfig(k=3, candidates=6, rerank="demo_perplexity")
    retriever = DemonstrationRetriever(cfg, index=index, ids=ids, labels=labels, texts=texts, backend=backend,
                                       builder=builder)
    (demos,) = retriever.retrieve(q[None])
    lowest = [six[1], six[3], six[5]]  # perplexities 0.5, 0.1, 1.0
    assert [d.id for d in demos] == sorted(lowest, key=lambda i: -sims[list(ids).index(i)])  # shown by similarity
    assert retriever.perplexity_[six[3]] == pytest.approx(math.exp(0.1))
    assert backend.ppl_calls[0][0][0] == builder.demonstration(Demo(six[0], f"text {six[0]}", labels[0]))
    retriever.retrieve(q[None])
    assert len(backend.ppl_calls) == 1  # demonstration perplexities are cached by id
    # Input perplexity: the query text scored after each demonstration.
    backend = Scripted(ppl={f"text {i}\n": v for i, v in zip(six, [0.2, 4.0, 3.0, 2.0, 0.3, 0.1], strict=True)})
    cfg = RetrieveConfig(k=2, candidates=6, rerank="input_perplexity")
    retriever = DemonstrationRetriever(cfg, index=index, ids=ids, labels=labels, texts=texts, backend=backend,
                                       builder=builder)
    (demos,) = retriever.retrieve(q[None], query_texts=["my input"])
    assert {d.id for d in demos} == {six[0], six[5]}
    texts_scored, prompts_scored = backend.ppl_calls[0]
    assert texts_scored == ["Review: my input"] * 6 and prompts_scored[0].endswith("Sentiment: a\n\n")


# ---------------------------------------------------------------------------------------------- scoring


def plain_full_logits(backend, prompts, options) -> np.ndarray:
    """The reference: one prompt at a time, logits at every position, the last one read."""
    import torch

    tok, model = backend.tokenizer, backend.model
    ids = [tok.encode(o, add_special_tokens=False)[0] for o in options]
    rows = []
    with torch.inference_mode():
        for p in prompts:
            logits = model(input_ids=torch.tensor([tok.encode(p, add_special_tokens=False)])).logits[0, -1]
            lp = torch.log_softmax(logits.float(), -1)[ids].double().numpy()
            rows.append(lp - np.logaddexp.reduce(lp))
    return np.array(rows)


def test_score_options_equals_a_plain_full_logits_loop(tiny_backend):
    builder = PromptBuilder.for_backend(PromptConfig(verbalizers={"y": "yes", "n": "no"}), ["y", "n"], tiny_backend)
    pool = [Demo(i, t, "y" if i % 2 else "n") for i, t in enumerate(
        ["the film was wonderful", "the food was cold", "a great phone", "terrible plot and a boring ending",
         "the cat sat on the mat"])]
    demo_sets = [pool[:3], pool[:3], pool[1:4], [pool[4]], pool[:3]]
    prompts = build_prompts(builder, ["what is the capital", "numbers 0 1 2", "the cat", "positive maybe", "a"], demo_sets)
    texts = [p.text for p in prompts] + [builder.render("N/A", p.demos) for p in prompts]
    keys = [tuple(p.demo_ids) for p in prompts] * 2
    reference = plain_full_logits(tiny_backend, texts, builder.options)
    stats = ScoringStats()
    grouped = score_options(tiny_backend, texts, builder.options, groups=keys, max_batch_tokens=96, max_batch_size=3,
                            stats=stats)
    np.testing.assert_allclose(grouped, reference, atol=1e-4)
    assert stats.groups == 3 and stats.shared_tokens > 0 and stats.prompts == 10
    alone = score_options(tiny_backend, texts, builder.options)
    np.testing.assert_allclose(alone, reference, atol=1e-4)
    # " positive" is three tokens in the tiny vocabulary: the backend's own multi-token path answers.
    multi = score_options(tiny_backend, texts[:2], [" positive", " negative"])
    np.testing.assert_allclose(multi, tiny_backend.option_logprobs(texts[:2], [" positive", " negative"]), atol=1e-9)
    with pytest.raises(ConfigError, match="one key per prompt"):
        score_options(tiny_backend, texts, builder.options, groups=keys[:3])


def test_score_options_hands_groups_and_limits_to_the_backend_and_adds_up_its_stats():
    from curate.backends.base import OptionScores

    class Recording(Scripted):
        def score_options(self, prompts, options, **kwargs):
            self.calls.append(kwargs)
            return super().score_options(prompts, options, **kwargs)

    backend = Recording({"good": 0.9})
    backend.calls = []
    prompts = ["Review: good\nSentiment:", "Review: bad\nSentiment:"]
    stats = ScoringStats(prompts=5, forward_tokens=7)  # a caller's running total
    logp = score_options(backend, prompts, ["positive", "negative"], max_batch_tokens=32, max_batch_size=2, stats=stats)
    np.testing.assert_allclose(np.exp(logp), [[0.9, 0.1], [0.5, 0.5]])
    # groups=None: each prompt alone; the paradigm's batch limits are the backend's for this call.
    assert backend.calls == [{"groups": [0, 1], "normalize": True, "max_batch_tokens": 32, "max_batch_size": 2}]
    assert (stats.prompts, stats.forward_tokens, stats.groups) == (7, 7, 2)  # scripted: no tokens read
    score_options(backend, prompts, ["positive", "negative"], groups=["d", "d"])
    assert backend.calls[-1]["groups"] == ["d", "d"]
    assert isinstance(backend.score_options(prompts, ["positive", "negative"]), OptionScores)


# ---------------------------------------------------------------------------------------------- evaluation


def test_contextual_calibration_and_mean_sd():
    q = contextual_calibration(np.array([[0.7, 0.3]]), np.array([0.8, 0.2]))
    np.testing.assert_allclose(q, [[0.875 / 2.375, 1.5 / 2.375]])
    assert mean_sd([0.5, 0.7, 0.9]) == pytest.approx((0.7, 0.2))
    assert mean_sd([0.5]) == (0.5, 0.0)


def test_evaluation_calibrates_with_content_free_twins():
    p_pos = {"N/A": 0.8, "": 0.8, "[MASK]": 0.8, "good film": 0.9, "bad film": 0.6}
    backend = Scripted(p_first=p_pos)
    builder = PromptBuilder(REVIEW, ["positive", "negative"])
    demos = [Demo(0, "fine", "positive")]
    prompts = build_prompts(builder, ["good film", "bad film"], [demos, demos])
    result = evaluate_prompts(backend, builder, prompts, ["positive", "negative"])
    assert result.predictions == ["positive", "positive"] and result.accuracy == 0.5
    assert result.calibrated_predictions == ["positive", "negative"] and result.calibrated_accuracy == 1.0
    assert result.dataset_calibrated_predictions == result.calibrated_predictions  # one demonstration set
    scored = backend.option_calls[0]
    assert len(scored) == 2 + 3  # one demonstration set: three content-free twins in all
    assert scored[2] == "Review: fine\nSentiment: positive\n\nReview: N/A\nSentiment:"
    raw = evaluate_prompts(backend, builder, prompts, ["positive", "negative"], calibrate=False)
    assert raw.calibrated_accuracy is None and len(backend.option_calls[-1]) == 2


def test_dataset_scope_calibration_keeps_what_per_input_demonstrations_say():
    # Two inputs with their own demonstrations; "N/A" after each set leans to that set's label.
    backend = Scripted()
    builder = PromptBuilder(REVIEW, ["positive", "negative"])

    def option_logprobs(prompts, options, *, normalize=True):
        rows = []
        for p in prompts:
            x = p.rsplit("Review: ", 1)[1].split("\n", 1)[0]
            leaning = 0.9 if "Sentiment: positive" in p else 0.1  # the demonstrations' label
            first = {"N/A": leaning, "good": 0.8, "bad": 0.2}.get(x, 0.5)
            rows.append(np.log([first, 1 - first]))
        return np.array(rows)

    backend.option_logprobs = option_logprobs
    prompts = build_prompts(builder, ["good", "bad"], [[Demo(0, "fine", "positive")], [Demo(1, "awful", "negative")]])
    result = evaluate_prompts(backend, builder, prompts, ["positive", "negative"], content_free=["N/A"])
    assert result.accuracy == 1.0 and result.dataset_calibrated_accuracy == 1.0
    # Per prompt: 0.8 / 0.9 vs 0.2 / 0.1 -> negative for "good"; 0.2 / 0.1 vs 0.8 / 0.9 -> positive for "bad".
    assert result.calibrated_predictions == ["negative", "positive"] and result.calibrated_accuracy == 0.0


def test_evaluate_icl_on_a_tiny_lm_matches_the_plain_loop(tiny_backend):
    texts = ["the film was wonderful", "the food was cold and rude", "a great phone", "terrible plot",
             "the cat sat on the mat", "what is the capital", "numbers 0 1 2 3", "positive negative neutral"]
    labels = ["yes", "no", "yes", "no", "no", "no", "yes", "yes"]
    emb = HashEmbedder()
    index = EmbeddingIndex.from_vectors(emb.encode(texts), kind="flat")
    cfg = PromptConfig(input_template="Review: {text}", answer_template="Answer: {label}")
    builder = PromptBuilder.for_backend(cfg, ["no", "yes"], tiny_backend)
    retriever = DemonstrationRetriever(RetrieveConfig(k=2, candidates=4), index=index, ids=range(8), labels=labels,
                                       texts=texts)
    tests, gold = ["the film was great", "cold food", "the cat"], ["yes", "no", "no"]
    result = evaluate_icl(tiny_backend, builder, retriever, tests, gold, emb.encode(tests), content_free=["N/A"])
    prompts = [p.text for p in result.prompts]
    ref = np.exp(plain_full_logits(tiny_backend, prompts, builder.options))
    cf = np.exp(plain_full_logits(tiny_backend, [builder.render("N/A", p.demos) for p in result.prompts],
                                  builder.options))
    assert result.predictions == [builder.labels[i] for i in ref.argmax(1)]
    assert result.calibrated_predictions == [builder.labels[i] for i in (ref / cf).argmax(1)]
    assert all(len(p.demos) == 2 for p in result.prompts) and result.stats.prompts == 6
    assert 0 <= result.accuracy <= 1 and result.summary()["n"] == 3


# ---------------------------------------------------------------------------------------------- annotation


def small_pool(n=40, seed=3):
    from curate.pool import load_pool

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pool = load_pool([{"text": f"item {i}", "label": "a" if x[i, 0] > 0 else "b"} for i in range(n)])
    return pool, x, EmbeddingIndex.from_vectors(x, pool.ids, kind="flat")


def direct_votek(x: np.ndarray, k: int, budget: int, rho: int = 10) -> list[int]:
    """Su et al. (2023) written out: each item votes for its k nearest others; the next pick maximises the
    sum over unselected voters v of rho^-(selected items v votes for); exact fractions, ties to the lowest id."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    votes = [set(np.argsort(-sims[u], kind="stable")[:k].tolist()) for u in range(len(x))]
    chosen: list[int] = []
    for _ in range(budget):
        best, best_score = None, Fraction(-1)
        for v in range(len(x)):
            if v in chosen:
                continue
            score = sum((Fraction(1, rho ** len(votes[u] & set(chosen))) for u in range(len(x))
                         if u not in chosen and v in votes[u]), Fraction(0))
            if score > best_score:
                best, best_score = v, score
        chosen.append(best)
    return chosen


def test_votek_through_the_loop_equals_a_direct_recomputation(tmp_path):
    from curate.paradigms.icl.annotate import plan_annotation, select_and_annotate

    from curate.annotate import GoldAnnotator
    from curate.budget import Ledger, Prices

    pool, x, index = small_pool()
    plan = plan_annotation(AnnotateConfig(strategy="votek", budget=8, params={"k": 4}))
    assert (plan.init_size, plan.rounds) == (8, 1)
    result = select_and_annotate(pool, index, plan, annotator=GoldAnnotator(), classes=["a", "b"], run_dir=tmp_path / "run",
                                 ledger=Ledger(Prices(human_per_label=0.5)))
    expected = direct_votek(x, 4, 8)
    assert sorted(result.labels) == sorted(expected)
    assert all(result.labels[i] == pool.column("label")[i] for i in expected)
    assert result.ledger.spent == pytest.approx(4.0)
    # The loop's own journal holds the selection in pick order.
    from curate.journal import Journal

    journal = Journal(tmp_path / "run" / "journal.sqlite")
    assert journal.rounds()[0].selected.tolist() == expected
    journal.close()


def test_uncertainty_annotation_buys_what_the_lm_is_unsure_of(tmp_path):
    from curate.paradigms.icl.annotate import LMEntropy, plan_annotation, select_and_annotate

    from curate.acquire import PoolState
    from curate.annotate import GoldAnnotator
    from curate.pool import load_pool

    rows = [{"text": f"unsure {i}" if i % 3 == 0 else f"sure {i}", "label": "positive" if i % 2 else "negative"}
            for i in range(12)]
    pool = load_pool(rows)
    unsure = [i for i in range(12) if i % 3 == 0]
    backend = Scripted(p_first={r["text"]: 0.5 if r["text"].startswith("unsure") else 0.95 for r in rows})
    builder = PromptBuilder(REVIEW, ["positive", "negative"])
    emb = HashEmbedder()
    index = EmbeddingIndex.from_vectors(emb.encode(pool.texts()), pool.ids, kind="flat")
    scores = LMEntropy(backend, builder).score(PoolState.of(pool), np.arange(12))
    assert scores[0] == pytest.approx(math.log(2)) and scores[1] == pytest.approx(-(0.95 * math.log(0.95) + 0.05 * math.log(0.05)))
    cfg = AnnotateConfig(strategy="uncertainty", budget=6, rounds=3, init="random", init_size=2, shots=1, subsample=None)
    plan = plan_annotation(cfg, backend=backend, builder=builder)
    result = select_and_annotate(pool, index, plan, annotator=GoldAnnotator(), classes=["positive", "negative"],
                                 run_dir=tmp_path / "u")
    assert len(result.labels) == 6 and set(unsure) <= set(result.labels)
    few_shot = [p for call in backend.option_calls[1:] for p in call]
    assert few_shot and all(p.count("Review: ") == 2 for p in few_shot)  # one nearest labelled demonstration each
    with pytest.raises(ConfigError, match="backend"):
        plan_annotation(cfg)


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_files(tmp_path, tiny_lm_dir, monkeypatch):
    import curate.embed

    monkeypatch.setattr(curate.embed, "load_embedder", lambda *a, **k: HashEmbedder())
    texts = ["the film was wonderful", "the food was cold", "a great phone", "terrible plot", "the cat sat",
             "what is the capital", "numbers 0 1 2", "positive negative", "a boring ending", "long battery life"]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"uid": f"p{i}", "text": t, "label": ["no", "yes"][i % 2]}) + "\n"
                            for i, t in enumerate(texts)))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                            for t, y in [("the film was great", "yes"), ("cold food", "no"), ("the cat", "no")]))
    recipe = tmp_path / "icl.yaml"
    recipe.write_text(f"pool: {{path: {pool}, id_column: uid}}\ninputs: {{path: {test}}}\nlabels: ['no', 'yes']\n"
                      f"lm: {{model: {tiny_lm_dir}, device: cpu}}\n"
                      "prompt: {input_template: 'Q: {text}', answer_template: 'A: {label}'}\n"
                      "retrieve: {k: 2, candidates: 4}\nannotate: {strategy: votek, budget: 4, params: {k: 3}}\n"
                      "annotator: {kind: gold}\nprices: {human_per_label: 0.25}\nevaluate: {content_free: ['N/A']}\n")
    return recipe, pool, test


def parse(add, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def test_cli_select_annotate_eval(cli_files, tmp_path, capsys):
    from curate.paradigms.icl import cli

    recipe, pool, test = cli_files
    out = tmp_path / "prompts.jsonl"
    assert cli.run_select(parse(cli.add_select_arguments, [str(recipe), "--out", str(out)])) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["options"] == [" no", " yes"] and rows[0]["prompt"].endswith("Q: the film was great\nA:")
    assert len(rows[0]["demonstration_ids"]) == 2 and rows[0]["label"] == "yes"
    assert rows[0]["demonstration_keys"] == [f"p{i}" for i in rows[0]["demonstration_ids"]]

    run = tmp_path / "annotated"
    assert cli.run_annotate(parse(cli.add_annotate_arguments, [str(recipe), "--out", str(run)])) == 0
    demos = [json.loads(line) for line in (run / "demonstrations.jsonl").read_text().splitlines()]
    assert len(demos) == 4 and {"id", "text", "label", "uid"} <= set(demos[0])
    assert "votek: 4 of 10 examples annotated" in capsys.readouterr().out
    assert cli.run_annotate(parse(cli.add_annotate_arguments, [str(recipe), "--out", str(run)])) == 0  # resumes
    again = [json.loads(line) for line in (run / "demonstrations.jsonl").read_text().splitlines()]
    assert again == demos

    result = tmp_path / "eval.json"
    argv = [str(recipe), "--pool", str(run / "demonstrations.jsonl"), "--seeds", "0,1", "--out", str(result),
            "--set", "retrieve.method=fixed"]
    assert cli.run_eval(parse(cli.add_eval_arguments, argv)) == 0
    report = json.loads(result.read_text())
    assert len(report["runs"]) == 2 and report["runs"][0]["n"] == 3
    assert 0 <= report["summary"]["accuracy_mean"] <= 1 and "calibrated_accuracy_sd" in report["summary"]
    assert "2 seed(s)" in capsys.readouterr().out


def test_cli_errors_and_register(cli_files, capsys):
    from curate.paradigms.icl import cli

    from curate.cli import main

    recipe, pool, _ = cli_files
    with pytest.raises(ConfigError, match="No test inputs"):
        cli.run_eval(parse(cli.add_eval_arguments, ["--pool", str(pool), "--labels", "no,yes"]))
    assert main(["icl", "select", "--pool", str(pool), "--out", "/tmp/x.jsonl"]) == 2
    assert "No test inputs" in capsys.readouterr().err


RTE_ROWS = [
    ("a man is playing a guitar", "a man plays music", "entailment"),
    ("the cat sleeps on the sofa", "the cat is running", "not_entailment"),
    ("two kids eat apples", "children are eating", "entailment"),
    ("the shop is closed today", "the shop is open", "not_entailment"),
    ("a woman reads a book", "someone is reading", "entailment"),
    ("it rains in the city", "the weather is dry", "not_entailment"),
]


@pytest.fixture
def rte_files(tmp_path, tiny_lm_dir, monkeypatch):
    import curate.embed

    monkeypatch.setattr(curate.embed, "load_embedder", lambda *a, **k: HashEmbedder())
    pool = tmp_path / "rte_train.jsonl"
    pool.write_text("".join(json.dumps({"idx": i, "premise": p, "hypothesis": h, "label": y}) + "\n"
                            for i, (p, h, y) in enumerate(RTE_ROWS)))
    test = tmp_path / "rte_dev.jsonl"
    test.write_text("".join(json.dumps({"premise": p, "hypothesis": h, "label": y}) + "\n" for p, h, y in [
        ("a boy plays the piano", "a boy makes music", "entailment"),
        ("the door is locked", "the door is open", "not_entailment"),
        ("a dog runs in the park", "an animal is outside", "entailment")]))
    recipe = tmp_path / "rte.yaml"
    recipe.write_text(
        f"pool: {{path: {pool}, id_column: idx}}\ninputs: {{path: {test}}}\nlabels: [entailment, not_entailment]\n"
        f"lm: {{model: {tiny_lm_dir}, device: cpu}}\n"
        "prompt:\n  input_template: \"Premise: {premise}\\nHypothesis: {hypothesis}\"\n"
        "  answer_template: 'Answer: {label}'\n  verbalizers: {entailment: 'yes', not_entailment: 'no'}\n"
        "retrieve: {k: 2, candidates: 4}\nannotate: {strategy: votek, budget: 4, params: {k: 2}}\n"
        "annotator: {kind: gold}\nevaluate: {content_free: ['N/A']}\n")
    return recipe, pool, test


def test_cli_icl_eval_on_a_two_field_rte_pool(rte_files, tmp_path, capsys):
    from curate.cli import main

    recipe, pool, test = rte_files
    out = tmp_path / "rte_eval.json"
    assert main(["--quiet", "icl", "eval", str(recipe), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["runs"][0]["n"] == 3 and 0 <= report["summary"]["accuracy_mean"] <= 1
    assert report["config"]["prompt"]["input_template"] == "Premise: {premise}\nHypothesis: {hypothesis}"

    prompts = tmp_path / "rte_prompts.jsonl"
    assert main(["--quiet", "icl", "select", str(recipe), "--out", str(prompts)]) == 0
    row = json.loads(prompts.read_text().splitlines()[1])
    assert row["fields"] == {"premise": "the door is locked", "hypothesis": "the door is open"}
    assert row["prompt"].endswith("Premise: the door is locked\nHypothesis: the door is open\nAnswer:")
    assert row["options"] == [" yes", " no"] and len(row["demonstration_ids"]) == 2
    demo = RTE_ROWS[row["demonstration_ids"][0]]
    assert f"Premise: {demo[0]}\nHypothesis: {demo[1]}\nAnswer: {dict(entailment='yes', not_entailment='no')[demo[2]]}" \
        in row["prompt"]


def test_cli_icl_annotate_keeps_the_template_fields_for_eval(rte_files, tmp_path):
    from curate.cli import main

    recipe, _, _ = rte_files
    run = tmp_path / "rte_run"
    assert main(["--quiet", "icl", "annotate", str(recipe), "--out", str(run)]) == 0
    demos = [json.loads(line) for line in (run / "demonstrations.jsonl").read_text().splitlines()]
    assert len(demos) == 4 and {"premise", "hypothesis", "label", "idx"} <= set(demos[0])
    assert demos[0]["text"] == f"Premise: {demos[0]['premise']}\nHypothesis: {demos[0]['hypothesis']}"
    assert main(["--quiet", "icl", "eval", str(recipe), "--pool", str(run / "demonstrations.jsonl"),
                 "--out", str(tmp_path / "e.json")]) == 0


def test_cli_icl_missing_template_field_fails_before_the_model_loads(rte_files, monkeypatch, capsys):
    import curate.build
    from curate.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the template was checked")

    monkeypatch.setattr(curate.build, "backend_from", no_model)
    recipe, _, _ = rte_files
    code = main(["icl", "eval", str(recipe), "--set", "prompt.input_template=Premise: {premise} Question: {question}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "uses {question}, but the pool" in err and "Columns: idx, premise, hypothesis, label, key." in err


def test_importing_the_paradigm_loads_no_torch():
    code = ("import sys; import curate.paradigms.icl.cli, curate.paradigms.icl.annotate, curate.paradigms.icl.evaluate; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


# ---------------------------------------------------------------------------------------------- real models


@pytest.mark.real
def test_real_smollm2_knn_prompts_score_like_the_plain_loop():
    from curate.backends.hf import TransformersBackend
    from curate.embed import load_embedder
    from curate.pool import load_pool

    pool, test = load_pool("sample:reviews"), load_pool("sample:reviews-test")
    emb = load_embedder()
    index = EmbeddingIndex.from_pool(pool, emb)
    backend = TransformersBackend(device="cpu")
    builder = PromptBuilder.for_backend(REVIEW, ["negative", "positive"], backend)
    retriever = DemonstrationRetriever(RetrieveConfig(k=2, candidates=4), index=index, ids=pool.ids,
                                       labels=pool.column("label"), texts=pool.texts())
    texts, gold = test.texts()[:4], test.column("label")[:4]
    result = evaluate_icl(backend, builder, retriever, texts, gold, emb.encode(texts), content_free=["N/A"])
    reference = plain_full_logits(backend, [p.text for p in result.prompts], builder.options)
    assert result.predictions == [builder.labels[i] for i in reference.argmax(1)]
    assert result.accuracy >= 0.5


# ---------------------------------------------------------------------------------------------- eval outputs


@pytest.fixture
def eval_files(cli_files, tmp_path):
    """cli_files, with test inputs that carry their own id column (``tid``)."""
    recipe, pool, _ = cli_files
    test = tmp_path / "test_ids.jsonl"
    test.write_text("".join(json.dumps({"tid": f"t{i}", "text": t, "label": y}) + "\n" for i, (t, y) in enumerate([
        ("the film was great", "yes"), ("cold food", "no"), ("the cat", "no"), ("a wonderful phone", "yes"),
        ("boring plot", "no")])))
    return recipe, ["--inputs", str(test), "--set", "inputs.id_column=tid"]


def test_eval_config_names_one_result():
    assert EvaluateConfig().result == "dataset" and EvaluateConfig(calibrate=False).result == "raw"
    assert EvaluateConfig(primary="prompt").result == "prompt" and EvaluateConfig(primary="raw").result == "raw"
    with pytest.raises(ConfigError, match="evaluate.primary must be one of raw, prompt, dataset"):
        EvaluateConfig(primary="calibrated")
    with pytest.raises(ConfigError, match="evaluate.calibrate is false"):
        EvaluateConfig(calibrate=False, primary="dataset")


def test_cli_eval_predictions_reproduce_the_totals_and_pair_up(eval_files, tmp_path, capsys):
    from curate.paradigms.icl import cli
    from curate.paradigms.icl.evaluate import ACCURACY_KEYS

    recipe, extra = eval_files
    files = {}
    for method in ("zero_shot", "knn"):
        out = tmp_path / f"{method}.json"
        argv = [str(recipe), *extra, "--seeds", "0,1", "--out", str(out), "--set", f"retrieve.method={method}"]
        assert cli.run_eval(parse(cli.add_eval_arguments, argv)) == 0
        printed = capsys.readouterr().out
        report = json.loads(out.read_text())
        path = tmp_path / f"{method}.predictions.jsonl"
        assert report["predictions"] == str(path)
        rows = [json.loads(line) for line in path.read_text().split("\n") if line]
        assert len(rows) == 2 * 5 and [r["seed"] for r in rows] == [0] * 5 + [1] * 5
        summary = report["summary"]
        assert summary["result"]["calibration"] == "dataset" and summary["result"]["metric"] == "dataset_calibrated_accuracy"
        assert [s["calibration"] for s in summary["secondary"]] == ["raw", "prompt"]
        for run in report["runs"]:
            mine = [r for r in rows if r["seed"] == run["seed"]]
            assert [r["id"] for r in mine] == ["t0", "t1", "t2", "t3", "t4"] and [r["row"] for r in mine] == list(range(5))
            # Exactly the totals: the result from `correct`, each calibration from its predictions.
            assert float(np.mean([r["correct"] for r in mine])) == run["result"] == run["dataset_calibrated_accuracy"]
            for c, key in ACCURACY_KEYS.items():
                assert float(np.mean([r["predictions"][c] == r["label"] for r in mine])) == run[key]
                assert f"{run[key]:.4f}" in printed
            for r in mine:
                assert r["prediction"] == r["predictions"]["dataset"] and set(r["probs"]) == {"raw", "prompt", "dataset"}
                for c, probs in r["probs"].items():
                    assert list(probs) == ["no", "yes"] and math.isclose(sum(probs.values()), 1.0, rel_tol=1e-9)
                    assert max(probs, key=probs.get) == r["predictions"][c]
                assert r["demonstration_keys"] == [f"p{i}" for i in r["demonstration_ids"]]
                assert len(r["demonstration_ids"]) == (0 if method == "zero_shot" else 2)
        mean_of_runs = float(np.mean([run["result"] for run in report["runs"]]))
        assert math.isclose(summary["result"]["mean"], mean_of_runs, rel_tol=1e-12)
        lines = printed.splitlines()
        at = next(i for i, line in enumerate(lines) if "seed(s): result: dataset-calibrated accuracy" in line)
        assert lines[at + 1].startswith("  secondary: raw accuracy") and "uncalibrated" in lines[at + 1]
        assert lines[at + 2].startswith("  secondary: per-prompt calibrated accuracy") and "Zhao" in lines[at + 2]
        assert lines[0].startswith("seed 0: result ")
        files[method] = rows
    # A paired comparison: the same inputs in the same order, so the files pair up row by row.
    zs, knn = files["zero_shot"], files["knn"]
    assert [(r["seed"], r["id"], r["label"]) for r in zs] == [(r["seed"], r["id"], r["label"]) for r in knn]
    table = np.zeros((2, 2), dtype=int)
    for a, b in zip(zs, knn, strict=True):
        table[int(a["correct"]), int(b["correct"])] += 1
    assert table.sum() == 10
    assert table[1].sum() / 10 == float(np.mean([r["correct"] for r in zs]))


def test_cli_eval_primary_raw_and_no_calibration(eval_files, tmp_path, capsys):
    from curate.paradigms.icl import cli

    recipe, extra = eval_files
    argv = [str(recipe), *extra, "--predictions", str(tmp_path / "p" / "raw.jsonl"),
            "--set", "retrieve.method=fixed", "--set", "evaluate.primary=raw"]
    assert cli.run_eval(parse(cli.add_eval_arguments, argv)) == 0
    printed = capsys.readouterr().out
    assert "seed(s): result: raw accuracy" in printed and printed.count("  secondary: ") == 2
    rows = [json.loads(line) for line in (tmp_path / "p" / "raw.jsonl").read_text().split("\n") if line]
    assert all(r["prediction"] == r["predictions"]["raw"] for r in rows)
    assert len({tuple(r["demonstration_ids"]) for r in rows}) == 1  # fixed: one draw for every input

    argv = [str(recipe), *extra, "--out", str(tmp_path / "nocal.json"), "--set", "evaluate.calibrate=false"]
    assert cli.run_eval(parse(cli.add_eval_arguments, argv)) == 0
    printed = capsys.readouterr().out
    assert "result: raw accuracy" in printed and "secondary" not in printed
    rows = [json.loads(line) for line in (tmp_path / "nocal.predictions.jsonl").read_text().split("\n") if line]
    assert set(rows[0]["probs"]) == {"raw"} and "content_free" not in rows[0]
    assert json.loads((tmp_path / "nocal.json").read_text())["summary"]["secondary"] == []


def test_only_knn_embeds(eval_files, tmp_path, monkeypatch):
    from curate.paradigms.icl import cli

    import curate.embed

    recipe, extra = eval_files

    def no_embedder(*args, **kwargs):
        raise AssertionError("the embedder was loaded for a method that does not retrieve by similarity")

    monkeypatch.setattr(curate.embed, "load_embedder", no_embedder)
    for method in ("zero_shot", "random", "fixed"):
        argv = [str(recipe), *extra, "--set", f"retrieve.method={method}"]
        assert cli.run_eval(parse(cli.add_eval_arguments, argv)) == 0
        assert cli.run_select(parse(cli.add_select_arguments, argv + ["--out", str(tmp_path / f"{method}.jsonl")])) == 0
    assert cli.run_eval(parse(cli.add_eval_arguments, [str(recipe), *extra, "--set", "retrieve.k=0"])) == 0

    calls = []

    class Counting(HashEmbedder):
        def encode(self, texts):
            calls.append(len(texts))
            return super().encode(texts)

    monkeypatch.setattr(curate.embed, "load_embedder", lambda *a, **k: Counting())
    assert cli.run_eval(parse(cli.add_eval_arguments, [str(recipe), *extra])) == 0
    assert calls == [10, 5]  # the pool once, the test inputs once
