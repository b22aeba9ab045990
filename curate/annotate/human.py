"""People as annotators: export a batch for them, import their answers, and a queue that waits.

Three file formats travel both ways:

* ``jsonl``: one ``{"id": 3, "text": "...", "label": null}`` object per line; answers are the
  same rows with ``label`` filled in (extra fields are ignored);
* ``csv``: columns ``id,text,label`` with an empty ``label``; answers need ``id`` and ``label``;
* ``labelstudio``: Label Studio's task import JSON, a list of ``{"data": {"text": ...,
  "curate_id": ...}}``, plus a labelling config (``<stem>.xml``) with one ``Choices`` control.
  Label Studio reserves the top-level task ``"id"`` for its own numbering, so our id travels in
  ``data.curate_id`` and comes back in its JSON export, where each task carries
  ``annotations[].result[].value.choices``.

An empty label (``null`` or ``""``) means "not answered yet", so that people can fill in an
exported file row by row and hand it back at any point.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from curate.annotate.base import Annotation, AwaitingHumanLabels
from curate.budget import Prices
from curate.errors import ConfigError, DataError, did_you_mean

__all__ = ["FORMATS", "HumanQueueAnnotator", "export_batch", "import_answers", "read_batch"]

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "labelstudio")
_SUFFIX = {"jsonl": ".jsonl", "csv": ".csv", "labelstudio": ".json"}
_FORMAT_OF_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "labelstudio"}
_INT = re.compile(r"^\s*-?\d+\s*$")


def check_labels(labels: Sequence[Any], owner: str) -> dict[str, Any]:
    """The label set as ``{str(label): label}``; files carry labels as text, so ``1`` and ``"1"``
    are the same label and may not both appear."""
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise ConfigError(f"The 'labels' parameter of {owner} must be a list of labels. Got {labels!r} instead.")
    lookup: dict[str, Any] = {}
    for label in labels:
        if label is None or isinstance(label, (dict, list, tuple, float)) or str(label).strip() == "":
            raise ConfigError(f"Every label of {owner} must be a non-empty string or an int. Got {label!r}.")
        if str(label) in lookup:
            raise ConfigError(f"The labels of {owner} must be distinct; {label!r} appears twice in {list(labels)!r}.")
        lookup[str(label)] = label
    if len(lookup) < 2:
        raise ConfigError(f"{owner} needs at least two labels. Got {list(labels)!r}.")
    return lookup


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"Unknown format '{fmt}'. Known: {', '.join(FORMATS)}.{did_you_mean(fmt, FORMATS)}")
        return fmt
    suffix = path.suffix.lower()
    if suffix not in _FORMAT_OF_SUFFIX:
        raise DataError(f"{path}: cannot tell the format from the suffix '{suffix}'. Use .jsonl, .csv or .json "
                        f"(Label Studio), or pass fmt= (one of {', '.join(FORMATS)}).")
    return _FORMAT_OF_SUFFIX[suffix]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# export


def export_batch(pool, ids: Sequence[int] | np.ndarray, path: str | Path, *, labels: Sequence[Any] | None,
                 fmt: str | None = None) -> Path:
    """Write the texts of ``ids`` to ``path`` for people to label; returns the path.

    ``labels=None`` asks for free text (people write a response to each prompt): JSONL or CSV only.

    ``fmt`` is ``jsonl``, ``csv`` or ``labelstudio`` (default: from the suffix). With
    ``labelstudio`` a labelling config listing ``labels`` is written beside it (``<stem>.xml``).
    The file appears whole or not at all.
    """
    path = Path(path)
    fmt = _format_of(path, fmt)
    _check_label_set(labels, fmt, "export_batch")
    ids = [int(i) for i in np.asarray(ids, dtype=np.int64).tolist()]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"export_batch got duplicate ids: {sorted({i for i in ids if ids.count(i) > 1})[:5]}.")
    # People who write responses see the prompt alone (a pool's own response would be the answer).
    free_text = labels is None and "prompt" in getattr(pool, "roles", ())
    texts = [str(t) for t in pool.select(ids)["prompt"]] if free_text else pool.texts(ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        body = "".join(json.dumps({"id": i, "text": t, "label": None}, ensure_ascii=False) + "\n"
                       for i, t in zip(ids, texts, strict=True))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["id", "text", "label"])
        writer.writerows([i, t, ""] for i, t in zip(ids, texts, strict=True))
        body = buffer.getvalue()
    else:
        tasks = [{"data": {"text": t, "curate_id": i}} for i, t in zip(ids, texts, strict=True)]
        body = json.dumps(tasks, ensure_ascii=False, indent=1) + "\n"
        choices = "\n".join(f"    <Choice value={quoteattr(str(label))}/>" for label in labels)
        config = (f'<View>\n  <Text name="text" value="$text"/>\n  <Choices name="label" toName="text" choice="single">\n'
                  f"{choices}\n  </Choices>\n</View>\n")
        _write_atomic(path.with_suffix(".xml"), config)
    _write_atomic(path, body)
    logger.info("exported %d item(s) for people to label: %s", len(ids), path)
    return path


def read_batch(path: str | Path, *, fmt: str | None = None) -> list[tuple[int, str]]:
    """``(id, text)`` pairs of a batch written by :func:`export_batch`, in file order."""
    path = Path(path)
    fmt = _format_of(path, fmt)
    items: list[tuple[int, str]] = []
    for where, row in _rows(path, fmt):
        if fmt == "labelstudio":
            data = row.get("data") if isinstance(row.get("data"), dict) else {}
            item_id, text = _parse_id(data.get("curate_id"), f"{where}: field 'data.curate_id'"), data.get("text")
        else:
            item_id, text = _parse_id(row.get("id"), f"{where}: field 'id'"), row.get("text")
        if not isinstance(text, str):
            raise DataError(f"{where}: field 'text' must be a string, got {text!r}.")
        items.append((item_id, text))
    return items


# --------------------------------------------------------------------------------------------
# import


def import_answers(path: str | Path, *, labels: Sequence[Any] | None, ids: Collection[int] | None = None,
                   fmt: str | None = None) -> dict[int, Any]:
    """Read people's answers: ``{id: label}``, labels as given in ``labels`` (``None``: free text,
    any non-empty string, kept as written).

    Reads our JSONL and CSV files (fields ``id`` and ``label``) and Label Studio's JSON export.
    Unanswered rows (empty label) and Label Studio tasks without a kept annotation are left out.
    Unknown labels, ids outside ``ids`` (when given), duplicate ids and malformed rows are a
    :class:`DataError` naming the file, line (or task) and field.
    """
    path = Path(path)
    fmt = _format_of(path, fmt)
    lookup = _check_label_set(labels, fmt, "import_answers")
    known = None if ids is None else {int(i) for i in ids}
    answers: dict[int, Any] = {}
    first_at: dict[int, str] = {}
    for where, row in _rows(path, fmt):
        if fmt == "labelstudio":
            data = row.get("data")
            if not isinstance(data, dict) or "curate_id" not in data:
                raise DataError(f"{where}: no 'data.curate_id'. Import tasks written by curate's export_batch into "
                                "Label Studio, then export them as JSON.")
            item_id = _parse_id(data["curate_id"], f"{where}: field 'data.curate_id'")
            raw = _label_studio_choice(row, where)
            field = "annotations[].result[].value.choices"
        else:
            if "id" not in row or "label" not in row:
                missing = [f for f in ("id", "label") if f not in row]
                raise DataError(f"{where}: missing field(s) {missing}. Answer rows need 'id' and 'label'; "
                                f"found {sorted(row)}.")
            item_id, raw, field = _parse_id(row["id"], f"{where}: field 'id'"), row["label"], "label"
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue  # not answered yet
        if lookup is None and not isinstance(raw, str):
            raise DataError(f"{where}: field '{field}': a free-text answer must be a string, got {raw!r}.")
        if lookup is not None and (isinstance(raw, (dict, list, bool, float)) or str(raw).strip() not in lookup):
            shown = ", ".join(lookup)
            raise DataError(f"{where}: field '{field}': unknown label {raw!r}. Labels: {shown}."
                            f"{did_you_mean(str(raw), lookup)}")
        if known is not None and item_id not in known:
            raise DataError(f"{where}: unknown id {item_id}: it is not among the {len(known)} ids this batch or pool has.")
        if item_id in answers:
            raise DataError(f"{where}: duplicate id {item_id} (first answered at {first_at[item_id]}). "
                            "Keep one answer per id.")
        answers[item_id] = raw.strip() if lookup is None else lookup[str(raw).strip()]
        first_at[item_id] = where
    return answers


def _check_label_set(labels: Sequence[Any] | None, fmt: str, owner: str) -> dict[str, Any] | None:
    """The label lookup, or None for free-text answers (which Label Studio files do not carry here)."""
    if labels is None:
        if fmt == "labelstudio":
            raise ConfigError(f"{owner}: free-text answers (labels=None) are read from jsonl or csv files, not Label Studio.")
        return None
    return check_labels(labels, owner)


def _parse_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and _INT.match(value))):
        raise DataError(f"{where} must be an integer id, got {value!r}.")
    return int(value)


def _rows(path: Path, fmt: str) -> Iterator[tuple[str, dict]]:
    """``(location, row)`` pairs: ``file:line`` for JSONL/CSV, ``file: task n`` for Label Studio."""
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    text = path.read_text(encoding="utf-8-sig")
    if fmt == "jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: malformed JSON at column {err.colno}: {err.msg}.") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}.")
            yield f"{path}:{lineno}", row
    elif fmt == "csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: the file is empty (no header row).")
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            raise DataError(f"{path}:1: the header names a column twice: {header}.")
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{reader.line_num}: expected {len(header)} fields ({', '.join(header)}), "
                                f"got {len(row)}. Check the quoting of commas inside fields.")
            yield f"{path}:{reader.line_num}", dict(zip(header, row, strict=True))
    else:
        try:
            tasks = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: malformed JSON at column {err.colno}: {err.msg}.") from None
        if not isinstance(tasks, list):
            raise DataError(f"{path}: expected a JSON list of Label Studio tasks, got {type(tasks).__name__}.")
        for n, task in enumerate(tasks, start=1):
            where = f"{path}: task {n}" + (f" (Label Studio id {task['id']})" if isinstance(task, dict) and "id" in task else "")
            if not isinstance(task, dict):
                raise DataError(f"{where}: expected an object, got {type(task).__name__}.")
            yield where, task


def _label_studio_choice(task: dict, where: str) -> str | None:
    """The one choice of a task's kept annotations (ground truth first), or None when unanswered."""
    annotations = task.get("annotations", task.get("completions", []))  # "completions" before LS 1.0
    if not isinstance(annotations, list):
        raise DataError(f"{where}: field 'annotations' must be a list, got {type(annotations).__name__}.")
    picked: list[tuple[bool, str]] = []
    for a_n, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        results = annotation.get("result", [])
        choices = [c for r in results if isinstance(r, dict) and isinstance(r.get("value"), dict)
                   for c in r["value"].get("choices", [])]
        if not choices:
            continue
        if len(choices) != 1:
            raise DataError(f"{where}: field 'annotations[{a_n}].result[].value.choices' holds {choices}; "
                            "expected exactly one choice (use choice=\"single\").")
        picked.append((bool(annotation.get("ground_truth")), choices[0]))
    if not picked:
        return None
    truth = [c for g, c in picked if g]
    candidates = set(truth) if truth else {c for _, c in picked}
    if len(candidates) > 1:
        raise DataError(f"{where}: annotators disagree ({sorted(candidates)}). Resolve it in Label Studio "
                        "(mark one annotation as ground truth) and export again.")
    return candidates.pop()


