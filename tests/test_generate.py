"""Generation and rejection sampling: planted duplicates, label flips, the cost cap, coverage."""

from __future__ import annotations

import numpy as np
import pytest

from curate.annotate.base import GoldAnnotator
from curate.backends.base import BaseBackend, Generation, TokenLogprobs
from curate.budget import Ledger, Prices
from curate.errors import ConfigError
from curate.generate import (
    Candidate,
    CascadeAnnotator,
    DuplicateFilter,
    FormatFilter,
    Generator,
    JudgeFilter,
    LabelConsistencyFilter,
    LengthFilter,
    apply_filters,
    clean_generation,
    cluster_pool,
    coverage_report,
    generate_accepted,
)
from curate.generate.filters import FilterReport
from curate.index import EmbeddingIndex
from curate.pool import load_pool


class Words:
    """A bag-of-words embedder at the seam: shared words -> high cosine."""

    name = "words"
    dim = 64

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in t.lower().replace(".", " ").replace("!", " ").split():
                out[r, sum(map(ord, w)) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class Scripted(BaseBackend):
    """Writes the scripted texts in order, 10 input + 5 output tokens each; scores labels by text."""

    name = "scripted"

    def __init__(self, texts=(), p_label=None, p_yes=None):
        super().__init__()
        self.texts = list(texts)
        self.p_label = p_label or {}
        self.p_yes = p_yes or {}

    def chat_prompt(self, messages, *, add_generation_prompt=True):
        return messages[-1]["content"]

    def generate(self, prompts, *, n=1, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=None):
        out = []
        for _ in prompts:
            text = self.texts.pop(0)
            self.usage.add(10, 5, kind="generate")
            out.append([Generation(text, TokenLogprobs(("x",), np.zeros(1)))])
        return out

    def option_logprobs(self, prompts, options, *, normalize=True):
        rows = []
        for p in prompts:
            if options == ["yes", "no"]:
                y = next((v for k, v in self.p_yes.items() if k in p), 0.9)
                rows.append(np.log([y, 1 - y]))
            else:
                pos = next((v for k, v in self.p_label.items() if k in p), 0.5)
                rows.append(np.log([pos, 1 - pos]))
        return np.array(rows)


def test_clean_generation():
    assert clean_generation('\n1. "A lovely film."\nmore') == "A lovely film."
    assert clean_generation("Example: great food") == "great food"
    assert clean_generation("   \n") == ""


def test_planted_duplicates_are_removed():
    pool_texts = ["the cat sat on the mat", "stocks fell sharply today"]
    index = EmbeddingIndex.from_vectors(Words().encode(pool_texts), kind="flat")
    dup = DuplicateFilter(Words(), threshold=0.8, pool_texts=pool_texts, index=index)
    batch = [Candidate("The cat sat on the mat!"),        # exact after normalising
             Candidate("the cat sat on a mat"),            # near the pool
             Candidate("a brand new sentence about rain"),
             Candidate("A brand new sentence about rain.")]  # duplicate of the one just accepted
    report = FilterReport()
    kept = apply_filters(batch, [dup], report)
    assert [c.text for c in kept] == ["a brand new sentence about rain"]
    assert report.reasons["duplicate"] == {"exact duplicate": 2, "near duplicate of the pool": 1}


def test_planted_label_flip_is_rejected():
    backend = Scripted(p_label={"wonderful": 0.95, "awful": 0.1})
    f = LabelConsistencyFilter(backend, ["positive", "negative"], threshold=0.6)
    verdicts = f.check([Candidate("a wonderful day", "positive"), Candidate("an awful day", "positive"),
                        Candidate("an awful day", "negative"), Candidate("unlabelled text")])
    assert verdicts[0] is None and verdicts[2] is None and verdicts[3] is None
    assert verdicts[1].startswith("LM gives its label p=0.10")
    with pytest.raises(ConfigError, match="not one of"):
        f.check([Candidate("x", "neutral")])


def test_label_consistency_is_calibrated_against_the_lms_label_bias():
    # An LM that says 'positive' 90 % of the time to a content-free input: raw probabilities keep a
    # mildly positive text as 'positive' and reject a mildly negative one; calibrated, the reverse.
    backend = Scripted(p_label={"N/A": 0.9, "Text: \n": 0.9, "[MASK]": 0.9, "fine": 0.6, "meh": 0.7})
    raw = LabelConsistencyFilter(backend, ["positive", "negative"], threshold=0.5, chat=False, calibrate=False)
    fair = LabelConsistencyFilter(backend, ["positive", "negative"], threshold=0.5, chat=False)
    cands = [Candidate("a fine day", "positive"), Candidate("a meh day", "negative")]
    assert raw.check(cands)[0] is None and raw.check(cands)[1] is not None
    assert fair.prior() == pytest.approx([0.9, 0.1])
    verdicts = fair.check(cands)
    assert verdicts[0].startswith("LM gives its label p=0.14") and verdicts[1] is None  # 0.3/0.1 vs 0.7/0.9
    # Batch calibration: the prior is the mean prediction over real texts of the task.
    batch = LabelConsistencyFilter(backend, ["positive", "negative"], chat=False,
                                   reference_texts=["ref fine one", "ref meh two"])
    assert batch.prior() == pytest.approx([0.65, 0.35])
    # 'fine': 0.6/0.65 vs 0.4/0.35 -> p(positive) 0.45; 'meh': 0.3/0.35 vs 0.7/0.65 -> p(negative) 0.44.
    assert [v[:25] for v in batch.check(cands)] == ["LM gives its label p=0.45", "LM gives its label p=0.44"]


def test_length_format_and_judge():
    cands = [Candidate("short"), Candidate("Sure, here is an example of a review"), Candidate("Label: positive review text"),
             Candidate("A fine, ordinary sentence."), Candidate("A spammy sentence with nothing in it.")]
    report = FilterReport()
    judge = JudgeFilter(Scripted(p_yes={"spammy": 0.2}), threshold=0.5)
    kept = apply_filters(cands, [LengthFilter(min_chars=10), FormatFilter(), judge], report)
    assert [c.text for c in kept] == ["A fine, ordinary sentence."]
    assert report.rejected == {"length": 1, "format": 2, "judge": 1}
    assert "acceptance" in report.describe()


def test_cost_cap_stops_generation_exactly():
    backend = Scripted(texts=[f"distinct sentence number {i} here" for i in range(50)])
    gen = Generator(backend, chat=False)
    ledger = Ledger(Prices(llm_input_per_million=1e6, llm_output_per_million=1e6), budget=100.0)  # 1.0 per token
    result = generate_accepted(lambda n, rng: gen.for_labels("reviews", ["positive", "negative"], n, rng=rng),
                               [LengthFilter()], target=40, rng=np.random.default_rng(0), backends=[backend],
                               ledger=ledger, worst_case_micros=15_000_000, batch_size=4)
    # 15 per candidate: 4 (60) + 2 (90); a seventh would cross 100.
    assert len(result.accepted) == 6 and result.ledger.spent == pytest.approx(90.0)
    assert result.ledger.spent <= 100.0 and result.stop_reason.startswith("cost cap reached")
    with pytest.raises(ConfigError, match="worst_case_micros"):
        generate_accepted(lambda n, rng: [], [], 1, rng=np.random.default_rng(0), ledger=Ledger(budget=1.0))


def test_target_reached_and_labels_balanced():
    backend = Scripted(texts=[f"generated text {i} about life" for i in range(20)])
    gen = Generator(backend, chat=False)
    result = generate_accepted(lambda n, rng: gen.for_labels("t", ["a", "b", "c"], n, rng=rng), [LengthFilter()], 9,
                               rng=np.random.default_rng(0), batch_size=3)
    assert len(result.accepted) == 9 and result.stop_reason == "9 accepted"
    assert sorted(c.label for c in result.accepted) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3


def test_coverage_steers_to_unlabelled_clusters():
    rng = np.random.default_rng(0)
    centers = np.eye(4) * 5
    x = np.vstack([c + rng.normal(size=(25, 4)) * 0.1 for c in centers])
    index = EmbeddingIndex.from_vectors(x, kind="flat")
    labelled = {i: "a" for i in range(0, 25)} | {i: "b" for i in range(25, 30)} | {30: "a"}
    report = coverage_report(index, labelled, clusters=4, rng=np.random.default_rng(1))
    assert len(report["unlabelled"]) == 2 and {r.size for r in report["unlabelled"]} == {25}
    assert len(report["skewed"]) == 1 and report["skewed"][0].label_counts == {"a": 25}
    pool = load_pool([{"text": f"item {i}"} for i in range(100)])
    backend = Scripted(texts=[f"new text {i} written here" for i in range(4)])
    cands = Generator(backend, chat=False).coverage(pool, index, list(labelled), 4, rng=np.random.default_rng(2),
                                                    clusters=4)
    near = {i for c in cands for i in c.meta["near_ids"]}
    assert near and all(i >= 50 for i in near)  # examples come from the clusters with no labels
    clusters = cluster_pool(index, [], clusters=4, rng=np.random.default_rng(1))
    assert sum(c.size for c in clusters) == 100


def test_cluster_central_ids_are_nearest_the_centroid_on_an_unnormalised_index():
    # Blob A's mean is (5, 0): rows 1 and 3 are nearest it, row 2 has the largest inner product with
    # it; in blob B the largest inner product is row 5's, the nearest row 4's.
    a = [[4.0, 0.0], [5.0, 0.1], [6.0, 0.0], [5.0, -0.1]]
    b = [[-5.0, 0.0], [-5.1, 0.1], [-4.9, 0.0]]
    index = EmbeddingIndex.from_vectors(np.array(a + b), kind="flat", normalize=False)
    reports = cluster_pool(index, [1], clusters=2, rng=np.random.default_rng(0))
    by_size = {r.size: r for r in reports}
    assert sorted(by_size) == [3, 4]
    assert by_size[4].central_ids.tolist()[:2] == [1, 3] and by_size[4].labelled == 1
    assert by_size[3].central_ids.tolist() == [4, 6, 5]  # from (-5, 0.033): 0.001, 0.011, 0.014


def test_cascade_screens_before_the_strong_annotator():
    pool = load_pool([{"text": t, "label": lab} for t, lab in [("good clean text", "a"), ("spammy junk", "b"),
                                                                ("another fine one", "a")]])
    screen_backend = Scripted(p_yes={"spammy": 0.1})
    cascade = CascadeAnnotator(JudgeFilter(screen_backend, threshold=0.5), GoldAnnotator(), screen_backend=screen_backend)
    out = list(cascade.annotate(pool, np.array([0, 1, 2])))
    labelled = {a.item_id: a.label for a in out if a.ok}
    assert labelled == {0: "a", 2: "a"}
    assert [a.note for a in out if a.source == "screen"][1].startswith("screened out")


def test_generator_with_a_real_tiny_lm(tiny_backend):
    gen = Generator(tiny_backend, max_new_tokens=8)
    a = gen.for_labels("sentiment", ["positive", "negative"], 4, rng=np.random.default_rng(3))
    b = gen.for_labels("sentiment", ["positive", "negative"], 4, rng=np.random.default_rng(3))
    assert [c.text for c in a] == [c.text for c in b] and [c.label for c in a] == ["positive", "negative"] * 2
    seeds = gen.instructions(["Write a poem.", "Sum two numbers.", "Name a city."], 2, rng=np.random.default_rng(0))
    assert len(seeds) == 2 and all(c.source == "self_instruct" for c in seeds)
