"""A Label Studio round trip on a real Label Studio started here on 127.0.0.1: curate pushes a batch
with predictions, a person answers through the REST API (one against the LLM's prediction), and
the resumed loop pulls the answers and goes on; nothing is pushed twice.

The server is found as ``$CURATE_LABEL_STUDIO``, ``label-studio`` on PATH, or ``../lsvenv`` beside
the repository (``python3 -m venv ../lsvenv && ../lsvenv/bin/pip install label-studio==1.23.2``:
its Django pins want a venv of their own); without one the live tests are skipped. The last test
runs everywhere: the annotator against an in-memory stand-in for the SDK client.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import HashEmbedder

from curate.acquire import make_strategy
from curate.annotate.base import Annotation, AwaitingHumanLabels
from curate.annotate.hybrid import HybridAnnotator
from curate.annotate.label_studio import LabelStudioAnnotator, RecordPredictions
from curate.budget import Ledger, Prices
from curate.learners import EmbeddingClassifier
from curate.loop import ActiveLoop
from curate.pool import load_pool
from curate.stopping import MaxRounds

LABELS = ["pos", "neg"]


def _executable() -> str | None:
    beside = Path(__file__).resolve().parents[2] / "lsvenv" / "bin" / "label-studio"
    for candidate in (os.environ.get("CURATE_LABEL_STUDIO"), shutil.which("label-studio"), str(beside)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(url, token)`` of a fresh Label Studio (temporary data dir, one user and a legacy token)."""
    pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed: pip install 'curate[labelstudio]'")
    exe = _executable()
    if exe is None:
        pytest.skip("no label-studio executable: set CURATE_LABEL_STUDIO, put label-studio on PATH, or install it "
                    "in ../lsvenv (python3 -m venv ../lsvenv && ../lsvenv/bin/pip install label-studio==1.23.2)")
    home = tmp_path_factory.mktemp("label-studio")
    port, token = _free_port(), secrets.token_hex(20)
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(home / "data"), "LABEL_STUDIO_USERNAME": "curate@example.com",
           "LABEL_STUDIO_PASSWORD": secrets.token_hex(12), "LABEL_STUDIO_USER_TOKEN": token,
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
           "HOME": str(home)}
    log = (home / "server.log").open("w")
    started = time.perf_counter()
    proc = subprocess.Popen([exe, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + float(os.environ.get("CURATE_LABEL_STUDIO_WAIT", "300"))
        while True:
            if proc.poll() is not None:
                pytest.fail(f"label-studio exited with {proc.returncode}:\n{(home / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio was not up after the wait:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        print(f"\nlabel-studio up on {url} after {time.perf_counter() - started:.1f} s")
        yield url, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and the workers it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


class Person:
    """Someone working in Label Studio, through its REST API."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=30)

    def project(self, title: str) -> int:
        found = [p for p in self.http.get("/api/projects", params={"title": title}).json()["results"]
                 if p["title"] == title]
        assert len(found) == 1, found
        return found[0]["id"]

    def tasks(self, project: int) -> dict[int, dict]:
        """The project's tasks by curate id (asserting each item is there once)."""
        rows = self.http.get("/api/tasks", params={"project": project, "fields": "all", "page_size": 1000}).json()
        rows = rows["tasks"] if isinstance(rows, dict) else rows
        ids = [t["data"]["curate_id"] for t in rows]
        assert len(ids) == len(set(ids)), f"an item was pushed twice: {sorted(ids)}"
        return {t["data"]["curate_id"]: t for t in rows}

    def answer(self, task: dict, label: str) -> None:
        result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
        self.http.post(f"/api/tasks/{task['id']}/annotations/", json={"result": result}).raise_for_status()

    def next_task(self, project: int) -> dict:
        return self.http.get(f"/api/projects/{project}/next").json()


def _world(n=80, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    gold = ["pos" if v > 0 else "neg" for v in x[:, 0] + 0.4 * x[:, 1]]
    pool = load_pool([{"text": f"review {i}: {'great' if g == 'pos' else 'dull'} film", "label": g}
                      for i, g in enumerate(gold)])
    return x, gold, pool


class FakeLLM:
    """The LLM at its seam: sure (0.95) of items whose id is a multiple of 3, unsure (0.55) of the
    rest, and wrong on every unsure item whose id is even."""

    name = "llm"

    def __init__(self, gold):
        self.gold = gold

    def label(self, i: int) -> tuple[str, float]:
        sure = i % 3 == 0
        wrong = not sure and i % 2 == 0
        return ({"pos": "neg", "neg": "pos"}[self.gold[i]] if wrong else self.gold[i]), (0.95 if sure else 0.55)

    def annotate(self, pool, ids, *, labeled=None):
        for i in np.asarray(ids).tolist():
            label, confidence = self.label(i)
            yield Annotation(i, label, "llm", confidence, input_tokens=20, output_tokens=1)

    def worst_case_micros(self, prices):
        return prices.micros(input_tokens=20, output_tokens=1)


class Recorder:
    """The strategy, keeping each selection for the test to compare with the tasks."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.selections = []

    def select(self, state, budget, *, rng):
        selection = self.strategy.select(state, budget, rng=rng)
        self.selections.append(selection)
        return selection


def _loop(server, run_dir, x, gold, pool, title):
    """A fresh process's view: new annotators, strategy and loop on the same run folder."""
    url, token = server
    people = LabelStudioAnnotator(LABELS, project=title, url=url, api_key=token)
    recorder = Recorder(make_strategy("margin"))
    annotator = HybridAnnotator(RecordPredictions(FakeLLM(gold), people), people, threshold=0.9)
    loop = ActiveLoop(pool, strategy=recorder, annotator=annotator,
                      learner=EmbeddingClassifier(x, LABELS), run_dir=run_dir, init_size=8, batch_size=6,
                      stopping=MaxRounds(2), ledger=Ledger(Prices(human_per_label=0.5)), seed=1)
    return loop, recorder


def _journal(run_dir: Path) -> dict[int, tuple[str, str]]:
    db = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        return {i: (json.loads(label), source) for i, label, source in
                db.execute("SELECT item_id, label, source FROM labels WHERE label IS NOT NULL")}
    finally:
        db.close()


def test_push_annotate_pull_resume_through_a_live_label_studio(server, tmp_path):
    x, gold, pool = _world()
    run_dir, title, person = tmp_path / "run", "curate live hybrid", Person(*server)
    llm = FakeLLM(gold)

    loop, _ = _loop(server, run_dir, x, gold, pool, title)
    first = loop.run()
    assert first.waiting and "waiting for human labels" in first.stop_reason
    project = person.project(title)
    tasks = person.tasks(project)
    routed0 = sorted(tasks)
    assert routed0 and all(i % 3 != 0 for i in routed0)  # the sure ones stayed with the LLM
    for i, task in tasks.items():
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "curate"
        (result,) = prediction["result"]  # the LLM's label and confidence
        assert result["value"]["choices"] == [llm.label(i)[0]] and result["score"] == pytest.approx(0.55)
        assert prediction["score"] == pytest.approx(-(1 - (task["data"]["curate_rank"] - 1) / len(routed0)))
    # Label Studio's uncertainty queue serves curate's first item first.
    assert person.next_task(project)["data"]["curate_rank"] == 1

    # A person answers all but one, with the truth: where the LLM was wrong, against its prediction.
    answered = {i: gold[i] for i in routed0[:-1]}
    assert any(answered[i] != llm.label(i)[0] for i in answered), "the test needs one answer against the prediction"
    for i, label in answered.items():
        person.answer(tasks[i], label)
    second = _loop(server, run_dir, x, gold, pool, title)[0].run()
    assert second.waiting and set(answered) <= set(second.labels)
    assert sorted(person.tasks(project)) == routed0  # asked again: nothing pushed twice

    person.answer(tasks[routed0[-1]], gold[routed0[-1]])
    answered[routed0[-1]] = gold[routed0[-1]]
    loop, recorder = _loop(server, run_dir, x, gold, pool, title)
    third = loop.run()  # round 0 completes, round 1 selects and pushes its unsure items
    assert third.waiting
    tasks = person.tasks(project)
    routed1 = sorted(set(tasks) - set(routed0))
    assert routed1
    (selection,) = recorder.selections
    score_of = dict(zip(selection.ids.tolist(), selection.scores.tolist(), strict=True))
    for i in routed1:  # curate's acquisition score, negated for Label Studio's lowest-first queue
        assert tasks[i]["data"]["curate_score"] == pytest.approx(score_of[i])
        assert tasks[i]["predictions"][0]["score"] == pytest.approx(-score_of[i])
    for i in routed1:
        person.answer(tasks[i], gold[i])
        answered[i] = gold[i]

    done = _loop(server, run_dir, x, gold, pool, title)[0].run()
    assert not done.waiting and "2 rounds" in done.stop_reason, done.stop_reason
    journal = _journal(run_dir)
    assert {i: label for i, (label, source) in journal.items() if source == "human"} == answered
    assert all(source == "llm" and i % 3 == 0 for i, (_, source) in journal.items() if i not in answered)
    assert sorted(person.tasks(project)) == sorted(answered)  # every item pushed once, all answered


@pytest.mark.real
def test_recipe_run_and_resume_with_the_labelstudio_annotator(server, tmp_path, monkeypatch, capsys):
    from curate.cli import main

    url, token = server
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    _, gold, _ = _world(30)
    rows = [{"text": f"review {i}: {'great' if g == 'pos' else 'dull'} film"} for i, g in enumerate(gold)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("paradigm: classify\npool: {path: pool.jsonl}\nlabels: [pos, neg]\n"
                      "init: {strategy: random, size: 4}\nacquire: {strategy: margin, batch_size: 3}\n"
                      "annotator: {kind: labelstudio, label_studio: {project: curate live recipe}}\n"
                      "prices: {human_per_label: 0.1}\nstop: {rounds: 2}\n")
    run_dir, person = tmp_path / "run", Person(url, token)
    assert main(["--quiet", "run", str(recipe), "--out", str(run_dir)]) == 0
    answered = {}
    for step in range(3):
        out = capsys.readouterr().out
        assert token not in out
        if step == 2:
            break
        assert "waiting for human labels" in out, out
        tasks = person.tasks(person.project("curate live recipe"))
        for i, task in tasks.items():
            if i not in answered:
                person.answer(task, gold[i])
                answered[i] = gold[i]
        assert main(["--quiet", "resume", str(run_dir)]) == 0
    assert "Stopped: 2 rounds done" in out, out
    assert len(answered) == 7
    assert {i: label for i, (label, _) in _journal(run_dir).items()} == answered
    assert not any(token in p.read_text(errors="ignore") for p in run_dir.rglob("*") if p.is_file()
                   and p.suffix in (".yaml", ".json", ".jsonl", ".txt", ".log"))


# ---------------------------------------------------------------------------------------------- offline


class _Page(list):
    pass


class FakeSDK:
    """Just the SDK calls the annotator makes, over a dict; enough to check its logic anywhere."""

    def __init__(self):
        self.projects_, self.tasks_ = {}, []
        self.projects = self
        self.tasks = self
        self.imports = 0

    def list(self, **kw):  # projects.list(title=...) and tasks.list(project=...)
        if "title" in kw:
            return _Page(p for p in self.projects_.values() if kw["title"] in p["title"])
        return _Page(t for t in self.tasks_ if t["project"] == kw["project"])

    def create(self, **kw):
        project = {"id": len(self.projects_) + 1, **kw}
        self.projects_[project["id"]] = project
        return project

    def update(self, *, id, **kw):
        self.projects_[id].update(kw)
        return self.projects_[id]

    def import_tasks(self, *, id, request):
        self.imports += 1
        for t in request:
            self.tasks_.append({"id": len(self.tasks_) + 1, "project": id, "annotations": [], **t})


def test_the_annotator_against_a_stand_in_client():
    _, gold, pool = _world(20)
    sdk = FakeSDK()
    sdk.create(title="curate", label_config="<View/>")  # found by title, its choices refreshed
    people = LabelStudioAnnotator(LABELS, project="curate", client=sdk)
    assert "key" not in repr(people).lower()
    people.suggest(4, "neg", 0.6)
    people.use_scores([4, 7], [0.9, 0.2])
    with pytest.raises(AwaitingHumanLabels, match="2 item"):
        list(people.annotate(pool, np.array([4, 7])))
    assert "Choice value=\"pos\"" in sdk.projects_[1]["label_config"]
    first, second = sdk.tasks_
    assert first["data"]["curate_id"] == 4 and first["predictions"][0]["score"] == -0.9
    assert first["predictions"][0]["result"][0]["value"]["choices"] == ["neg"]
    assert second["predictions"][0]["result"] == []
    first["annotations"] = [{"result": [{"value": {"choices": ["pos"]}}]}]
    with pytest.raises(AwaitingHumanLabels, match="1 item"):
        got = []
        for a in people.annotate(pool, np.array([4, 7])):
            got.append(a)
    assert [(a.item_id, a.label, a.human_labels) for a in got] == [(4, "pos", 1)] and sdk.imports == 1
    second["annotations"] = [{"result": [{"value": {"choices": ["mixed"]}}]}]
    with pytest.raises(ValueError, match="Label Studio project 1 at .*unknown label 'mixed'"):
        list(people.annotate(pool, np.array([4, 7])))


def test_a_recipe_run_pushes_the_acquisition_scores(tmp_path, monkeypatch):
    """``curate run`` with ``annotator.kind: labelstudio``: the loop hands each round's selection
    scores to the annotator, so round 1's tasks carry margin's own scores (negated in the
    prediction), not the order's; round 0 (random: no scores) falls back to the order."""
    import curate.paradigms.classify.run as classify_run

    import curate.embed
    from curate.cli import main

    sdk, selections = FakeSDK(), []
    monkeypatch.setattr(LabelStudioAnnotator, "from_options", classmethod(  # the recipe's options, the stand-in SDK
        lambda cls, labels, options, **kw: cls(labels, client=sdk, **dict(options or {}))))
    monkeypatch.setattr(curate.embed, "load_embedder", lambda *a, **k: HashEmbedder())
    strategy_from = classify_run.strategy_from

    def recorded(*args, **kwargs):
        recorder = Recorder(strategy_from(*args, **kwargs))
        selections.append(recorder.selections)
        return recorder

    monkeypatch.setattr(classify_run, "strategy_from", recorded)
    _, gold, _ = _world(30)
    words = ["great", "fine", "dull", "bad", "superb", "awful"]
    rows = [{"text": f"review {i}: a {words[i % 6]} {'great' if g == 'pos' else 'dull'} film"} for i, g in enumerate(gold)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("paradigm: classify\npool: {path: pool.jsonl}\nlabels: [pos, neg]\n"
                      "init: {strategy: random, size: 4}\nacquire: {strategy: margin, batch_size: 3}\n"
                      "annotator: {kind: labelstudio, label_studio: {project: offline recipe}}\n"
                      "prices: {human_per_label: 0.1}\nstop: {rounds: 2}\n")
    run_dir = tmp_path / "run"
    assert main(["--quiet", "run", str(recipe), "--out", str(run_dir)]) == 0
    round0 = list(sdk.tasks_)
    assert len(round0) == 4 and all(t["data"]["curate_score"] is None for t in round0)  # random gives no scores
    assert sorted(-t["predictions"][0]["score"] for t in round0) == [0.25, 0.5, 0.75, 1.0]  # the order stands in
    for task in round0:
        task["annotations"] = [{"result": [{"value": {"choices": [gold[task["data"]["curate_id"]]]}}]}]
    assert main(["--quiet", "resume", str(run_dir)]) == 0
    round1 = sdk.tasks_[4:]
    acquire = [s for run in selections for s in run if s.scores is not None]  # margin's, in the resumed run
    assert len(round1) == 3 and len(acquire) == 1
    score_of = dict(zip(acquire[0].ids.tolist(), acquire[0].scores.tolist(), strict=True))
    assert sorted(t["data"]["curate_id"] for t in round1) == sorted(score_of)
    for task in round1:
        score = score_of[task["data"]["curate_id"]]
        assert task["data"]["curate_score"] == pytest.approx(score)
        assert task["predictions"][0]["score"] == pytest.approx(-score)
    order = {1.0, 1 - 1 / 3, 1 - 2 / 3}
    assert not all(any(abs(s - o) < 1e-9 for o in order) for s in score_of.values())  # not the order's stand-in
