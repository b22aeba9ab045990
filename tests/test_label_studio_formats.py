"""Label Studio's JSON, JSON_MIN and CSV exports map back to curate's ids through data.curate_id.

The exports are written by hand in the shapes Label Studio 1.23 writes them (its converter: JSON is
the task list with ``annotations[].result[].value.choices``; JSON_MIN and CSV are one flat row per
annotation with the task data, Label Studio's task ``id``, the choice under the control's name and
``annotator``/``annotation_id``/``created_at``/``updated_at``/``lead_time``; CSV columns sorted and
strings quoted). Label Studio numbers its tasks 1, 2, 3...: the same numbers as pool ids, which is
how labels used to land on the wrong items.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json

import numpy as np
import pytest

from curate.annotate.base import AwaitingHumanLabels
from curate.annotate.human import HumanQueueAnnotator, export_batch, import_answers
from curate.errors import DataError
from curate.pool import load_pool

LABELS = ["positive", "negative"]
STAMP = "2025-11-03T10:15:00.000000Z"


def make_pool(n=6):
    return load_pool([{"text": f"item {i} text"} for i in range(n)])


def ls_tasks(batch, answers):
    """Label Studio's JSON export of an imported curate batch: task ids 1, 2, ... in import order;
    ``answers`` maps curate id -> the choices of each annotation (several = several annotators)."""
    tasks = []
    for n, task in enumerate(json.loads(batch.read_text()), start=1):
        curate_id = task["data"]["curate_id"]
        annotations = [{
            "id": 100 * n + a, "completed_by": a + 1, "was_cancelled": False, "ground_truth": False,
            "result": [{"value": {"choices": [choice]}, "id": f"r{n}{a}", "from_name": "label", "to_name": "text",
                        "type": "choices", "origin": "manual"}],
            "created_at": STAMP, "updated_at": STAMP, "draft_created_at": None, "lead_time": 2.5 + a,
            "prediction": {}, "result_count": 1, "task": n, "project": 1, "updated_by": a + 1,
            "parent_prediction": None, "parent_annotation": None, "last_action": None,
        } for a, choice in enumerate(answers.get(curate_id, []))]
        tasks.append({"id": n, "annotations": annotations, "file_upload": "abc123-batch.json", "drafts": [],
                      "predictions": [], "data": task["data"], "meta": {}, "created_at": STAMP, "updated_at": STAMP,
                      "inner_id": n, "total_annotations": len(annotations), "cancelled_annotations": 0,
                      "total_predictions": 0, "comment_count": 0, "unresolved_comment_count": 0,
                      "last_comment_updated_at": None, "project": 1, "updated_by": 1, "comment_authors": []})
    return tasks


def ls_flat(tasks):
    """JSON_MIN rows (Label Studio's converter): data fields, id, the choice, annotation metadata."""
    rows = []
    for task in tasks:
        for ann in task["annotations"]:
            choices = ann["result"][0]["value"]["choices"]
            row = {**task["data"], "id": task["id"],
                   "label": choices[0] if len(choices) == 1 else {"choices": choices},
                   "annotator": ann["completed_by"], "annotation_id": ann["id"], "created_at": ann["created_at"],
                   "updated_at": ann["updated_at"], "lead_time": ann["lead_time"]}
            rows.append(row)
    return rows


def ls_csv(tasks):
    """CSV export: JSON_MIN's columns sorted, QUOTE_NONNUMERIC, a non-string choice as JSON."""
    rows = [{k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()} for r in ls_flat(tasks)]
    keys = sorted({"annotator", "annotation_id", "created_at", "updated_at", "lead_time"}.union(*rows))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, quoting=csv.QUOTE_NONNUMERIC)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@pytest.fixture
def batch(tmp_path):
    # Curate ids 4, 1, 3 become Label Studio tasks 1, 2, 3: task id 1 is curate id 4, not 1.
    return export_batch(make_pool(), [4, 1, 3], tmp_path / "batch.json", labels=LABELS, fmt="labelstudio")


ANSWERS = {4: ["positive"], 1: ["negative"], 3: ["negative", "negative"]}  # two annotators agree on 3
EXPECTED = {4: "positive", 1: "negative", 3: "negative"}


def write_export(path, kind, tasks):
    if kind == "JSON":
        path.write_text(json.dumps(tasks, indent=2))
    elif kind == "JSON_MIN":
        path.write_text(json.dumps(ls_flat(tasks), indent=2))
    else:
        path.write_text(ls_csv(tasks), newline="")
    return path


@pytest.mark.parametrize(("kind", "suffix"), [("JSON", ".json"), ("JSON_MIN", ".json"), ("CSV", ".csv")])
def test_each_export_maps_labels_back_by_curate_id(tmp_path, batch, kind, suffix):
    path = write_export(tmp_path / f"project-1-at-2025-11-03{suffix}", kind, ls_tasks(batch, ANSWERS))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert import_answers(path, labels=LABELS, ids=range(6)) == EXPECTED
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the export is only read


