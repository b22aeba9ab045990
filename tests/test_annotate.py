"""Annotators: the LLM (a scripted backend at the seam and the real tiny model), people through
files, and the hybrid that routes between them."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from curate.annotate.base import Annotation, AwaitingHumanLabels, GoldAnnotator
from curate.annotate.human import HumanQueueAnnotator, export_batch, import_answers, read_batch
from curate.annotate.hybrid import ROUTED, HybridAnnotator, agreement, calibrate_threshold
from curate.annotate.llm import LLMAnnotator, parse_label, split_tokens
from curate.backends.base import Generation, TokenLogprobs, Usage
from curate.budget import Prices
from curate.errors import ConfigError, DataError
from curate.index import EmbeddingIndex
from curate.pool import load_pool
from curate.stopping import cohen_kappa

LABELS = ["positive", "negative"]
PRICES = Prices(human_per_label=0.1, llm_input_per_million=2.0, llm_output_per_million=8.0)


def make_pool(n: int = 8, **extra):
    rows = [{"text": f"item {i} text", "label": LABELS[i % 2], **{k: v[i] for k, v in extra.items()}} for i in range(n)]
    return load_pool(rows)


def item_block(prompt: str) -> str:
    """The item's own block: the last paragraph of the prompt, without the chat wrapping."""
    return prompt.rsplit("\n\n", 1)[-1].removesuffix("<assistant>").removesuffix("\nAnswer:")


