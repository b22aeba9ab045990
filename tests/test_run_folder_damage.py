"""A damaged run folder never re-buys: every way of losing the journal ends in a clear error,
exit code 2, nothing bought and the journal untouched; a second process on a folder fails fast."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from curate.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished classification run (gold labels, 0.40 a label): two rounds, 16 labels bought."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["--quiet", "run", str(ROOT / "recipes" / "reviews-gold.yaml"), "--out", str(run), "--set", "stop.rounds=2",
                 ]) == 0
    return run


def _sql(statement):
    def damage(journal: Path) -> None:
        db = sqlite3.connect(journal)
        db.execute(statement)
        db.commit()
        db.close()
    return damage


def _truncate(journal: Path) -> None:
    _checkpoint(journal)
    os.truncate(journal, journal.stat().st_size // 2)


def _checkpoint(journal: Path) -> None:
    db = sqlite3.connect(journal)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


DAMAGE = {
    "zeroed": lambda j: j.write_bytes(b""),
    "deleted": lambda j: j.unlink(),
    "truncated": _truncate,
    "not a database": lambda j: j.write_text("this is not sqlite\n"),
    "charges table dropped": _sql("DROP TABLE charges"),
    "labels table dropped": _sql("DROP TABLE labels"),
    "charges rows deleted": _sql("DELETE FROM charges"),
    "one label deleted": _sql("DELETE FROM labels WHERE item_id = (SELECT MIN(item_id) FROM labels)"),
    "a charge edited": _sql("UPDATE charges SET micros = 0 WHERE seq = 1"),
    "a label that is not JSON": _sql("UPDATE labels SET label = '{oops' WHERE item_id = (SELECT MIN(item_id) FROM labels)"),
    "a round that is not JSON": _sql("UPDATE rounds SET selected = 'nope' WHERE round = 0"),
    "an id outside the pool": _sql("UPDATE labels SET item_id = 99999 WHERE item_id = (SELECT MAX(item_id) FROM labels)"),
}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith("journal.sqlite-") and p.name != ".curate.lock"}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_on_a_damaged_journal_is_refused_and_buys_nothing(finished, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    _checkpoint(run / "journal.sqlite")
    DAMAGE[damage](run / "journal.sqlite")
    before = _digest(run)
    capsys.readouterr()
    code = main(["--quiet", "resume", str(run), "--set", "stop.rounds=4"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "journal" in err and "Nothing was bought" in err
    assert _digest(run) == before  # nothing written: not the journal, not the curve, not the config


def test_a_second_process_on_a_run_folder_fails_fast(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from curate.lock import run_lock
        with run_lock({str(run)!r}):
            print("held", flush=True)
            sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _digest(run)
        capsys.readouterr()
        assert main(["--quiet", "resume", str(run), "--set", "stop.rounds=3"]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "in use by another curate process" in err
        assert _digest(run) == before
    finally:
        holder.communicate("")
    # Once the holder is gone (even killed: the kernel drops the lock) the run continues.
    assert main(["--quiet", "resume", str(run), "--set", "stop.rounds=3"]) == 0
