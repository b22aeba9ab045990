"""Recipes, config errors, and `curate run / resume / select / label` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from curate.paradigms.classify.config import ClassifyConfig, load_classify_config

from curate.config import from_dict
from curate.errors import ConfigError

# Core loop recipes; each paradigm's recipes (icl-*, prefs-*, ...) have their own schema and test.
RECIPES = sorted(p for p in Path(str(resources.files("curate.recipes"))).glob("*.yaml")
                 if not p.name.startswith(("icl-", "prefs-", "sft-", "distill-", "bench-")))  # each paradigm's own


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"Unknown key 'acquire.budjet'. Did you mean 'acquire.batch_size'\?"):
        from_dict(ClassifyConfig, {"acquire": {"budjet": 3}})
    with pytest.raises(ConfigError, match=r"'init.size' must be int. Got 'ten'"):
        from_dict(ClassifyConfig, {"init": {"size": "ten"}})
    with pytest.raises(ConfigError, match="annotator.kind must be one of"):
        from_dict(ClassifyConfig, {"annotator": {"kind": "crowd"}})
    with pytest.raises(ConfigError, match="names no pool"):
        load_classify_config(None, [])
    with pytest.raises(ConfigError, match="--set takes KEY=VALUE"):
        load_classify_config(None, ["pool.path"])


def test_overrides_beat_the_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("pool: {path: data.jsonl}\nacquire: {strategy: margin, batch_size: 10}\nlabels: [a, b]\n")
    (tmp_path / "data.jsonl").write_text('{"text": "x"}\n')
    config = load_classify_config(recipe, ["acquire.batch_size=50", "stop.money=2.5", "labels=[x, y, z]"])
    assert config.acquire.strategy == "margin" and config.acquire.batch_size == 50
    assert config.stop.money == 2.5 and config.labels == ["x", "y", "z"]
    assert config.pool.path == str(tmp_path / "data.jsonl")  # relative to the recipe's folder


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_parses_and_builds(recipe):
    config = load_classify_config(recipe)
    from curate.acquire import make_strategy

    assert len(config.labels) >= 2
    if config.acquire.strategy not in ("ask_llm", "select_llm", "ifd"):
        make_strategy(config.acquire.strategy, **config.acquire.params)
    make_strategy(config.init.strategy, **config.init.params)


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "curate.cli", "--quiet", *args], capture_output=True, text=True,
                          cwd=cwd)


@pytest.mark.real
def test_run_dry_run_then_run_and_resume(tmp_path):
    recipe = str(RECIPES[[p.name for p in RECIPES].index("reviews-gold.yaml")])
    dry = cli("run", recipe, "--out", str(tmp_path / "run"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "up to 48 labels x at most 0.400000 USD each = at most 19.2000 USD" in dry.stdout
    assert not (tmp_path / "run" / "journal.sqlite").exists()
    done = cli("run", recipe, "--out", str(tmp_path / "run"), "--set", "stop.rounds=3")
    assert done.returncode == 0, done.stderr
    assert "Stopped: 3 rounds done" in done.stdout and (tmp_path / "run" / "curve.png").exists()
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "rounds: 3" in saved and json.loads((tmp_path / "run" / "versions.json").read_text())["curate"]
    again = cli("run", recipe, "--out", str(tmp_path / "run"))
    assert again.returncode == 2 and "curate resume" in again.stderr
    resumed = cli("resume", str(tmp_path / "run"))
    assert resumed.returncode == 0 and "Stopped: 3 rounds done" in resumed.stdout


@pytest.mark.real
def test_human_queue_pauses_then_label_and_resume(tmp_path):
    recipe = str(RECIPES[[p.name for p in RECIPES].index("reviews-human.yaml")])
    queue = tmp_path / "queue"
    first = cli("run", recipe, "--out", str(tmp_path / "run"), "--set", f"annotator.queue_dir={queue}",
                "--set", "stop.rounds=2")
    assert first.returncode == 0, first.stderr
    assert "waiting for human labels" in first.stdout
    batch = next(queue.glob("batch-*.jsonl"))
    # A person answers in the terminal: 1 = positive, 2 = negative, for every item of the batch.
    label = subprocess.run([sys.executable, "-m", "curate.cli", "label", str(batch), "--labels", "positive,negative",
                            "--answers", str(queue / "answers.jsonl")], input="1\n2\n" * 10, capture_output=True,
                           text=True)
    assert label.returncode == 0, label.stderr
    assert len((queue / "answers.jsonl").read_text().splitlines()) == 6
    second = cli("resume", str(tmp_path / "run"))
    assert second.returncode == 0, second.stderr
    assert "waiting for human labels" in second.stdout  # round 1 needs a new batch
    import sqlite3

    db = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM labels WHERE source = 'human'").fetchone()[0] == 6


@pytest.mark.real
def test_select_one_shot(tmp_path):
    out = tmp_path / "picked.jsonl"
    proc = cli("select", "sample:reviews", "--strategy", "kcenter", "--budget", "5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and len({r["id"] for r in rows}) == 5
    # With some rows labelled, uncertainty strategies train a model on them first.
    pool = tmp_path / "partly.jsonl"
    lines = [json.loads(line) for line in Path(str(resources.files("curate.data") / "sample_pool.jsonl")).read_text().splitlines()]
    for i, row in enumerate(lines):
        row["label"] = row["label"] if i < 20 else ""
    pool.write_text("".join(json.dumps(r) + "\n" for r in lines))
    proc = cli("select", str(pool), "--strategy", "entropy", "--budget", "4", "--labels", "positive,negative",
               "--out", str(tmp_path / "u.csv"))
    assert proc.returncode == 0, proc.stderr
    import csv

    picked = list(csv.DictReader((tmp_path / "u.csv").open()))
    assert len(picked) == 4 and all(int(row["id"]) >= 20 for row in picked)  # only unlabelled rows
    bad = cli("select", "sample:reviews", "--strategy", "entropy", "--budget", "4", "--out", str(tmp_path / "x.jsonl"))
    assert bad.returncode == 2 and "class probabilities" in bad.stderr