class ScriptedBackend:
    """The LM seam with option probabilities chosen per item text; bills a known number of tokens
    (under the annotator's character-based estimate, as a real tokenizer would be)."""

    name = "scripted"

    def __init__(self, probs: dict[str, list[float]], default=(0.5, 0.5)) -> None:
        self.probs = probs
        self.default = list(default)
        self.usage = Usage()
        self.prompts: list[str] = []
        self.calls: list[tuple[int, int]] = []  # (prompts, billed input tokens) per call

    def chat_prompt(self, messages, *, add_generation_prompt=True):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def option_logprobs(self, prompts, options, *, normalize=True):
        self.prompts += list(prompts)
        billed = sum(len(p) // 4 + len(o) // 4 + 1 for p in prompts for o in options)
        self.usage.add(billed, 0, kind="options")
        self.calls.append((len(prompts), billed))
        rows = [self.probs.get(item_block(p), self.default) for p in prompts]
        return np.log(np.asarray(rows, dtype=np.float64))


class GeneratingBackend:
    """A backend without option scoring: answers are scripted per item text."""

    name = "generating"

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.usage = Usage()

    def chat_prompt(self, messages, *, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def generate(self, prompts, *, n=1, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=None):
        out = []
        for p in prompts:
            text = self.answers[item_block(p)]
            tokens = tuple(text.split())[:max_new_tokens]
            out.append([Generation(text, TokenLogprobs(tokens, np.full(len(tokens), math.log(0.9))))])
        self.usage.add(sum(len(p) // 4 for p in prompts), sum(len(g[0].logprobs.tokens) for g in out))
        return out


# ------------------------------------------------------------------------------------ parse_label


@pytest.mark.parametrize(("answer", "expected"), [
    ("positive", "positive"), ("  Positive. ", "positive"), ("NEGATIVE", "negative"), ('"negative"', "negative"),
    ("positive, because it is glowing", "positive"), ("neg", "negative"),
    ("neutral", None), ("maybe", None), ("", None), (None, None), ("positively", None),
    ("positive or negative", None) ,
])
def test_parse_label_matches_one_label_or_fails(answer, expected):
    assert parse_label(answer, LABELS) == expected


def test_parse_label_never_guesses_between_two_labels():
    assert parse_label("good", ["good", "good enough"]) == "good"
    assert parse_label("good enough", ["good", "good enough"]) == "good enough"
    assert parse_label("goo", ["good", "good enough"]) is None


def test_split_tokens_sums_exactly():
    assert split_tokens(10, [1, 1, 1]) == [4, 3, 3]
    assert split_tokens(7, [0, 0]) == [4, 3]
    assert split_tokens(100, [10, 30, 60]) == [10, 30, 60]
    for total in range(0, 50):
        parts = split_tokens(total, [3, 5, 7, 11])
        assert sum(parts) == total and min(parts) >= 0


# ------------------------------------------------------------------------------------ LLM: scripted seam


def test_llm_picks_the_most_probable_option_with_its_probability_as_confidence():
    pool = make_pool(4)
    backend = ScriptedBackend({"item 0 text": [0.9, 0.1], "item 1 text": [0.2, 0.8], "item 2 text": [0.6, 0.4]})
    ann = LLMAnnotator(backend, LABELS, instruction="Sentiment?", batch_size=3)
    out = list(ann.annotate(pool, np.arange(4)))
    assert [a.item_id for a in out] == [0, 1, 2, 3]
    assert [a.label for a in out] == ["positive", "negative", "positive", "positive"]
    assert [a.source for a in out] == ["llm"] * 4
    np.testing.assert_allclose([a.confidence for a in out], [0.9, 0.8, 0.6, 0.5])
    assert all(a.human_labels == 0 for a in out)
    assert backend.prompts[0].startswith("<user>Sentiment?\nAnswer with one of: positive, negative.")


def test_llm_tokens_per_item_sum_to_each_batch_delta():
    pool = make_pool(7)
    backend = ScriptedBackend({})
    backend.usage.add(1000, 5)  # usage from earlier work is not billed to these items
    ann = LLMAnnotator(backend, LABELS, instruction="Sentiment?", batch_size=3)
    out = list(ann.annotate(pool, np.arange(7)))
    batches = [out[0:3], out[3:6], out[6:7]]
    assert [len(b) for b in batches] == [n for n, _ in backend.calls]
    for batch, (_, billed) in zip(batches, backend.calls, strict=True):
        assert sum(a.input_tokens for a in batch) == billed
        assert sum(a.output_tokens for a in batch) == 0
    assert sum(a.input_tokens for a in out) == backend.usage.input_tokens - 1000


def test_llm_annotations_are_yielded_batch_by_batch():
    pool = make_pool(6)
    backend = ScriptedBackend({})
    stream = LLMAnnotator(backend, LABELS, instruction="Sentiment?", batch_size=2).annotate(pool, np.arange(6))
    next(stream)
    assert len(backend.calls) == 1
    next(stream)
    next(stream)
    assert len(backend.calls) == 2


def test_llm_answer_outside_the_label_set_is_a_failure():
    pool = make_pool(3)
    backend = GeneratingBackend({"item 0 text": "Negative.", "item 1 text": "neutral", "item 2 text": "no idea"})
    ann = LLMAnnotator(backend, LABELS, instruction="Sentiment?", max_output_tokens=4)
    out = list(ann.annotate(pool, np.arange(3)))
    assert [a.label for a in out] == ["negative", None, None]
    assert not out[1].ok and "unparseable answer 'neutral'" in out[1].note
    assert out[0].confidence == pytest.approx(0.9)
    assert out[1].confidence is None
    assert sum(a.output_tokens for a in out) == backend.usage.output_tokens == 1 + 1 + 2
    assert [a.output_tokens for a in out] == [1, 1, 2]


def test_llm_verbalizers_are_what_the_model_answers_with():
    pool = make_pool(2)
    backend = GeneratingBackend({"item 0 text": "good", "item 1 text": "bad"})
    ann = LLMAnnotator(backend, LABELS, instruction="Sentiment?", verbalizers={"positive": "good", "negative": "bad"})
    assert [a.label for a in ann.annotate(pool, np.arange(2))] == ["positive", "negative"]


def test_few_shot_retrieval_picks_the_planted_nearest_labelled_neighbours():
    pool = make_pool(8)
    angles = {0: 0.0, 1: 0.5, 2: 1.0, 3: 2.0, 4: 3.0, 5: 4.0, 6: 0.9, 7: 2.1}  # radians on a circle
    vectors = np.array([[math.cos(angles[i]), math.sin(angles[i])] for i in range(8)], dtype=np.float32)
    index = EmbeddingIndex.from_vectors(vectors, np.arange(8))
    labeled = {0: "positive", 1: "negative", 2: "positive", 3: "negative", 4: "positive", 5: "negative"}
    backend = ScriptedBackend({})
    ann = LLMAnnotator(backend, LABELS, instruction="Sentiment?", shots=2, index=index, chat=False)
    out = list(ann.annotate(pool, np.array([6, 7]), labeled=labeled))
    assert len(out) == 2
    six, seven = backend.prompts
    # item 6 (0.9 rad): nearest labelled are 2 (1.0) then 1 (0.5); the nearest is placed last.
    assert "item 1 text\nAnswer: negative\n\nitem 2 text\nAnswer: positive\n\nitem 6 text\nAnswer:" in six
    assert six.count("Answer: ") == 2
    # item 7 (2.1 rad): 3 (2.0) then 4 (3.0).
    assert "item 4 text\nAnswer: positive\n\nitem 3 text\nAnswer: negative\n\nitem 7 text\nAnswer:" in seven


def test_few_shot_never_uses_the_item_itself_and_skips_unknown_labels():
    pool = make_pool(4)
    vectors = np.eye(4, dtype=np.float32) + 0.1
    index = EmbeddingIndex.from_vectors(vectors, np.arange(4))
    backend = ScriptedBackend({})
    ann = LLMAnnotator(backend, LABELS, instruction="Sentiment?", shots=3, index=index, chat=False)
    list(ann.annotate(pool, np.array([0]), labeled={0: "positive", 1: "negative", 2: "other"}))
    assert "item 0 text\nAnswer: positive" not in backend.prompts[0]
    assert "item 1 text\nAnswer: negative" in backend.prompts[0]
    assert "item 2 text" not in backend.prompts[0]


def test_few_shot_without_an_index_uses_the_first_labelled_examples():
    pool = make_pool(6)
    backend = ScriptedBackend({})
    ann = LLMAnnotator(backend, LABELS, instruction="Sentiment?", shots=2, chat=False)
    list(ann.annotate(pool, np.array([5]), labeled={3: "negative", 0: "positive", 1: "negative"}))
    assert "item 3 text\nAnswer: negative\n\nitem 0 text\nAnswer: positive\n\nitem 5 text" in backend.prompts[0]
    assert "item 1 text" not in backend.prompts[0]


def test_long_prompts_drop_shots_first_then_cut_the_text_to_the_bound():
    long_text = "word " * 400
    pool = load_pool([{"text": "short one"}, {"text": "short two"}, {"text": long_text}, {"text": "query"}])
    backend = ScriptedBackend({})
    # Each option pass over a prompt of c characters is estimated at ceil(c / 3) + 2 + option tokens:
    # 92 tokens with both shots, 74 with the nearer one.
    ann = LLMAnnotator(backend, LABELS, instruction="Sentiment?", shots=2, chat=False, max_input_tokens=80)
    out = list(ann.annotate(pool, np.array([3, 2]), labeled={0: "positive", 1: "negative"}))
    query_prompt, long_prompt = backend.prompts
    assert query_prompt.count("Answer: ") == 1 and "short two" in query_prompt and "short one" not in query_prompt
    assert out[0].note == "dropped 1 shot(s) to fit max_input_tokens"
    assert "Answer: " not in long_prompt and "text cut to" in out[1].note
    for prompt in backend.prompts:
        assert ann._billed(prompt) <= 80
    assert all(a.input_tokens <= 80 for a in out)
    with pytest.raises(ConfigError, match="max_input_tokens=5 is too small"):
        list(LLMAnnotator(backend, LABELS, instruction="Sentiment?", max_input_tokens=5).annotate(pool, [0]))


def test_llm_worst_case_is_the_token_bound():
    ann = LLMAnnotator(ScriptedBackend({}), LABELS, instruction="x", max_input_tokens=1000, max_output_tokens=10)
    assert ann.worst_case_micros(PRICES) == PRICES.micros(input_tokens=1000, output_tokens=10)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"labels": ["a"]}, "at least two labels"),
    ({"labels": ["a", "a"]}, "distinct"),
    ({"template": "no field"}, "must contain '{text}'"),
    ({"template": "{text} {other}"}, "may only use the field"),
    ({"shots": -1}, "'shots' parameter"),
    ({"batch_size": 0}, "'batch_size' parameter"),
    ({"verbalizers": {"pos": "good"}}, "unknown label"),
    ({"verbalizers": {"positive": "x", "negative": "x"}}, "distinct"),
    ({"instruction": " "}, "'instruction' parameter"),
])
def test_llm_bad_parameters_are_config_errors(kwargs, message):
    params = {"labels": LABELS, "instruction": "Sentiment?"} | kwargs
    with pytest.raises(ConfigError, match=message):
        LLMAnnotator(ScriptedBackend({}), params.pop("labels"), **params)


