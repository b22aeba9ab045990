"""The run journal: a transactional record of every round, label and charge (SQLite, WAL).

A crash at any instant leaves a consistent journal: each paid annotation is written together
with its charge in one transaction before the loop moves on, and a round's status moves
selected -> annotated -> trained only after the work it names is committed. ``item_id`` is the
primary key of the labels table, so no item can be bought twice.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.annotate.base import Annotation
from curate.budget import Charge
from curate.errors import DataError

__all__ = ["FILE", "Journal", "RoundRow"]

FILE = "journal.sqlite"  # a run folder's journal, by this name in every paradigm

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, status TEXT NOT NULL, selected TEXT NOT NULL, seed TEXT NOT NULL,
    strategy TEXT, started REAL, finished REAL, labels INTEGER, spent_micros INTEGER, metric REAL,
    stop_predictions TEXT, checkpoint TEXT, info TEXT);
CREATE TABLE IF NOT EXISTS labels (
    item_id INTEGER PRIMARY KEY, label TEXT, source TEXT NOT NULL, confidence REAL,
    round INTEGER NOT NULL, note TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS charges (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id INTEGER, round INTEGER, source TEXT NOT NULL,
    micros INTEGER NOT NULL, human_labels INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS generated (
    item_id INTEGER PRIMARY KEY, round INTEGER NOT NULL, row TEXT NOT NULL, label TEXT, source TEXT NOT NULL,
    meta TEXT, created REAL NOT NULL);
"""
_TABLES = tuple(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))


@dataclass(frozen=True)
class RoundRow:
    round: int
    status: str
    selected: np.ndarray
    seed: list[int]
    strategy: str | None
    labels: int | None
    spent_micros: int | None
    metric: float | None
    stop_predictions: np.ndarray | None
    info: dict


