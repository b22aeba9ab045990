"""The run journal: a transactional record of every round, label and charge (SQLite, WAL).

A crash at any instant leaves a consistent journal: each paid annotation is written together
with its charge in one transaction before the loop moves on, and a round's status moves
selected -> annotated -> trained only after the work it names is committed. ``item_id`` is the
primary key of the labels table, so no item can be bought twice.

The journal also knows it is whole. Its ``tally`` table counts, in the same transactions, the rows
of every table and the money charged; on open the counts are checked against what the tables hold,
so a journal that lost rows, a table, or its contents (zeroed, truncated, corrupted, not a database)
is refused with a :class:`JournalError` that says what is wrong, instead of being read as a run that
bought less than it did (and buying it again).
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

__all__ = ["FILE", "SCHEMA_VERSION", "Journal", "JournalError", "RoundRow"]

FILE = "journal.sqlite"  # a run folder's journal, by this name in every paradigm
SCHEMA_VERSION = 2       # 1: no tally; 2: tally of rows and money, checked on open
# Files a run folder holds once a loop has finished an invocation there: beside them an empty
# journal is a lost one, not a fresh one.
_OUTPUTS = ("curve.csv", "summary.json")

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
CREATE TABLE IF NOT EXISTS scores (
    scorer TEXT NOT NULL, item_id INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (scorer, item_id));
CREATE TABLE IF NOT EXISTS tally (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""
_TABLES = tuple(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))
# What the tally counts: the rows of each table, and the micros charged (so an edited charge shows).
_COUNTED = ("rounds", "labels", "charges", "generated", "scores")
_TALLY_NAMES = (*_COUNTED, "micros")
# Tables a version-1 journal has (it is upgraded on open by adding the rest).
_V1_TABLES = ("meta", "rounds", "labels", "charges", "generated")


class JournalError(DataError):
    """A run folder's journal is missing, damaged, or disagrees with itself or with its folder."""


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

    @classmethod
    def refuse_lost(cls, run_dir: str | Path) -> None:
        """Raise :class:`JournalError` when the journal of ``run_dir`` is absent or empty beside a
        finished invocation's outputs: it was lost, and starting over would buy everything again.
        A fresh folder (or a kill between the file's creation and its schema) passes."""
        path = Path(run_dir) / FILE
        if path.exists() and path.stat().st_size > 0:
            return
        left = [name for name in _OUTPUTS if (path.parent / name).exists()]
        if left:
            raise _damaged(path, f"it is {'empty' if path.exists() else 'missing'}, but this folder holds "
                                 f"a run's outputs ({', '.join(left)})")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.name == FILE:
            self.refuse_lost(self.path.parent)  # before SQLite writes a byte to it
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a committed label survives power loss, not just a crash
            self._open()
        except sqlite3.DatabaseError as err:
            self._close_quietly()
            raise self._damaged(f"SQLite cannot read it ({err})") from None
        except BaseException:
            self._close_quietly()
            raise

    def _open(self) -> None:
        have = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not have or (not have.issuperset(_V1_TABLES) and self._all_empty(have)):
            # A kill can land between the file's creation (``sqlite3.connect`` makes it, 0 bytes;
            # the WAL pragma writes its header) and the schema's commit (or, before the schema was
            # one transaction, between its tables): on a fresh folder such a file holds nothing
            # and is simply initialised. Beside a finished invocation's outputs it is a journal
            # that lost its contents, and starting over would buy everything again.
            left = [name for name in _OUTPUTS if (self.path.parent / name).exists()]
            if left:
                raise self._damaged("it holds no tables, but this folder holds a run's outputs "
                                    f"({', '.join(left)}): the journal was emptied or replaced")
            self._create_schema()
            return
        missing = [t for t in _V1_TABLES if t not in have]
        if missing:
            raise self._damaged(f"its table(s) {', '.join(missing)} are missing")
        version = self._read_version()
        if version > SCHEMA_VERSION:
            raise JournalError(f"{self.path} was written by a newer curate (journal schema {version}; this one "
                               f"reads up to {SCHEMA_VERSION}). Upgrade curate to continue this run.")
        if version < SCHEMA_VERSION or not have.issuperset(_TABLES):
            if version == SCHEMA_VERSION:
                raise self._damaged(f"its table(s) {', '.join(t for t in _TABLES if t not in have)} are missing")
            self._upgrade()
        self.check()

    def _all_empty(self, tables: set[str]) -> bool:
        return all(self.db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] == 0 for t in tables)

    def _read_version(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        try:
            return 1 if row is None else int(json.loads(row[0]))
        except (ValueError, TypeError):
            raise self._damaged(f"its schema version is not a number ({row[0]!r})") from None

    def _create_schema(self) -> None:
        """Create every table, the schema version and a zero tally in one transaction: a journal
        has them all or none, so no half-made schema persists."""
        tally = ", ".join(f"('{name}', 0)" for name in _TALLY_NAMES)
        self._script(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nINSERT OR REPLACE INTO meta VALUES ('schema', '{SCHEMA_VERSION}');\n"
                     f"INSERT OR REPLACE INTO tally VALUES {tally};\nCOMMIT;")

    def _upgrade(self) -> None:
        """A version-1 journal (no tally): add the new tables, count what it holds, mark it version 2."""
        self._script(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
        with self._tx():
            for name, n in self._actual().items():
                self.db.execute("INSERT OR REPLACE INTO tally VALUES (?, ?)", (name, n))
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (json.dumps(SCHEMA_VERSION),))

    def _script(self, sql: str) -> None:
        try:
            self.db.executescript(sql)
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def _actual(self) -> dict[str, int]:
        counts = {t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in _COUNTED}
        counts["micros"] = self.db.execute("SELECT COALESCE(SUM(micros), 0) FROM charges").fetchone()[0]
        return counts

    def check(self) -> None:
        """Refuse a journal whose tables disagree with its tally (rows lost or added outside curate,
        a charge edited) or that SQLite finds damaged."""
        problem = self.db.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise self._damaged(f"SQLite finds it damaged ({problem})")
        tally = dict(self.db.execute("SELECT name, n FROM tally").fetchall())
        actual = self._actual()
        wrong = [f"{name}: {actual[name]} held, {tally.get(name)} recorded" for name in _TALLY_NAMES
                 if tally.get(name) != actual[name]]
        if wrong:
            raise self._damaged(f"what it holds disagrees with its own tally ({'; '.join(wrong)})")

    def _damaged(self, what: str) -> JournalError:
        return _damaged(self.path, what)

    def _close_quietly(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ meta

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else self._json(row[0], f"meta row '{key}'")

    # ------------------------------------------------------------------ rounds

    def start_round(self, round: int, selected: np.ndarray, seed: list[int], strategy: str, info: dict) -> None:
        with self._tx():
            self.db.execute(
                "INSERT INTO rounds (round, status, selected, seed, strategy, started, info) VALUES (?, 'selected', ?, ?, ?, ?, ?)",
                (round, json.dumps([int(i) for i in selected]), json.dumps(seed), strategy, time.time(), json.dumps(info)))
            self._bump(rounds=1)

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
        out = []
        for r in rows:
            where = f"round {r[0]}"
            try:
                selected = np.array(self._json(r[2], where), dtype=np.int64)
                preds = None if r[8] is None else np.array(self._json(r[8], where))
            except (TypeError, ValueError):
                raise self._damaged(f"{where}'s selection or predictions are not lists of numbers") from None
            out.append(RoundRow(r[0], r[1], selected, self._json(r[3], where), r[4], r[5], r[6], r[7], preds,
                                self._json(r[9] or "{}", where)))
        return out

    # ------------------------------------------------------------------ labels and charges

    def record(self, annotation: Annotation, charge: Charge, round: int) -> None:
        """Commit one paid annotation and its charge together.

        A failure (``label=None``) is kept too: it was paid for, and the item is not bought again
        by a later round. A label may follow a failure for the same item within one stream (a
        hybrid annotator routing an item from the LLM to a person); a second label may not.
        """
        with self._tx():
            self._insert(annotation, charge, round)

    def record_call(self, bought: list[tuple[Annotation, Charge]], round: int) -> None:
        """Commit the ``(annotation, charge)`` pairs one paid call bought, in one transaction."""
        with self._tx():
            for annotation, charge in bought:
                self._insert(annotation, charge, round)

    def _insert(self, annotation: Annotation, charge: Charge, round: int) -> None:
        label = None if annotation.label is None else json.dumps(_plain(annotation.label))
        values = (label, annotation.source, annotation.confidence, round, annotation.note, time.time())
        row = self.db.execute("SELECT label FROM labels WHERE item_id = ?", (annotation.item_id,)).fetchone()
        if row is None:
            self.db.execute("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?)", (annotation.item_id, *values))
            self._bump(labels=1)
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
        self._bump(charges=1, micros=charge.micros)

    def record_charge(self, charge: Charge, *, scores: tuple[str, dict[int, float]] | None = None) -> None:
        """Commit a charge that buys no label (a teacher probe, an LLM scoring items while selecting),
        with the ``scores`` it bought (``(scorer, {item id: value})``) in the same transaction: a run
        killed after the call has both or neither, so it never pays for the same scores twice."""
        with self._tx():
            self.db.execute(
                "INSERT INTO charges (item_id, round, source, micros, human_labels, input_tokens, output_tokens) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (charge.item_id, charge.round, charge.source, charge.micros, charge.human_labels, charge.input_tokens,
                 charge.output_tokens))
            added = 0
            if scores is not None:
                scorer, values = scores
                for item_id, value in values.items():
                    added += self.db.execute("INSERT OR IGNORE INTO scores VALUES (?, ?, ?)",
                                             (scorer, int(item_id), float(value))).rowcount
            self._bump(charges=1, micros=charge.micros, scores=added)

    def scores(self, scorer: str) -> dict[int, float]:
        """The scores bought for ``scorer`` so far, by item id."""
        return dict(self.db.execute("SELECT item_id, value FROM scores WHERE scorer = ?", (scorer,)).fetchall())

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
                self._bump(generated=1)
                if labelled and label is not None:
                    self.db.execute("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    (item_id, label, "generated", g.get("confidence"), round, "intended label", now))
                    self.db.execute("INSERT INTO charges (item_id, round, source, micros, human_labels, input_tokens, "
                                    "output_tokens) VALUES (?, ?, 'generated', 0, 0, 0, 0)", (item_id, round))
                    self._bump(labels=1, charges=1)

    def generated(self, round: int | None = None) -> list[dict]:
        """Every generated pool row (of one ``round``), by id: ``{"item_id", "round", "row", "label",
        "source", "meta"}``."""
        where, args = ("WHERE round = ?", (round,)) if round is not None else ("", ())
        rows = self.db.execute(f"SELECT item_id, round, row, label, source, meta FROM generated {where} ORDER BY item_id",
                               args).fetchall()
        return [{"item_id": r[0], "round": r[1], "row": self._json(r[2], f"generated item {r[0]}"),
                 "label": None if r[3] is None else self._json(r[3], f"generated item {r[0]}"),
                 "source": r[4], "meta": self._json(r[5] or "{}", f"generated item {r[0]}")} for r in rows]

    # A round's generation report (what was written, accepted, rejected by each filter) is kept in
    # meta under "generation:<round>:<query>"; it also marks that round's generation as done.

    def set_generation_report(self, round: int, query: int, report: dict) -> None:
        self.set_meta(f"generation:{round}:{query}", report)

    def generation_report(self, round: int, query: int) -> dict | None:
        return self.get_meta(f"generation:{round}:{query}")

    def generation_reports(self) -> list[tuple[int, int, dict]]:
        """Every generation report as ``(round, query, report)``, in round order."""
        rows = self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'generation:%'").fetchall()
        out = [(int(key.split(":")[1]), int(key.split(":")[2]), self._json(value, f"meta row '{key}'"))
               for key, value in rows]
        return sorted(out, key=lambda t: (t[0], t[1]))

    def labels(self) -> dict[int, Any]:
        """Every usable label, by item id."""
        return {i: self._json(lab, f"the label of item {i}") for i, lab in
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
        return [dict(zip(cols, (r[0], None if r[1] is None else self._json(r[1], f"the label of item {r[0]}"), *r[2:]),
                         strict=True)) for r in rows]

    def charges(self) -> list[Charge]:
        rows = self.db.execute("SELECT source, micros, human_labels, input_tokens, output_tokens, item_id, round "
                               "FROM charges ORDER BY seq").fetchall()
        return [Charge(*r) for r in rows]

    def _tx(self):
        return _Transaction(self.db)

    def _bump(self, **deltas: int) -> None:
        """Add to the tally, inside the caller's transaction."""
        for name, n in deltas.items():
            if n:
                self.db.execute("UPDATE tally SET n = n + ? WHERE name = ?", (int(n), name))

    def _json(self, text: str, where: str) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            raise self._damaged(f"{where} is not JSON ({str(text)[:60]!r})") from None


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


def _damaged(path: Path, what: str) -> JournalError:
    return JournalError(
        f"The run journal {path} is damaged: {what}. Nothing was bought. It is the record of every label "
        "and charge of this run, so curate will not continue from it (that could buy labels again): restore "
        "the file from a backup to continue, or start a new run folder.")


def _plain(value: Any) -> Any:
    """numpy scalars to Python values, so labels round-trip through JSON."""
    return value.item() if isinstance(value, np.generic) else value