# ------------------------------------------------------------------------------------ LLM: real tiny model


@pytest.mark.parametrize(("labels", "chat", "shots", "max_in"), [
    (["positive", "negative"], True, 2, 200),  # a multi-token option: scored one option at a time
    (["yes", "no"], True, 1, 90),              # single-token options: one pass per prompt
    (["positive", "negative"], False, 0, 150),
])
def test_tiny_model_labels_within_the_set_and_the_bound(tiny_backend, labels, chat, shots, max_in):
    texts = ["the film was wonderful and moving", "the food was cold and the service rude",
             "a great phone with a long battery life", "terrible plot and a boring ending",
             "the cat sat on the mat " * 12]
    pool = load_pool([{"text": t} for t in texts])
    rng = np.random.default_rng(0)
    index = EmbeddingIndex.from_vectors(rng.normal(size=(5, 8)).astype(np.float32), np.arange(5))
    ann = LLMAnnotator(tiny_backend, labels, instruction="Does the text sound good?", shots=shots, index=index,
                       chat=chat, batch_size=2, max_input_tokens=max_in)
    before = tiny_backend.usage.input_tokens
    out = list(ann.annotate(pool, np.array([2, 3, 4]), labeled={0: labels[0], 1: labels[1]}))
    assert [a.item_id for a in out] == [2, 3, 4]
    assert all(a.label in labels and 0.5 <= a.confidence <= 1.0 for a in out)
    assert sum(a.input_tokens for a in out) == tiny_backend.usage.input_tokens - before > 0
    assert all(0 < a.input_tokens <= max_in for a in out)
    assert all(a.output_tokens == 0 for a in out)
    assert "text cut to" in out[2].note  # the long text had to be cut to fit
    worst = ann.worst_case_micros(PRICES)
    assert all(PRICES.micros(input_tokens=a.input_tokens, output_tokens=a.output_tokens) <= worst for a in out)


