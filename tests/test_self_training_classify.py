"""Self-training for classification: confident predictions as capped, marked pseudo-labels."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from curate.errors import ConfigError
from curate.learners import ClassSelfTraining, EmbeddingClassifier
from curate.pseudo import pseudo_cap


def two_blobs(n=100, seed=0):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal([3, 0], 0.5, size=(n, 2)), rng.normal([-3, 0], 0.5, size=(n, 2))])
    # one ambiguous point in the middle: never confident enough to be pseudo-labelled
    x[-1] = [0.0, 0.0]
    return x.astype(np.float32), np.array(["pos"] * n + ["neg"] * n)


def test_pseudo_labels_are_the_most_confident_capped_and_correct():
    x, y = two_blobs()
    learner = EmbeddingClassifier(x, ["neg", "pos"], C=10.0, self_training={"threshold": 0.9, "max_fraction": 0.5})
    bought = np.array([0, 1, 100, 101])
    learner.fit(bought, y[bought])
    rows = learner.pseudo_rows()
    assert len(rows) == pseudo_cap(0.5, 4) == 4                 # half the training rows at most
    assert all(r["label"] == y[r["id"]] for r in rows)          # far from the boundary: right
    assert all(r["probability"] >= 0.9 for r in rows) and not set(r["id"] for r in rows) & set(bought)
    # they are the most confident of all unlabelled items
    unlabelled = np.setdiff1d(np.arange(len(x)), bought)
    plain = EmbeddingClassifier(x, ["neg", "pos"], C=10.0)
    plain.fit(bought, y[bought])
    top = plain.predict_proba(unlabelled).max(1)
    assert min(r["probability"] for r in rows) >= np.sort(top)[-4] - 1e-12
    assert len(x) - 1 not in {r["id"] for r in rows}


def test_nothing_confident_means_no_pseudo_labels_and_the_plain_model():
    x, y = two_blobs()
    learner = EmbeddingClassifier(x, ["neg", "pos"], self_training={"threshold": 1.0, "max_fraction": 0.5})
    plain = EmbeddingClassifier(x, ["neg", "pos"])
    bought = np.array([0, 100])
    learner.fit(bought, y[bought])
    plain.fit(bought, y[bought])
    assert learner.pseudo_rows() == []
    np.testing.assert_allclose(learner.predict_proba(), plain.predict_proba())


def test_pseudo_labels_are_recomputed_from_the_bought_labels_each_fit():
    x, y = two_blobs()
    learner = EmbeddingClassifier(x, ["neg", "pos"], self_training={"threshold": 0.9, "max_fraction": 0.2})
    learner.fit(np.array([0, 100]), ["pos", "neg"])
    first = {r["id"] for r in learner.pseudo_rows()}
    learner.fit(np.array([0, 100, 2, 102]), ["pos", "neg", "pos", "neg"])
    second = {r["id"] for r in learner.pseudo_rows()}
    assert len(first) == pseudo_cap(0.2, 2) == 0 and len(second) == pseudo_cap(0.2, 4) == 1
    learner.fit(np.array([0, 100]), ["pos", "neg"])
    assert learner.pseudo_rows() == []   # nothing carried over


@pytest.mark.parametrize("spec, match", [({"threshold": 1.5}, "threshold must be a probability"),
                                         ({"max_fraction": 1.0}, r"max_fraction must lie in \[0, 1\)"),
                                         ({"treshold": 0.9}, "Unknown key 'learner.self_training.treshold'")])
def test_bad_settings_are_clear_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        ClassSelfTraining.of(spec)


@pytest.mark.real
def test_a_run_exports_pseudo_labels_marked(tmp_path):
    recipe = Path(str(resources.files("curate.recipes"))) / "reviews-gold.yaml"
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "curate.cli", "--quiet", "run", str(recipe), "--out", str(out),
                           "--set", "stop.rounds=2", "--set", "learner.self_training={threshold: 0.6, max_fraction: 0.25}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    pseudo = [r for r in rows if r["source"] == "pseudo"]
    bought = [r for r in rows if r["source"] != "pseudo"]
    assert bought and len(pseudo) == pseudo_cap(0.25, len(bought))
    assert all(r["probability"] >= 0.6 and r["round"] is None for r in pseudo)
    assert not {r["id"] for r in pseudo} & {r["id"] for r in bought}