class Journal:
    @classmethod
    def of(cls, run_dir: str | Path) -> Journal:
        """The journal of the run folder ``run_dir``."""
        return cls(Path(run_dir) / FILE)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a committed label survives power loss, not just a crash
        self._create_schema()

    def _create_schema(self) -> None:
        """Create the tables a journal lacks, all of them in one transaction.

        A kill can land between the file's creation (``sqlite3.connect`` makes it, 0 bytes; the WAL
        pragma writes its header) and the schema's: such a file holds no table and is simply
        initialised here on the next open. The tables are created together or not at all, so no
        half-made schema persists. On a journal that has them all this step only reads.
        """
        have = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if have.issuperset(_TABLES):
            return
        try:
            self.db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ meta

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # ------------------------------------------------------------------ rounds

    def start_round(self, round: int, selected: np.ndarray, seed: list[int], strategy: str, info: dict) -> None:
        with self._tx():
            self.db.execute(
                "INSERT INTO rounds (round, status, selected, seed, strategy, started, info) VALUES (?, 'selected', ?, ?, ?, ?, ?)",
                (round, json.dumps([int(i) for i in selected]), json.dumps(seed), strategy, time.time(), json.dumps(info)))

    def mark_annotated(self, round: int) -> None:
        with self._tx():
            self.db.execute("UPDATE rounds SET status = 'annotated' WHERE round = ?", (round,))

    def finish_round(self, round: int, *, labels: int, spent_micros: int, metric: float | None,
                     stop_predictions: np.ndarray | None, checkpoint: str | None = None) -> None:
        preds = None if stop_predictions is None else json.dumps(np.asarray(stop_predictions).tolist())
        with self._tx():
            self.db.execute(
                "UPDATE rounds SET status = 'trained', finished = ?, labels = ?, spent_micros = ?, metric = ?, "
                "stop_predictions = ?, checkpoint = ? WHERE round = ?",
                (time.time(), labels, spent_micros, metric, preds, checkpoint, round))

    def rounds(self) -> list[RoundRow]:
        rows = self.db.execute(
            "SELECT round, status, selected, seed, strategy, labels, spent_micros, metric, stop_predictions, info "
            "FROM rounds ORDER BY round").fetchall()
        return [RoundRow(r[0], r[1], np.array(json.loads(r[2]), dtype=np.int64), json.loads(r[3]), r[4], r[5], r[6], r[7],
                         None if r[8] is None else np.array(json.loads(r[8])), json.loads(r[9] or "{}")) for r in rows]

    # ------------------------------------------------------------------ labels and charges

    def record(self, annotation: Annotation, charge: Charge, round: int) -> None:
        """Commit one paid annotation and its charge together.

        A failure (``label=None``) is kept too: it was paid for, and the item is not bought again
        by a later round. A label may follow a failure for the same item within one stream (a
        hybrid annotator routing an item from the LLM to a person); a second label may not.
        """
        label = None if annotation.label is None else json.dumps(_plain(annotation.label))
        values = (label, annotation.source, annotation.confidence, round, annotation.note, time.time())
        with self._tx():
            row = self.db.execute("SELECT label FROM labels WHERE item_id = ?", (annotation.item_id,)).fetchone()
            if row is None:
                self.db.execute("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?)", (annotation.item_id, *values))
            elif label is not None and row[0] is None:
                self.db.execute("UPDATE labels SET label = ?, source = ?, confidence = ?, round = ?, note = ?, "
                                "created = ? WHERE item_id = ?", (*values, annotation.item_id))
            elif label is not None:
                raise DataError(f"item {annotation.item_id} is already labelled in {self.path}; "
                                "an item is never bought twice.")
            self.db.execute(
                "INSERT INTO charges (item_id, round, source, micros, human_labels, input_tokens, output_tokens) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (annotation.item_id, round, charge.source, charge.micros, charge.human_labels, charge.input_tokens,
                 charge.output_tokens))

    def record_charge(self, charge: Charge) -> None:
        """Commit a charge that buys no label (e.g. a teacher probe paid while selecting)."""
        with self._tx():
            self.db.execute(
                "INSERT INTO charges (item_id, round, source, micros, human_labels, input_tokens, output_tokens) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (charge.item_id, charge.round, charge.source, charge.micros, charge.human_labels, charge.input_tokens,
                 charge.output_tokens))

    def record_generated(self, rows: list[dict], round: int, *, first_id: int, labelled: bool) -> None:
        """Commit generated pool rows (``{"row", "label", "source", "meta"}``, ids from ``first_id``)
        in one transaction; with ``labelled`` their intended labels are recorded too, at no charge
        (the generation that wrote them was billed when it ran)."""
        now = time.time()
        with self._tx():
            for k, g in enumerate(rows):
                item_id = first_id + k
                label = None if g.get("label") is None else json.dumps(_plain(g["label"]))
                self.db.execute("INSERT INTO generated VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (item_id, round, json.dumps(g["row"]), label, g.get("source", "generated"),
                                 json.dumps(g.get("meta") or {}, default=str), now))
                if labelled and label is not None:
                    self.db.execute("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    (item_id, label, "generated", g.get("confidence"), round, "intended label", now))
                    self.db.execute("INSERT INTO charges (item_id, round, source, micros, human_labels, input_tokens, "
                                    "output_tokens) VALUES (?, ?, 'generated', 0, 0, 0, 0)", (item_id, round))

    def generated(self, round: int | None = None) -> list[dict]:
        """Every generated pool row (of one ``round``), by id: ``{"item_id", "round", "row", "label",
        "source", "meta"}``."""
        where, args = ("WHERE round = ?", (round,)) if round is not None else ("", ())
        rows = self.db.execute(f"SELECT item_id, round, row, label, source, meta FROM generated {where} ORDER BY item_id",
                               args).fetchall()
        return [{"item_id": r[0], "round": r[1], "row": json.loads(r[2]), "label": None if r[3] is None else json.loads(r[3]),
                 "source": r[4], "meta": json.loads(r[5] or "{}")} for r in rows]

    # A round's generation report (what was written, accepted, rejected by each filter) is kept in
    # meta under "generation:<round>:<query>"; it also marks that round's generation as done.

    def set_generation_report(self, round: int, query: int, report: dict) -> None:
        self.set_meta(f"generation:{round}:{query}", report)

    def generation_report(self, round: int, query: int) -> dict | None:
        return self.get_meta(f"generation:{round}:{query}")

    def generation_reports(self) -> list[tuple[int, int, dict]]:
        """Every generation report as ``(round, query, report)``, in round order."""
        rows = self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'generation:%'").fetchall()
        out = [(int(key.split(":")[1]), int(key.split(":")[2]), json.loads(value)) for key, value in rows]
        return sorted(out, key=lambda t: (t[0], t[1]))

    def labels(self) -> dict[int, Any]:
        """Every usable label, by item id."""
        return {i: json.loads(lab) for i, lab in
                self.db.execute("SELECT item_id, label FROM labels WHERE label IS NOT NULL ORDER BY item_id")}

    def attempted(self) -> set[int]:
        """Every item that was paid for, labelled or not: none of them is bought again."""
        return {r[0] for r in self.db.execute("SELECT item_id FROM labels")}

    def routed_pending(self) -> set[int]:
        """Items an LLM routed to people whose answer has not arrived (label still NULL)."""
        from curate.annotate.hybrid import ROUTED

        return {r[0] for r in self.db.execute("SELECT item_id FROM labels WHERE label IS NULL AND note = ?", (ROUTED,))}

    def label_rows(self) -> list[dict]:
        cols = ("item_id", "label", "source", "confidence", "round", "note")
        rows = self.db.execute(f"SELECT {', '.join(cols)} FROM labels ORDER BY item_id").fetchall()
        return [dict(zip(cols, (r[0], None if r[1] is None else json.loads(r[1]), *r[2:]), strict=True)) for r in rows]

    def charges(self) -> list[Charge]:
        rows = self.db.execute("SELECT source, micros, human_labels, input_tokens, output_tokens, item_id, round "
                               "FROM charges ORDER BY seq").fetchall()
        return [Charge(*r) for r in rows]

    def _tx(self):
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def _plain(value: Any) -> Any:
    """numpy scalars to Python values, so labels round-trip through JSON."""
    return value.item() if isinstance(value, np.generic) else value