def test_tiny_model_generation_path_parses_or_fails(tiny_backend):
    class GenerateOnly:  # hide option scoring: the annotator falls back to generate + parse_label
        def __init__(self, inner):
            self.inner, self.usage, self.name = inner, inner.usage, "gen-only"
            self.tokenizer = inner.tokenizer

        def generate(self, *args, **kwargs):
            return self.inner.generate(*args, **kwargs)

        def chat_prompt(self, *args, **kwargs):
            return self.inner.chat_prompt(*args, **kwargs)

    pool = load_pool([{"text": "the film was wonderful"}, {"text": "the food was cold"}])
    backend = GenerateOnly(tiny_backend)
    ann = LLMAnnotator(backend, ["yes", "no"], instruction="Good?", max_output_tokens=3, max_input_tokens=80)
    before_in, before_out = backend.usage.input_tokens, backend.usage.output_tokens
    out = list(ann.annotate(pool, np.arange(2)))
    assert all(a.label in ("yes", "no", None) for a in out)
    assert all((a.label is None) == (a.confidence is None) for a in out)
    assert sum(a.input_tokens for a in out) == backend.usage.input_tokens - before_in
    assert sum(a.output_tokens for a in out) == backend.usage.output_tokens - before_out
    assert all(a.input_tokens <= 80 and a.output_tokens <= 3 for a in out)


