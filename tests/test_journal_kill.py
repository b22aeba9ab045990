"""A journal killed before its schema exists: the file is there, its tables are not.

A SIGKILL can land after ``journal.sqlite`` is created and before its tables are: a 0-byte file,
or only the WAL header. The schema is created in one transaction, so such a file holds all the
tables or none, and the next open initialises it; the loop then starts as on a fresh folder and
buys each label once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from curate.acquire import make_strategy
from curate.annotate.base import GoldAnnotator
from curate.budget import Ledger, Prices
from curate.journal import _SCHEMA, Journal
from curate.learners import EmbeddingClassifier
from curate.loop import ActiveLoop
from curate.pool import load_pool
from curate.stopping import MaxRounds

TABLES = {"meta", "rounds", "labels", "charges", "generated", "scores", "tally"}

# Opens a Journal and SIGKILLs itself as the statement numbered argv[2] (from 0) is about to run:
# every instant between the file's creation and the schema's commit, one per statement.
OPENER = textwrap.dedent('''
    import os, signal, sqlite3, sys

    from curate.journal import Journal

    kill_at, seen, connect = int(sys.argv[2]), [], sqlite3.connect

    def traced(*args, **kwargs):
        db = connect(*args, **kwargs)

        def trace(sql):
            if len(seen) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            seen.append(sql)

        db.set_trace_callback(trace)
        return db

    sqlite3.connect = traced
    Journal(sys.argv[1]).close()
    print(len(seen))
''')


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} - {"sqlite_sequence"}
    finally:
        db.close()


def run_loop(run_dir: Path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    y = (x[:, 0] > 0).astype(int)
    pool = load_pool([{"text": f"t{i}", "label": int(v)} for i, v in enumerate(y)])
    return ActiveLoop(pool, strategy=make_strategy("margin"), annotator=GoldAnnotator(),
                      learner=EmbeddingClassifier(x, [0, 1]), run_dir=run_dir, init_size=6, batch_size=6,
                      stopping=MaxRounds(3), ledger=Ledger(Prices(human_per_label=0.5)), seed=1).run()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run_loop(tmp_path_factory.mktemp("reference"))


def check_clean_run(run_dir: Path, reference) -> None:
    result = run_loop(run_dir)
    assert result.labels == reference.labels and len(result.labels) == 18
    assert result.ledger.spent_micros == reference.ledger.spent_micros == 9_000_000
    db = sqlite3.connect(run_dir / "journal.sqlite")
    ids = [r[0] for r in db.execute("SELECT item_id FROM labels")]
    assert len(ids) == len(set(ids)) == 18
    assert sorted(r[0] for r in db.execute("SELECT item_id FROM charges")) == sorted(ids)  # bought once each
    assert db.execute("SELECT COUNT(*) FROM rounds WHERE status = 'trained'").fetchone()[0] == 3
    db.close()


def test_a_zero_byte_journal_is_initialised(tmp_path, reference):
    (tmp_path / "journal.sqlite").touch()
    check_clean_run(tmp_path, reference)


def test_a_journal_with_only_the_wal_header_is_initialised(tmp_path, reference):
    db = sqlite3.connect(tmp_path / "journal.sqlite", isolation_level=None)
    assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    db.close()
    assert (tmp_path / "journal.sqlite").stat().st_size > 0 and tables(tmp_path / "journal.sqlite") == set()
    check_clean_run(tmp_path, reference)


def test_a_half_made_schema_is_completed(tmp_path, reference):
    """Tables created one by one (as before they were made in one transaction), killed part-way."""
    db = sqlite3.connect(tmp_path / "journal.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in _SCHEMA.split(";")[:2]:  # meta and rounds only
        db.execute(statement)
    db.close()
    assert tables(tmp_path / "journal.sqlite") == {"meta", "rounds"}
    Journal(tmp_path / "journal.sqlite").close()
    assert tables(tmp_path / "journal.sqlite") == TABLES
    check_clean_run(tmp_path, reference)


def test_sigkill_at_every_statement_of_a_journals_creation(tmp_path, reference):
    opener = tmp_path / "opener.py"
    opener.write_text(OPENER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def open_journal(run_dir: Path, kill_at: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(opener), str(run_dir / "journal.sqlite"), str(kill_at)],
                              env=env, capture_output=True, text=True)

    whole = open_journal(tmp_path / "whole", 10**6)  # never killed: counts the statements
    assert whole.returncode == 0, whole.stderr
    statements = int(whole.stdout.strip())
    assert statements >= 4  # pragmas, the schema check, the schema's transaction
    for kill_at in range(statements):
        run_dir = tmp_path / f"killed{kill_at}"
        proc = open_journal(run_dir, kill_at)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        journal = run_dir / "journal.sqlite"
        assert journal.exists()  # killed after the file was created
        # Every kill lands before the schema's COMMIT: no table at all, never half a schema ...
        assert tables(journal) == set(), kill_at
        check_clean_run(run_dir, reference)  # ... and the next open makes them all
