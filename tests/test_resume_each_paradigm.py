"""Every paradigm's run folder resumes with ``curate resume`` after a SIGKILL mid-round.

The worker is the real ``curate`` command; it kills itself (SIGKILL: no cleanup, no flush) right
after the journal committed its k-th paid label, which lands inside a round whose other labels are
not bought yet. ``curate resume RUN_DIR`` (one command for every paradigm: the folder says which)
then finishes the run. Checked: every label once, one charge per label, the money of an
uninterrupted run, and the same labels.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import os, signal, sys
from curate.journal import Journal

kill_at = int(os.environ.get("KILL_AT", "0"))
record_call = Journal.record_call
count = [0]


def record_then_maybe_die(self, bought, *args, **kwargs):
    record_call(self, bought, *args, **kwargs)   # committed before we die
    count[0] += len(bought)
    if kill_at and count[0] >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


Journal.record_call = record_then_maybe_die
from curate.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _curate(tmp_path, *args, kill_at=0):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "KILL_AT": str(kill_at), "HF_HUB_OFFLINE": "1", "CURATE_QUIET": "1"}
    return subprocess.run([sys.executable, str(worker), "--quiet", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)


def _journal(run_dir: Path):
    db = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        labels = db.execute("SELECT item_id, label FROM labels ORDER BY item_id").fetchall()
        charged = db.execute("SELECT item_id, COUNT(*) FROM charges WHERE item_id IS NOT NULL GROUP BY item_id").fetchall()
        spent = db.execute("SELECT COALESCE(SUM(micros), 0) FROM charges").fetchone()[0]
    finally:
        db.close()
    return labels, dict(charged), spent


def _killed_then_resumed(tmp_path, recipe: Path, kill_at: int, paradigm: str, *, same_labels: bool = True):
    whole = _curate(tmp_path, "run", str(recipe), "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    killed = _curate(tmp_path, "run", str(recipe), "--out", str(tmp_path / "killed"), kill_at=kill_at)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)  # it died mid-run
    partial, _, _ = _journal(tmp_path / "killed")
    assert len(partial) == kill_at
    assert f"paradigm: {paradigm}" in (tmp_path / "killed" / "config.yaml").read_text()
    resumed = _curate(tmp_path, "resume", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    want, want_charges, want_spent = _journal(tmp_path / "whole")
    got, got_charges, got_spent = _journal(tmp_path / "killed")
    assert len(got) == len(want) and set(got_charges.values()) == {1} and len(got_charges) == len(got)
    assert got_spent == want_spent
    if same_labels:
        assert got == want
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["paradigm"] == paradigm and summary["labels"] == len(want)
    # Every paradigm exports its data from the journal alone, with one command.
    exported = _curate(tmp_path, "export", str(tmp_path / "killed"), "--out", str(tmp_path / "export.jsonl"))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout.strip().splitlines()[-1])["paradigm"] == paradigm
    rows = [json.loads(line) for line in (tmp_path / "export.jsonl").read_text().splitlines()]
    assert len(rows) >= len(want)
    # The same convention in every paradigm: JSONL (train) and a dataset card beside it.
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\n") and f"paradigm: {paradigm}" in card and "path: export.jsonl" in card
    assert f"| money spent | {want_spent / 1e6:.4f} " in card
    # ICL's demonstrations carry the pool's own id column (a pool for `icl select`); preference pairs
    # are prompt/chosen/rejected rows for TRL, with provenance but no pool id.
    if paradigm not in ("icl", "prefs"):
        assert {r["id"] for r in rows} >= {i for i, _ in want}
    return summary


@pytest.mark.real
def test_classify(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "paradigm": "classify", "pool": {"path": "sample:reviews", "id_column": "id"}, "labels": ["positive", "negative"],
        "init": {"strategy": "kmeans", "size": 6}, "acquire": {"strategy": "margin", "batch_size": 6},
        "annotator": {"kind": "gold"}, "prices": {"human_per_label": 0.4}, "stop": {"rounds": 3}}))
    _killed_then_resumed(tmp_path, recipe, kill_at=9, paradigm="classify")


@pytest.mark.real
def test_icl(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "paradigm": "icl", "pool": {"path": "sample:reviews", "id_column": "id"}, "labels": ["positive", "negative"],
        "annotate": {"strategy": "kcenter", "budget": 12, "rounds": 3}, "annotator": {"kind": "gold"},
        "prices": {"human_per_label": 0.4}}))
    summary = _killed_then_resumed(tmp_path, recipe, kill_at=6, paradigm="icl")
    assert Path(summary["demonstrations"]).exists()


@pytest.mark.parametrize("kill_at", [2, 4], ids=["round0", "round1"])
def test_sft(tmp_path, tiny_lm_dir, kill_at):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "paradigm": "sft", "pool": {"path": "sample:instructions"}, "model": str(tiny_lm_dir),
        "init": {"strategy": "random", "size": 3}, "acquire": {"strategy": "entropy", "batch_size": 3, "sample": 6},
        "annotator": {"kind": "gold"}, "prices": {"human_per_label": 0.5},
        "lora": {"r": 2, "lora_alpha": 4, "target_modules": "all-linear"},
        "train": {"max_steps": 1, "per_device_train_batch_size": 4}, "max_length": 48, "max_new_tokens": 4,
        "stop": {"rounds": 2}}))
    # Killed in round 0 or round 1: what round 1 chooses depends on the model round 0 trained, and
    # the resumed run must train the models an uninterrupted run trains (no round on a part of a batch).
    summary = _killed_then_resumed(tmp_path, recipe, kill_at=kill_at, paradigm="sft")
    assert [r["bought"] for r in summary["rounds"]] == [3, 3]


@pytest.mark.real
def test_prefs(tmp_path):
    words = ["apple", "river", "stone", "cloud", "tiger", "piano", "ocean", "maple"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"say {words[i % 8]}", "chosen": words[(i + 1) % 8],
                                         "rejected": words[(i + 3) % 8]}) + "\n" for i in range(30)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "paradigm": "prefs", "pool": {"path": str(pairs)}, "acquire": {"init_size": 4, "strategy": "margin",
                                                                       "batch_size": 4},
        "learner": {"kind": "reward_model", "members": 3}, "prices": {"human_per_label": 0.5}, "stop": {"rounds": 3}}))
    summary = _killed_then_resumed(tmp_path, recipe, kill_at=6, paradigm="prefs")
    assert len(Path(summary["export"]).read_text().splitlines()) == 12


def test_distill(tmp_path, tiny_lm_dir):
    from test_distill import ANSWERS, QUESTIONS

    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in zip(QUESTIONS, ANSWERS, strict=True)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "paradigm": "distill", "pool": {"path": str(data), "format": "gsm8k"},
        "student": {"model": str(tiny_lm_dir), "lora": {"r": 2, "lora_alpha": 4, "target_modules": "all-linear"},
                    "train": {"max_steps": 1, "per_device_train_batch_size": 2}, "max_length": 64, "max_new_tokens": 4},
        "acquire": {"init_size": 2, "batch_size": 2, "strategy": "probe", "probe_tokens": 3, "sample": 4},
        "prices": {"llm_input_per_million": 1000.0, "llm_output_per_million": 3000.0}, "stop": {"rounds": 2}}))
    _killed_then_resumed(tmp_path, recipe, kill_at=1, paradigm="distill")