# ------------------------------------------------------------------------------------ people: files


def fill_answers(batch, fmt, path, answers):
    """Write people's answers for an exported batch, in the format they would come back in."""
    items = read_batch(batch)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": t, "label": answers.get(i)}) + "\n" for i, t in items))
    elif fmt == "csv":
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text", "label"])
            writer.writerows([i, t, answers.get(i, "")] for i, t in items)
    else:
        tasks = json.loads(batch.read_text())
        for n, task in enumerate(tasks):
            task["id"] = 100 + n  # Label Studio's own task id
            label = answers.get(task["data"]["curate_id"])
            result = [] if label is None else [{"from_name": "label", "to_name": "text", "type": "choices",
                                                "value": {"choices": [label]}}]
            task["annotations"] = [{"id": 1, "result": result, "was_cancelled": False, "ground_truth": False}]
        path.write_text(json.dumps(tasks))


@pytest.mark.parametrize(("fmt", "suffix"), [("jsonl", ".jsonl"), ("csv", ".csv"), ("labelstudio", ".json")])
def test_export_import_round_trip(tmp_path, fmt, suffix):
    pool = load_pool([{"text": 'plain'}, {"text": 'a "quoted", comma text'}, {"text": "two\nlines é"}, {"text": "x"}])
    batch = export_batch(pool, [2, 0, 1], tmp_path / f"batch{suffix}", labels=LABELS, fmt=fmt)
    assert read_batch(batch) == [(2, "two\nlines é"), (0, "plain"), (1, 'a "quoted", comma text')]
    answers = tmp_path / f"answers{suffix}"
    fill_answers(batch, fmt, answers, {2: "negative", 0: "positive"})  # item 1 not answered yet
    assert import_answers(answers, labels=LABELS, ids=range(4)) == {2: "negative", 0: "positive"}


def test_label_studio_export_is_task_import_json_with_a_config(tmp_path):
    pool = make_pool(2)
    path = export_batch(pool, [1, 0], tmp_path / "ls.json", labels=LABELS, fmt="labelstudio")
    assert json.loads(path.read_text()) == [{"data": {"text": "item 1 text", "curate_id": 1}},
                                            {"data": {"text": "item 0 text", "curate_id": 0}}]
    config = (tmp_path / "ls.xml").read_text()
    assert '<Text name="text" value="$text"/>' in config and '<Choice value="negative"/>' in config


