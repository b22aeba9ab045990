"""People as annotators: export a batch for them, import their answers, and a queue that waits.

Three file formats travel both ways:

* ``jsonl``: one ``{"id": 3, "text": "...", "label": null}`` object per line; answers are the
  same rows with ``label`` filled in (extra fields are ignored);
* ``csv``: columns ``id,text,label`` with an empty ``label``; answers need ``id`` and ``label``;
* ``labelstudio``: Label Studio's task import JSON, a list of ``{"data": {"text": ...,
  "curate_id": ...}}``, plus a labelling config (``<stem>.xml``) with one ``Choices`` control
  named ``label``. Label Studio reserves the top-level task ``"id"`` for its own numbering, so our
  id travels in the task data as ``curate_id`` and comes back in every export of those tasks.

Label Studio exports are read in its three tabular-or-JSON shapes (as Label Studio 1.x writes them),
always mapped back to curate's ids through ``curate_id``, never through Label Studio's task ``id``:

* ``JSON``: a list of tasks, ``{"id": 17, "data": {"text": ..., "curate_id": 3},
  "annotations": [{"result": [{"value": {"choices": ["positive"]}, ...}], ...}]}``;
* ``JSON_MIN``: a list of flat rows, one per annotation: the data fields (``text``, ``curate_id``),
  ``id`` (Label Studio's), the choice under the control's name (``"label": "positive"``), and
  ``annotator``, ``annotation_id``, ``created_at``, ``updated_at``, ``lead_time``;
* ``CSV``: the same columns as ``JSON_MIN``, sorted, one row per annotation.

A Label Studio export without ``curate_id`` (tasks that did not come from :func:`export_batch`) is
refused: its ``id`` is Label Studio's own numbering, and labels keyed by it would land on the wrong
items. Several annotations of one task must agree (in ``JSON`` a ``ground_truth`` one wins).

Where the answers go: with :class:`HumanQueueAnnotator`, in the queue folder under a name that
starts with ``answers`` and ends in ``.jsonl``, ``.csv`` or ``.json`` (e.g. save Label Studio's
``project-1-at-....json`` as ``QUEUE/answers-ls-1.json`` and its CSV as ``QUEUE/answers-ls-1.csv``),
then resume the run; :func:`import_answers` reads any such file by path.

An empty label (``null`` or ``""``) means "not answered yet", so that people can fill in an
exported file row by row and hand it back at any point.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from curate.annotate.base import Annotation, AwaitingHumanLabels
from curate.budget import Prices
from curate.errors import ConfigError, DataError, did_you_mean
from curate.jsonl import check_regular_file, decode_utf8, iter_jsonl, write_text_atomic

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
    write_text_atomic(path, text)


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

    Reads our JSONL and CSV files (fields ``id`` and ``label``) and Label Studio's ``JSON``,
    ``JSON_MIN`` (``.json``) and ``CSV`` (``.csv``, told apart from ours by its ``curate_id`` column)
    exports, mapped to curate's ids by the ``curate_id`` that :func:`export_batch` put in each task.
    Unanswered rows (empty label) and Label Studio tasks without a kept annotation are left out.
    Unknown labels, ids outside ``ids`` (when given), duplicate ids, annotators who disagree and
    malformed rows are a :class:`DataError` naming the file, line (or task) and field.
    """
    path = Path(path)
    fmt = _format_of(path, fmt)
    lookup = _check_label_set(labels, fmt, "import_answers")
    known = None if ids is None else {int(i) for i in ids}
    answers: dict[int, Any] = {}
    first_at: dict[int, str] = {}
    for where, item_id, raw, field, per_annotation in _answer_rows(path, fmt, free_text=lookup is None):
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
        label = raw.strip() if lookup is None else lookup[str(raw).strip()]
        if item_id in answers:
            if per_annotation and answers[item_id] == label:
                continue  # a second annotator who agrees
            if per_annotation:
                raise DataError(f"{where}: annotators disagree on curate_id {item_id} ({answers[item_id]!r} at "
                                f"{first_at[item_id]}, {label!r} here). Resolve it in Label Studio and export again.")
            raise DataError(f"{where}: duplicate id {item_id} (first answered at {first_at[item_id]}). "
                            "Keep one answer per id.")
        answers[item_id] = label
        first_at[item_id] = where
    return answers


# Columns of Label Studio's flat exports (JSON_MIN, CSV) that are neither task data nor a control.
_LS_META = frozenset({"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement",
                      "history"})
_LS_MARKERS = frozenset({"annotation_id", "annotator", "lead_time"})  # Label Studio writes all three
_OUR_DATA = frozenset({"text", "curate_id"})  # the task data export_batch writes
_LS_REFUSED = ("it has no 'curate_id', so its 'id' is Label Studio's own task numbering, not curate's ids, and "
               "labels keyed by it would land on the wrong items. Import the batch curate exported "
               "(batch-*.json, whose tasks carry data.curate_id) into Label Studio, label it there, and export "
               "it again as JSON, JSON_MIN or CSV.")


