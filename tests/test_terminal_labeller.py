"""The terminal labeller, driven by scripted key presses."""

from __future__ import annotations

import json

import pytest

from curate.annotate.human import export_batch, import_answers
from curate.annotate.terminal import label_interactively, run_labeller
from curate.errors import ConfigError
from curate.pool import load_pool

LABELS = ["positive", "negative", "neutral"]
ITEMS = [(10, "great"), (11, "awful"), (12, "fine"), (13, "meh")]


class Keys:
    """An input function that returns scripted keys, then raises EOFError like a closed stdin."""

    def __init__(self, *keys: str) -> None:
        self.keys = list(keys)
        self.prompts = 0

    def __call__(self, prompt: str = "") -> str:
        self.prompts += 1
        if not self.keys:
            raise EOFError
        return self.keys.pop(0)


def run(keys, items=ITEMS, **kwargs):
    printed: list[str] = []
    result = label_interactively(items, LABELS, input_fn=Keys(*keys), print_fn=lambda *a: printed.append(" ".join(map(str, a))),
                                 **kwargs)
    return result, "\n".join(printed)


def test_number_keys_choose_labels():
    result, shown = run(["1", "2", "3", "1"])
    assert result == {10: "positive", 11: "negative", 12: "neutral", 13: "positive"}
    assert "[1/4] id 10\ngreat" in shown and "1) positive  2) negative  3) neutral" in shown
    assert "Done: 4 label(s) given, 0 skipped." in shown


def test_skip_leaves_an_item_out():
    result, shown = run(["s", "2", "s", "1"])
    assert result == {11: "negative", 13: "positive"}
    assert "2 skipped" in shown


def test_undo_goes_back_one_item_and_removes_its_label():
    changes = []
    result, _ = run(["1", "2", "u", "3", "1", "2"], on_change=lambda i, label: changes.append((i, label)))
    assert result == {10: "positive", 11: "neutral", 12: "positive", 13: "negative"}
    assert changes == [(10, "positive"), (11, "negative"), (11, None), (11, "neutral"), (12, "positive"), (13, "negative")]


def test_undo_over_a_skip_and_at_the_start():
    result, shown = run(["u", "s", "u", "2", "q"])
    assert "Nothing to undo." in shown
    assert result == {10: "negative"}


def test_quit_returns_what_was_labelled_so_far():
    result, shown = run(["1", "q", "2"])
    assert result == {10: "positive"}
    assert "Saved 1 label(s), skipped 0; 3 item(s) left." in shown


def test_end_of_input_quits_too():
    result, _ = run(["2"])
    assert result == {10: "negative"}


@pytest.mark.parametrize("key", ["4", "0", "x", "", "12"])
def test_unknown_keys_reprompt_with_help(key):
    keys = Keys(key, "1", "q")
    printed = []
    result = label_interactively(ITEMS, LABELS, input_fn=keys, print_fn=printed.append)
    assert result == {10: "positive"}
    assert keys.prompts == 3
    assert any(f"Unknown key {key!r}. Press a number from 1 to 3" in p for p in printed)


def test_existing_labels_are_kept_and_not_asked_again():
    result, shown = run(["3"], existing={10: "positive", 12: "negative", 13: "neutral"})
    assert result == {10: "positive", 11: "neutral", 12: "negative", 13: "neutral"}
    assert "[1/1] id 11" in shown and "great" not in shown


def test_bad_labels_are_a_config_error():
    with pytest.raises(ConfigError, match="at least two labels"):
        label_interactively(ITEMS, ["only"], input_fn=Keys())


def test_answers_file_survives_a_quit_and_the_run_resumes(tmp_path):
    pool = load_pool([{"text": t} for _, t in ITEMS])
    batch = export_batch(pool, [0, 1, 2, 3], tmp_path / "batch.csv", labels=LABELS)
    answers = tmp_path / "answers.jsonl"

    first = run_labeller(batch, answers, LABELS, input_fn=Keys("1", "2", "u", "3", "s", "q"), print_fn=lambda *a: None)
    assert first == {0: "positive", 1: "neutral"}
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert lines == [{"id": 0, "label": "positive"}, {"id": 1, "label": "neutral"}]  # the undone answer is gone

    printed = []
    second = run_labeller(batch, answers, LABELS, input_fn=Keys("2"), print_fn=printed.append)  # then stdin closes
    assert printed[0] == f"Resuming: 2 of 4 item(s) already labelled in {answers}."
    assert "[1/2] id 2\nfine" in printed[1]
    assert second == {0: "positive", 1: "neutral", 2: "negative"}
    assert import_answers(answers, labels=LABELS) == second

    third = run_labeller(batch, answers, LABELS, input_fn=Keys("1"), print_fn=lambda *a: None)
    assert third == {0: "positive", 1: "neutral", 2: "negative", 3: "positive"}
    assert len(answers.read_text().splitlines()) == 4


def test_each_answer_is_on_disk_before_the_next_key(tmp_path):
    pool = load_pool([{"text": t} for _, t in ITEMS])
    batch = export_batch(pool, [0, 1, 2], tmp_path / "batch.jsonl", labels=LABELS)
    answers = tmp_path / "answers.jsonl"
    seen = []

    def keys(prompt=""):
        seen.append(answers.read_text() if answers.exists() else "")
        if len(seen) == 3:
            raise KeyboardInterrupt  # a crash mid-way
        return "1"

    with pytest.raises(KeyboardInterrupt):
        run_labeller(batch, answers, LABELS, input_fn=keys, print_fn=lambda *a: None)
    assert seen[1] == '{"id": 0, "label": "positive"}\n'
    assert import_answers(answers, labels=LABELS) == {0: "positive", 1: "positive"}


def test_answers_file_must_be_jsonl(tmp_path):
    with pytest.raises(ConfigError, match="must be a .jsonl file"):
        run_labeller(tmp_path / "batch.jsonl", tmp_path / "answers.csv", LABELS, input_fn=Keys())