def test_int_labels_round_trip_through_text_files(tmp_path):
    path = tmp_path / "answers.csv"
    path.write_text("id,label\n0,1\n1,0\n")
    assert import_answers(path, labels=[0, 1]) == {0: 1, 1: 0}


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(("name", "content", "message"), [
    ("a.jsonl", '{"id": 0, "label": "positive"}\n{"id": 1, "label": "postive"}\n',
     r"a\.jsonl:2: field 'label': unknown label 'postive'.*Did you mean 'positive'"),
    ("a.jsonl", '{"id": 0, "label": "positive"}\n\n{"id": 0, "label": "negative"}\n',
     r"a\.jsonl:3: duplicate id 0 \(first answered at .*a\.jsonl:1\)"),
    ("a.jsonl", '{"id": 0, "label": "positive"}\n{"id": 1, "label": \n', r"a\.jsonl:2: malformed JSON"),
    ("a.jsonl", '{"id": 99, "label": "positive"}\n', r"a\.jsonl:1: unknown id 99"),
    ("a.jsonl", '{"id": "x", "label": "positive"}\n', r"a\.jsonl:1: field 'id' must be an integer id"),
    ("a.jsonl", '{"label": "positive"}\n', r"a\.jsonl:1: missing field\(s\) \['id'\]"),
    ("a.jsonl", '[1, 2]\n', r"a\.jsonl:1: expected a JSON object"),
    ("a.csv", "id,label\n0,positive\n1,negative,extra\n", r"a\.csv:3: expected 2 fields"),
    ("a.csv", "id,label\n0,positive\n2,neutral\n", r"a\.csv:3: field 'label': unknown label 'neutral'"),
    ("a.csv", "id,text\n0,hello\n", r"a\.csv:2: missing field\(s\) \['label'\]"),
    ("a.csv", "", r"a\.csv: the file is empty"),
    ("a.json", '[{"id": 7, "data": {"text": "t"}, "annotations": []}]',
     r"a\.json: task 1 \(Label Studio id 7\): no 'data.curate_id'"),
    ("a.json", '[{"data": {"curate_id": 0}, "annotations": [{"result": [{"value": {"choices": ["neutral"]}}]}]}]',
     r"a\.json: task 1: field 'annotations\[\]\.result\[\]\.value\.choices': unknown label 'neutral'"),
    ("a.json", '[{"data": {"curate_id": 0}, "annotations": [{"result": [{"value": {"choices": ["positive"]}}]},'
               ' {"result": [{"value": {"choices": ["negative"]}}]}]}]', r"task 1: annotators disagree"),
    ("a.json", '{"tasks": []}', r"a\.json: expected a JSON list of Label Studio tasks"),
    ("a.txt", "", r"cannot tell the format from the suffix '\.txt'"),
])
def test_import_errors_name_file_line_and_field(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError, match=message):
        import_answers(path, labels=LABELS, ids=range(4))


def test_label_studio_import_skips_cancelled_and_prefers_ground_truth(tmp_path):
    def ann(choice, **kw):
        return {"result": [{"type": "choices", "value": {"choices": [choice]}}], **kw}

    tasks = [
        {"id": 1, "data": {"curate_id": 0}, "annotations": [ann("negative", was_cancelled=True), ann("positive")]},
        {"id": 2, "data": {"curate_id": 1}, "annotations": [ann("positive"), ann("negative", ground_truth=True)]},
        {"id": 3, "data": {"curate_id": 2}, "annotations": [ann("negative"), ann("negative")]},
        {"id": 4, "data": {"curate_id": 3}, "annotations": []},
        {"id": 5, "data": {"curate_id": 4}, "completions": [ann("positive")]},  # Label Studio before 1.0
    ]
    path = write(tmp_path / "export.json", json.dumps(tasks))
    assert import_answers(path, labels=LABELS) == {0: "positive", 1: "negative", 2: "negative", 4: "positive"}


# ------------------------------------------------------------------------------------ people: the queue


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "labelstudio"])
def test_queue_waits_for_people_then_yields_their_answers(tmp_path, fmt):
    pool = make_pool(6)
    queue = tmp_path / "queue"
    human = HumanQueueAnnotator(queue, labels=LABELS, fmt=fmt)
    ids = np.array([4, 1, 3])
    with pytest.raises(AwaitingHumanLabels) as waiting:
        list(human.annotate(pool, ids))
    batch = human.batch_path(ids)
    assert waiting.value.path == str(batch) and waiting.value.count == 3
    assert [i for i, _ in read_batch(batch)] == [4, 1, 3]
    exported = batch.read_text()

    suffix = {"jsonl": ".jsonl", "csv": ".csv", "labelstudio": ".json"}[fmt]
    fill_answers(batch, fmt, queue / f"answers-1{suffix}", {1: "negative"})
    got = []
    with pytest.raises(AwaitingHumanLabels) as waiting:
        for a in human.annotate(pool, ids):
            got.append(a)
    assert got == [Annotation(1, "negative", "human", None, human_labels=1)]
    assert waiting.value.count == 2
    assert batch.read_text() == exported and len(list(queue.glob("batch-*" + suffix))) == 1  # exported once

    fill_answers(batch, fmt, queue / f"answers-2{suffix}", {4: "positive", 3: "negative"})
    out = list(human.annotate(pool, ids))
    assert [(a.item_id, a.label, a.human_labels, a.source) for a in out] == [
        (4, "positive", 1, "human"), (1, "negative", 1, "human"), (3, "negative", 1, "human")]
    assert human.worst_case_micros(PRICES) == 100_000