# --------------------------------------------------------------------------------------------
# the queue


class HumanQueueAnnotator:
    """People labelling through files in ``queue_dir``.

    ``annotate`` yields an annotation (``source="human"``, one billable label) for every id
    already answered in a ``queue_dir/answers*`` file (``.jsonl``, ``.csv``, or Label Studio's
    ``.json`` export). The remaining ids are exported once to ``queue_dir/batch-<hash>.<ext>``
    (the hash names the requested ids, so asking again for the same ids writes nothing new), and
    then :class:`AwaitingHumanLabels` is raised: the loop saves its state and stops until the
    answers are in.
    """

    name = "human"

    def __init__(self, queue_dir: str | Path, *, labels: Sequence[Any] | None, fmt: str = "jsonl") -> None:
        self.queue_dir = queue_dir
        self.labels = labels  # None = free text: people write a response to each prompt
        self.fmt = fmt
        _check_label_set(labels, fmt, "HumanQueueAnnotator")
        if fmt not in FORMATS:
            raise ConfigError(f"The 'fmt' parameter of HumanQueueAnnotator must be one of {', '.join(FORMATS)}. "
                              f"Got {fmt!r} instead.{did_you_mean(str(fmt), FORMATS)}")

    def answers(self, ids: Collection[int] | None = None) -> dict[int, Any]:
        """Every answer in the queue's ``answers*`` files; the same id answered differently in two
        files is an error."""
        merged: dict[int, Any] = {}
        source: dict[int, Path] = {}
        folder = Path(self.queue_dir)
        files = sorted(p for p in folder.glob("answers*") if p.suffix.lower() in _FORMAT_OF_SUFFIX) if folder.is_dir() else []
        for path in files:
            for item_id, label in import_answers(path, labels=self.labels, ids=ids).items():
                if item_id in merged and merged[item_id] != label:
                    raise DataError(f"id {item_id} is labelled {merged[item_id]!r} in {source[item_id]} but {label!r} "
                                    f"in {path}. Remove one of the answers.")
                merged[item_id] = label
                source[item_id] = path
        return merged

    def batch_path(self, ids: Sequence[int] | np.ndarray) -> Path:
        """Where the batch for these ids is (or would be) exported."""
        key = ",".join(str(i) for i in sorted({int(i) for i in np.asarray(ids).ravel().tolist()}))
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        return Path(self.queue_dir) / f"batch-{digest}{_SUFFIX[self.fmt]}"

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).tolist()]
        answers = self.answers(ids=range(len(pool)))
        waiting = []
        for item_id in ids:
            if item_id in answers:
                yield Annotation(item_id, answers[item_id], "human", None, human_labels=1)
            else:
                waiting.append(item_id)
        if waiting:
            path = self.batch_path(ids)
            if not path.exists():
                export_batch(pool, waiting, path, labels=self.labels, fmt=self.fmt)
            raise AwaitingHumanLabels(str(path), len(waiting))

    def worst_case_micros(self, prices: Prices) -> int:
        return prices.micros(human_labels=1)