def _answer_rows(path: Path, fmt: str, *, free_text: bool) -> Iterator[tuple[str, int, Any, str, bool]]:
    """``(location, curate id, raw label or None, field, one row per annotation?)`` per answer row."""
    if fmt == "jsonl":
        for where, row in _rows(path, fmt):
            yield (where, *_our_answer(row, where), False)
        return
    if fmt == "csv":
        header, rows = _csv_table(path)
        if "curate_id" in header:
            if free_text:
                raise ConfigError(f"{path}: a Label Studio export carries choices, not free-text answers "
                                  "(labels=None); pass the label set.")
            field = _ls_choice_field(header, path)
            for where, row in rows:
                raw = None if field is None else _ls_flat_choice(row[field], where, field, from_csv=True)
                yield where, _parse_ls_id(row["curate_id"], where), raw, field or "label", True
            return
        if _LS_MARKERS <= set(header):
            raise DataError(f"{path}: this is a Label Studio CSV export (columns {', '.join(header)}), but "
                            + _LS_REFUSED)
        for where, row in rows:
            yield (where, *_our_answer(row, where), False)
        return
    for where, task in _rows(path, fmt):
        if "curate_id" in task and not isinstance(task.get("data"), dict):  # JSON_MIN: one flat row per annotation
            field = _ls_choice_field(list(task), where, flat_row=True)
            raw = None if field is None else _ls_flat_choice(task[field], where, field)
            yield where, _parse_ls_id(task["curate_id"], where), raw, field or "label", True
            continue
        data = task.get("data")
        if not isinstance(data, dict) or "curate_id" not in data:
            if _LS_MARKERS <= set(task):
                raise DataError(f"{where}: a Label Studio JSON_MIN row, but " + _LS_REFUSED)
            raise DataError(f"{where}: no 'data.curate_id': the task did not come from curate's export_batch, and "
                            "its 'id' is Label Studio's own numbering, not a curate id. Import the batch curate "
                            "exported (batch-*.json) into Label Studio, label it there, and export it again "
                            "(JSON, JSON_MIN or CSV).")
        item_id = _parse_id(data["curate_id"], f"{where}: field 'data.curate_id'")
        yield where, item_id, _label_studio_choice(task, where), "annotations[].result[].value.choices", False


def _our_answer(row: dict, where: str) -> tuple[int, Any, str]:
    if "id" not in row or "label" not in row:
        missing = [f for f in ("id", "label") if f not in row]
        raise DataError(f"{where}: missing field(s) {missing}. Answer rows need 'id' and 'label'; "
                        f"found {sorted(row)}.")
    return _parse_id(row["id"], f"{where}: field 'id'"), row["label"], "label"


def _ls_choice_field(names: Sequence[str], where: Any, *, flat_row: bool = False) -> str | None:
    """The column of a flat Label Studio export that holds the choice: ``label`` (the control
    export_batch writes), else the one column that is neither task data nor Label Studio's own;
    None when there is none (no task was annotated)."""
    if "label" in names:
        return "label"
    others = [n for n in names if n not in _LS_META and n not in _OUR_DATA and not n.endswith("_transcript")]
    if len(others) > 1:
        raise DataError(f"{where}: cannot tell which of the columns {others} holds the choice; curate's labelling "
                        "config names the Choices control 'label'. Keep that name, or drop the extra columns.")
    if not others and not flat_row:
        logger.warning("%s: a Label Studio export with no choice column: no task is annotated yet.", where)
    return others[0] if others else None


def _ls_flat_choice(value: Any, where: str, field: str, *, from_csv: bool = False) -> Any:
    """A JSON_MIN / CSV choice: the label itself for one choice; ``{"choices": [...]}`` (a JSON string
    in CSV) for several, which is an error here."""
    if from_csv and isinstance(value, str) and value.lstrip().startswith(("{", "[")):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass  # a label that merely starts with a brace
    if isinstance(value, dict) and isinstance(value.get("choices"), list):
        choices = value["choices"]
        if len(choices) != 1:
            raise DataError(f"{where}: field '{field}' holds {choices}; expected exactly one choice "
                            "(use choice=\"single\").")
        return choices[0]
    if isinstance(value, list):
        raise DataError(f"{where}: field '{field}' holds {value!r}; expected one choice per annotation.")
    return value


_LS_INT = re.compile(r"^\s*-?\d+(\.0*)?\s*$")  # Label Studio's CSV may write an id column as 3.0


def _parse_ls_id(value: Any, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _LS_INT.match(value):
        return int(float(value))
    return _parse_id(value, f"{where}: field 'curate_id'")


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


def _csv_table(path: Path) -> tuple[list[str], Iterator[tuple[str, dict]]]:
    """The header and ``(file:line, row)`` pairs of a CSV file."""
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise DataError(f"{path}:1: not readable as CSV ({err}).") from None
    if header is None:
        raise DataError(f"{path}: the file is empty (no header row).")
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise DataError(f"{path}:1: the header names a column twice: {header}.")

    def rows() -> Iterator[tuple[str, dict]]:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise DataError(f"{path}:{reader.line_num}: not readable as CSV ({err}).") from None
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{reader.line_num}: expected {len(header)} fields ({', '.join(header)}), "
                                f"got {len(row)}. Check the quoting of commas inside fields.")
            yield f"{path}:{reader.line_num}", dict(zip(header, row, strict=True))

    return header, rows()


def _text(path: Path) -> str:
    return decode_utf8(check_regular_file(path).read_bytes(), path)


def _rows(path: Path, fmt: str) -> Iterator[tuple[str, dict]]:
    """``(location, row)`` pairs: ``file:line`` for JSONL/CSV, ``file: task n`` for Label Studio."""
    if fmt == "jsonl":
        for lineno, row in iter_jsonl(path):
            yield f"{path}:{lineno}", row
    elif fmt == "csv":
        yield from _csv_table(path)[1]
    else:
        try:
            tasks = json.loads(_text(path))
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
    already answered in a ``queue_dir/answers*`` file: ``.jsonl`` or ``.csv`` as exported, or a
    Label Studio export saved there under such a name (``JSON`` / ``JSON_MIN`` as ``.json``, ``CSV``
    as ``.csv``; see the module docstring). The remaining ids are exported once to ``queue_dir/batch-<hash>.<ext>``
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