def test_queue_rejects_conflicting_answers_across_files(tmp_path):
    write(tmp_path / "answers-a.jsonl", '{"id": 0, "label": "positive"}\n')
    write(tmp_path / "answers-b.csv", "id,label\n0,negative\n")
    with pytest.raises(DataError, match="id 0 is labelled 'positive' in .*answers-a.jsonl but 'negative' in"):
        list(HumanQueueAnnotator(tmp_path, labels=LABELS).annotate(make_pool(2), [0]))


def test_queue_bad_format_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'fmt' parameter of HumanQueueAnnotator"):
        HumanQueueAnnotator(tmp_path, labels=LABELS, fmt="xlsx")


# ------------------------------------------------------------------------------------ hybrid


def scripted_llm(probs, **kwargs):
    return LLMAnnotator(ScriptedBackend(probs), LABELS, instruction="Sentiment?", batch_size=4, **kwargs)


def test_hybrid_routes_below_threshold_to_people_with_exact_counts():
    pool = make_pool(8)  # gold: even ids positive, odd ids negative
    probs = {"item 0 text": [0.95, 0.05], "item 1 text": [0.1, 0.9], "item 2 text": [0.8, 0.2],
             "item 3 text": [0.3, 0.7], "item 4 text": [0.55, 0.45], "item 5 text": [0.6, 0.4],
             "item 6 text": [0.5, 0.5], "item 7 text": [0.05, 0.95]}
    hybrid = HybridAnnotator(scripted_llm(probs), GoldAnnotator(), threshold=0.8)
    out = list(hybrid.annotate(pool, np.arange(8)))
    labelled = [a for a in out if a.ok]
    assert sorted(a.item_id for a in labelled) == list(range(8))  # exactly one labelled record per id
    assert {a.item_id for a in labelled if a.source == "llm"} == {0, 1, 2, 7}
    routed = [a for a in out if not a.ok]
    assert [a.item_id for a in routed] == [3, 4, 5, 6]
    assert all(a.note == ROUTED and a.source == "llm" and a.input_tokens > 0 for a in routed)
    assert sum(a.human_labels for a in out) == 4
    assert {a.item_id: a.label for a in labelled} == {i: LABELS[i % 2] for i in range(8)}
    assert hybrid.worst_case_micros(PRICES) == (scripted_llm({}).worst_case_micros(PRICES) + 100_000)


def test_hybrid_verifier_keeps_agreeing_labels_and_routes_the_rest():
    pool = make_pool(4)
    llm = scripted_llm({"item 0 text": [0.9, 0.1], "item 1 text": [0.6, 0.4], "item 2 text": [0.4, 0.6],
                        "item 3 text": [0.3, 0.7]})
    verifier = scripted_llm({"item 1 text": [0.7, 0.3], "item 2 text": [0.7, 0.3], "item 3 text": [0.2, 0.8]})
    out = list(HybridAnnotator(llm, GoldAnnotator(), threshold=0.8, verifier=verifier).annotate(pool, np.arange(4)))
    labelled = {a.item_id: a for a in out if a.ok}
    assert sorted(labelled) == [0, 1, 2, 3] and sum(a.ok for a in out) == 4
    assert labelled[0].source == "llm" and labelled[0].note == ""
    assert labelled[1].note == labelled[3].note == "verified: agrees with llm"
    assert labelled[2].source == "human"  # the verifier disagreed: a person (gold stand-in) decided
    notes = [(a.item_id, a.note) for a in out if not a.ok]
    assert notes == [(1, "below threshold; sent to verifier"), (2, "below threshold; sent to verifier"),
                     (3, "below threshold; sent to verifier"), (2, ROUTED)]


