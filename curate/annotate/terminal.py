"""Label a small batch in the terminal: one key per answer, every answer saved as it is given.

Keys: ``1``..``9`` (any number up to the count of labels) choose a label, ``s`` skips the item,
``u`` goes back one item and removes its label, ``q`` quits (end of input does too). Anything else
shows the help again. All I/O goes through ``input_fn``/``print_fn``, so tests drive it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from curate.annotate.human import check_labels, import_answers, read_batch
from curate.errors import ConfigError
from curate.jsonl import iter_jsonl, write_jsonl

__all__ = ["label_interactively", "run_labeller"]

logger = logging.getLogger(__name__)


def label_interactively(
    items: Sequence[tuple[int, str]],
    labels: Sequence[Any],
    *,
    input_fn: Callable[[str], str] = input,
    print_fn: Callable[..., None] = print,
    existing: Mapping[int, Any] | None = None,
    on_change: Callable[[int, Any | None], None] | None = None,
) -> dict[int, Any]:
    """Ask for a label for each ``(id, text)`` item not in ``existing``; return ``existing`` plus
    the labels given (skipped items are left out).

    ``on_change(id, label)`` is called as each label is given, and ``on_change(id, None)`` when
    ``u`` takes one back, so that a caller can save every answer at once.
    """
    check_labels(labels, "label_interactively")
    labels = list(labels)
    result: dict[int, Any] = dict(existing or {})
    todo = [(int(i), text) for i, text in items if int(i) not in result]
    menu = "  ".join(f"{n}) {label}" for n, label in enumerate(labels, start=1)) + "  s) skip  u) undo  q) quit"
    help_text = f"Press a number from 1 to {len(labels)} to choose a label, s to skip, u to undo, q to save and quit."
    history: list[int] = []  # positions in `todo` answered or skipped, most recent last
    given = skipped = 0
    pos = 0
    while pos < len(todo):
        item_id, text = todo[pos]
        print_fn(f"\n[{pos + 1}/{len(todo)}] id {item_id}\n{text}\n{menu}")
        while True:
            try:
                key = input_fn("label> ").strip().lower()
            except EOFError:
                key = "q"
            if key == "q":
                print_fn(f"Saved {given} label(s), skipped {skipped}; {len(todo) - pos} item(s) left.")
                return result
            if key == "s":
                history.append(pos)
                skipped += 1
                pos += 1
                break
            if key == "u":
                if not history:
                    print_fn("Nothing to undo.")
                    continue
                pos = history.pop()
                back = todo[pos][0]
                if back in result:
                    del result[back]
                    given -= 1
                    if on_change is not None:
                        on_change(back, None)
                else:
                    skipped -= 1
                break
            if key.isdigit() and 1 <= int(key) <= len(labels):
                result[item_id] = labels[int(key) - 1]
                if on_change is not None:
                    on_change(item_id, result[item_id])
                history.append(pos)
                given += 1
                pos += 1
                break
            print_fn(f"Unknown key {key!r}. {help_text}")
    print_fn(f"Done: {given} label(s) given, {skipped} skipped.")
    return result


def run_labeller(
    batch_path: str | Path,
    answers_path: str | Path,
    labels: Sequence[Any],
    *,
    input_fn: Callable[[str], str] = input,
    print_fn: Callable[..., None] = print,
) -> dict[int, Any]:
    """Label an exported batch in the terminal, appending each answer to a JSONL answers file.

    Each answer is written (and flushed to disk) as it is given, so a crash loses nothing; ``u``
    rewrites the file without the answer taken back. Run it again with the same files to resume
    where the answers file left off. Returns every answer in the file.
    """
    answers_path = Path(answers_path)
    if answers_path.suffix.lower() != ".jsonl":
        raise ConfigError(f"The answers file must be a .jsonl file (one answer per line). Got {answers_path} instead.")
    items = read_batch(batch_path)
    existing = import_answers(answers_path, labels=labels) if answers_path.exists() else {}
    done = sum(1 for i, _ in items if i in existing)
    if done:
        print_fn(f"Resuming: {done} of {len(items)} item(s) already labelled in {answers_path}.")
    answers_path.parent.mkdir(parents=True, exist_ok=True)

    def save(item_id: int, label: Any | None) -> None:
        if label is not None:
            with answers_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"id": item_id, "label": label}, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return
        kept = [row for _, row in iter_jsonl(answers_path) if row.get("id") != item_id]
        write_jsonl(answers_path, kept)

    return label_interactively(items, labels, input_fn=input_fn, print_fn=print_fn, existing=existing, on_change=save)