def test_csv_export_columns_are_what_label_studio_writes(batch):
    header = ls_csv(ls_tasks(batch, ANSWERS)).splitlines()[0]
    assert header == ('"annotation_id","annotator","created_at","curate_id","id","label","lead_time","text",'
                      '"updated_at"')


@pytest.mark.parametrize(("kind", "suffix"), [("JSON", ".json"), ("JSON_MIN", ".json"), ("CSV", ".csv")])
def test_the_queue_reads_an_export_saved_as_answers(tmp_path, kind, suffix):
    pool = make_pool()
    queue = tmp_path / "queue"
    human = HumanQueueAnnotator(queue, labels=LABELS, fmt="labelstudio")
    ids = np.array([4, 1, 3])
    with pytest.raises(AwaitingHumanLabels):
        list(human.annotate(pool, ids))
    write_export(queue / f"answers-ls{suffix}", kind, ls_tasks(human.batch_path(ids), ANSWERS))
    out = list(human.annotate(pool, ids))
    assert [(a.item_id, a.label) for a in out] == [(4, "positive"), (1, "negative"), (3, "negative")]


@pytest.mark.parametrize(("kind", "suffix"), [("JSON_MIN", ".json"), ("CSV", ".csv")])
def test_flat_exports_skip_unanswered_and_refuse_disagreement(tmp_path, batch, kind, suffix):
    partial = write_export(tmp_path / f"partial{suffix}", kind, ls_tasks(batch, {1: ["negative"]}))
    assert import_answers(partial, labels=LABELS, ids=range(6)) == {1: "negative"}
    split = write_export(tmp_path / f"split{suffix}", kind, ls_tasks(batch, {3: ["negative", "positive"]}))
    with pytest.raises(DataError, match=r"annotators disagree on curate_id 3 \('negative' at .*'positive' here\)"):
        import_answers(split, labels=LABELS)
    multi = ls_tasks(batch, {4: ["positive"]})
    multi[0]["annotations"][0]["result"][0]["value"]["choices"] = ["positive", "negative"]
    with pytest.raises(DataError, match=r"field 'label' holds \['positive', 'negative'\]; expected exactly one"):
        import_answers(write_export(tmp_path / f"multi{suffix}", kind, multi), labels=LABELS)
    unknown = write_export(tmp_path / f"unknown{suffix}", kind, ls_tasks(batch, {4: ["neutral"]}))
    with pytest.raises(DataError, match=r"field 'label': unknown label 'neutral'"):
        import_answers(unknown, labels=LABELS)


def test_an_unannotated_json_min_row_has_no_choice_field(tmp_path):
    rows = [{"text": "item 4 text", "curate_id": 4, "id": 1, "annotator": 1, "annotation_id": None,
             "created_at": STAMP, "updated_at": STAMP, "lead_time": 0}]
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(rows))
    assert import_answers(path, labels=LABELS) == {}


def test_a_renamed_choices_control_is_found(tmp_path, batch):
    rows = ls_flat(ls_tasks(batch, ANSWERS))
    for row in rows:
        row["sentiment"] = row.pop("label")
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(rows))
    assert import_answers(path, labels=LABELS) == EXPECTED


def test_exports_of_tasks_curate_did_not_write_are_refused(tmp_path, batch):
    tasks = ls_tasks(batch, ANSWERS)
    for task in tasks:
        del task["data"]["curate_id"]
    csv_path = write_export(tmp_path / "answers.csv", "CSV", tasks)
    with pytest.raises(DataError, match=r"answers\.csv: this is a Label Studio CSV export .*no 'curate_id'.*"
                                        r"Label Studio's own task numbering.*batch-\*\.json"):
        import_answers(csv_path, labels=LABELS, ids=range(6))
    min_path = write_export(tmp_path / "answers.json", "JSON_MIN", tasks)
    with pytest.raises(DataError, match=r"task 1 \(Label Studio id 1\): a Label Studio JSON_MIN row, but it has no"):
        import_answers(min_path, labels=LABELS, ids=range(6))
    full_path = write_export(tmp_path / "full.json", "JSON", tasks)
    with pytest.raises(DataError, match=r"task 1 \(Label Studio id 1\): no 'data.curate_id'.*export_batch"):
        import_answers(full_path, labels=LABELS, ids=range(6))


def test_our_own_csv_with_an_annotator_column_is_still_ours(tmp_path):
    path = tmp_path / "answers.csv"
    path.write_text("id,label,annotator\n4,positive,ana\n1,negative,bo\n")
    assert import_answers(path, labels=LABELS) == {4: "positive", 1: "negative"}


def test_label_text_with_unicode_line_breaks_round_trips(tmp_path):
    pool = load_pool([{"text": "line\u2028break"}, {"text": "next\x85line"}])
    batch = export_batch(pool, [1, 0], tmp_path / "b.json", labels=LABELS, fmt="labelstudio")
    path = write_export(tmp_path / "answers.csv", "CSV", ls_tasks(batch, {0: ["positive"], 1: ["negative"]}))
    assert import_answers(path, labels=LABELS) == {0: "positive", 1: "negative"}