def test_hybrid_waiting_for_people_does_not_pay_the_llm_twice(tmp_path):
    pool = make_pool(4)
    llm = scripted_llm({"item 0 text": [0.9, 0.1]})
    backend = llm.backend
    hybrid = HybridAnnotator(llm, HumanQueueAnnotator(tmp_path, labels=LABELS), threshold=0.8)
    first = []
    with pytest.raises(AwaitingHumanLabels) as waiting:
        for a in hybrid.annotate(pool, np.arange(4)):
            first.append(a)
    assert waiting.value.count == 3 and [a.item_id for a in first if a.ok] == [0]
    assert hybrid.routed_ == {1, 2, 3}
    paid = backend.usage.input_tokens
    write(tmp_path / "answers.jsonl", "".join(json.dumps({"id": i, "label": "negative"}) + "\n" for i in (1, 2, 3)))
    second = list(hybrid.annotate(pool, np.array([1, 2, 3])))
    assert backend.usage.input_tokens == paid
    assert [(a.item_id, a.source, a.label) for a in second] == [(1, "human", "negative"), (2, "human", "negative"),
                                                                (3, "human", "negative")]
    assert hybrid.routed_ == set()


# ------------------------------------------------------------------------------------ calibration, agreement


def test_calibration_picks_the_lowest_threshold_reaching_the_target():
    conf = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6]
    gold = ["a"] * 6
    llm = ["a", "a", "a", "b", "a", "b"]
    cal = calibrate_threshold(conf, llm, gold, 0.8)
    assert cal.threshold == 0.7 and cal.kept == 5 and cal.kept_fraction == pytest.approx(5 / 6)
    assert cal.accuracy == pytest.approx(0.8)
    assert calibrate_threshold(conf, llm, gold, 1.0).threshold == 0.85
    assert calibrate_threshold(conf, llm, gold, 0.5).threshold == 0.6
    assert calibrate_threshold(conf, llm, gold, 1.0, min_kept=4).threshold == math.inf


def test_calibration_keeps_ties_together_and_never_keeps_failures():
    # At 0.9 both tied items are kept (one wrong): 2/3 right, short of 0.75.
    cal = calibrate_threshold([0.99, 0.9, 0.9, None], ["a", "a", "b", "a"], ["a", "a", "a", "a"], 0.75)
    assert cal.threshold == 0.99 and cal.kept == 1
    wrong_first = calibrate_threshold([0.9, 0.8], [None, "a"], ["a", "a"], 1.0)
    assert wrong_first.threshold == 0.8 and wrong_first.kept == 1
    none = calibrate_threshold([0.9], ["b"], ["a"], 0.9)
    assert none.threshold == math.inf and none.kept == 0 and math.isnan(none.accuracy)
    with pytest.raises(ConfigError):
        calibrate_threshold([0.9], ["a", "b"], ["a"], 0.9)


def test_agreement_reports_accuracy_and_kappa():
    a = ["x", "x", "y", "y", "x", None]
    b = ["x", "y", "y", "y", "x", "x"]
    result = agreement(a, b)
    assert result.n == 5 and result.accuracy == pytest.approx(0.8)
    assert result.kappa == pytest.approx(cohen_kappa(a[:5], b[:5]))
    acc, kappa, n = agreement(["p", "q"], ["p", "q"])
    assert (acc, kappa, n) == (1.0, 1.0, 2)
