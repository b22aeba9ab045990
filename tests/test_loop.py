"""The loop engine: rounds, budgets, resume after a crash at any instant, and human pauses."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from curate.acquire import make_strategy
from curate.annotate.base import Annotation, AwaitingHumanLabels, GoldAnnotator
from curate.budget import Ledger, Prices
from curate.errors import ConfigError
from curate.learners import EmbeddingClassifier
from curate.loop import ActiveLoop
from curate.pool import load_pool
from curate.stopping import Plateau

WORKER = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np
    from curate.acquire import make_strategy
    from curate.annotate.base import GoldAnnotator
    from curate.learners import EmbeddingClassifier
    from curate.budget import Ledger, Prices
    from curate.loop import ActiveLoop
    from curate.pool import load_pool
    from curate.stopping import MaxRounds

    class SlowGold(GoldAnnotator):
        def annotate(self, pool, ids, *, labeled=None):
            for ann in super().annotate(pool, ids, labeled=labeled):
                time.sleep(float(os.environ.get("SLOW", "0")))
                yield ann

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = (x[:, 0] - 0.5 * x[:, 1] > 0).astype(int)
    pool = load_pool([{"text": f"item {i}", "label": int(v)} for i, v in enumerate(y)])
    loop = ActiveLoop(pool, strategy=make_strategy("margin"), annotator=SlowGold(),
                      learner=EmbeddingClassifier(x, [0, 1]), run_dir=sys.argv[1], init_size=15, batch_size=15,
                      stopping=MaxRounds(8), ledger=Ledger(Prices(human_per_label=0.25), budget=1000.0), seed=3)
    result = loop.run()
    print(json.dumps({"reason": result.stop_reason, "labels": {str(k): v for k, v in result.labels.items()}}))
''')


def synthetic(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(int)
    return x, y, load_pool([{"text": f"t{i}", "label": int(v)} for i, v in enumerate(y)])


def make_loop(tmp_path, **kw):
    x, y, pool = synthetic()
    args = dict(strategy=make_strategy("margin"), annotator=GoldAnnotator(), learner=EmbeddingClassifier(x, [0, 1]),
                run_dir=tmp_path / "run", init_size=10, batch_size=10,
                evaluate=lambda m: float((m.predict_proba(np.arange(300)).argmax(1) == y).mean()))
    args.update(kw)
    return ActiveLoop(pool, **args)


def test_rounds_learning_and_journal(tmp_path):
    result = make_loop(tmp_path).run()
    assert result.stop_reason == "10 rounds done (max 10)"
    assert [c["labels"] for c in result.curve] == list(range(10, 101, 10))
    assert result.curve[-1]["metric"] > 0.9 and result.curve[-1]["metric"] > result.curve[0]["metric"]
    db = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT item_id) FROM labels").fetchone() == (100, 100)
    assert db.execute("SELECT COUNT(*) FROM rounds WHERE status = 'trained'").fetchone() == (10,)


def test_money_budget_shrinks_the_last_batch(tmp_path):
    ledger = Ledger(Prices(human_per_label=0.3), budget=10.0)  # 33 labels fit, not 40
    result = make_loop(tmp_path, ledger=ledger).run()
    assert len(result.labels) == 33 and result.ledger.spent == pytest.approx(9.9)
    assert result.ledger.spent_micros <= ledger.budget_micros
    assert [c["labels"] for c in result.curve] == [10, 20, 30, 33]
    assert "money budget reached" in result.stop_reason


def test_label_budget_and_plateau(tmp_path):
    result = make_loop(tmp_path, label_budget=25).run()
    assert len(result.labels) == 25 and "label budget" in result.stop_reason
    plateau = make_loop(tmp_path / "p", stopping=Plateau(window=2, min_gain=0.5)).run()
    assert "plateaued" in plateau.stop_reason and len(plateau.curve) == 3


def test_rerun_of_a_finished_run_buys_nothing(tmp_path):
    first = make_loop(tmp_path).run()
    again = make_loop(tmp_path).run()
    assert again.labels == first.labels and again.ledger.spent == first.ledger.spent


def test_resume_with_another_seed_is_refused(tmp_path):
    make_loop(tmp_path, stopping=Plateau(window=1, min_gain=1.0)).run()
    with pytest.raises(ConfigError, match="another pool or seed"):
        make_loop(tmp_path, seed=9).run()


def test_failed_annotations_are_paid_and_not_bought_again(tmp_path):
    class Flaky(GoldAnnotator):
        def annotate(self, pool, ids, *, labeled=None):
            for ann in super().annotate(pool, ids, labeled=labeled):
                yield ann if ann.item_id % 3 else Annotation(ann.item_id, None, "llm", note="unparseable",
                                                             input_tokens=10)

    ledger = Ledger(Prices(human_per_label=1.0, llm_input_per_million=1e5))
    result = make_loop(tmp_path, annotator=Flaky(), ledger=ledger).run()
    db = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    failed = db.execute("SELECT COUNT(*) FROM labels WHERE label IS NULL").fetchone()[0]
    assert failed > 0 and len(result.labels) + failed == 100
    assert all(i % 3 for i in result.labels)
    assert result.ledger.totals()["spent_llm"] == pytest.approx(failed * 10 * 0.1)


def test_human_queue_pause_and_resume(tmp_path):
    class Queue(GoldAnnotator):
        """Answers only ids in `answered`; asks for the rest like a human queue."""

        answered: set = set()

        def annotate(self, pool, ids, *, labeled=None):
            missing = [i for i in ids.tolist() if i not in self.answered]
            yield from super().annotate(pool, np.array([i for i in ids.tolist() if i in self.answered]))
            if missing:
                raise AwaitingHumanLabels("queue.jsonl", len(missing))

    Queue.answered = set(range(0, 300, 2))
    paused = make_loop(tmp_path, annotator=Queue()).run()
    assert paused.waiting and "waiting for human labels" in paused.stop_reason
    Queue.answered = set(range(300))
    done = make_loop(tmp_path, annotator=Queue()).run()
    assert not done.waiting and set(paused.labels) <= set(done.labels)


def test_bad_parameters(tmp_path):
    with pytest.raises(ConfigError, match="'batch_size' parameter"):
        make_loop(tmp_path, batch_size=0)


def _labels_in(journal: Path) -> int:
    """Labels committed in a journal. A file a kill left before its schema was made (0 bytes, or
    only the WAL header) holds none. Read-write, as any SQLite client, so that it may roll back what
    a kill left half-written; a file that is not there is not created."""
    if not journal.exists():
        return 0
    db = sqlite3.connect(journal, timeout=60)
    try:
        return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    except sqlite3.OperationalError as e:
        if "no such table" not in str(e):
            raise
        return 0
    finally:
        db.close()


def _kill_when(proc: subprocess.Popen, journal: Path, *, after: float | None = None, labels: int | None = None,
               delay: float = 0.0) -> bool:
    """SIGKILL ``proc`` once ``after`` seconds have passed since its start or ``journal`` holds
    ``labels`` labels (whichever comes first; then ``delay`` more seconds). False if it exited first."""
    start = time.perf_counter()
    while proc.poll() is None:
        if (after is not None and time.perf_counter() - start >= after) or \
                (labels is not None and _labels_in(journal) >= labels):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def test_sigkill_at_random_points_then_resume(tmp_path):
    """Kill a running loop with SIGKILL at random instants, resume until it finishes, and check
    the journal: every label exactly once, one charge per label, and the same labels an
    uninterrupted run buys.

    No kill depends on the machine's speed to land where it is counted: the first start is killed
    at a random instant early on (start-up, the journal's creation, the first labels: at the latest
    once 15 are in); the next two once the journal holds a random number of labels well short of
    all of them, so at least two kills land mid-run (the labels come at SLOW's pace, a sleep, so
    the last 40 or more take at least 0.4 s however fast the machine is); the later starts at
    random fractions of an uninterrupted run's wall time, which may land anywhere or after the end.
    """
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "SLOW": "0.01", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    clock = time.perf_counter()
    reference = subprocess.run([sys.executable, str(worker), str(tmp_path / "ref")], env=env,
                               capture_output=True, text=True, check=True)
    whole = time.perf_counter() - clock  # one uninterrupted run, start-up included (slower on a busy machine)
    expected = json.loads(reference.stdout.strip().splitlines()[-1])["labels"]
    assert len(expected) == 15 * 8
    rng = np.random.default_rng(11)
    run_dir = tmp_path / "killed"
    journal = run_dir / "journal.sqlite"
    landed = []  # labels in the journal after each kill
    for k in range(8):
        if k == 0:
            when = dict(after=float(rng.uniform(0.0, 0.3) * whole), labels=15)
        elif k < 3:
            when = dict(labels=_labels_in(journal) + int(rng.integers(1, 30)), delay=float(rng.uniform(0, 0.02)))
        else:
            when = dict(after=float(rng.uniform(0.05, 1.0) * whole))
        with open(tmp_path / f"stderr{k}.txt", "w+") as err:
            proc = subprocess.Popen([sys.executable, str(worker), str(run_dir)], env=env, stdout=subprocess.DEVNULL,
                                    stderr=err, text=True)
            killed = _kill_when(proc, journal, **when)
            err.seek(0)
            assert killed or proc.returncode == 0, err.read()  # a resumed start that ends, ends well
        if not killed:
            break
        landed.append(_labels_in(journal))
    # Whatever is left, the last start finishes (no kill).
    proc = subprocess.run([sys.executable, str(worker), str(run_dir)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    print("labels after each kill:", landed)
    assert sum(0 < n < len(expected) for n in landed) >= 2, landed  # really interrupted mid-way, more than once
    final = json.loads(out.strip().splitlines()[-1])["labels"]
    assert final == expected
    db = sqlite3.connect(journal)
    ids = [r[0] for r in db.execute("SELECT item_id FROM labels")]
    assert len(ids) == len(set(ids)) == len(expected) == 15 * 8
    charged = [r[0] for r in db.execute("SELECT item_id FROM charges")]
    assert sorted(charged) == sorted(ids)  # one charge per label: nothing bought twice
    assert db.execute("SELECT COUNT(*) FROM rounds WHERE status = 'trained'").fetchone()[0] == 8


def test_initial_labels_are_free_and_journalled_as_seed(tmp_path):
    x, y, _ = synthetic()
    seed = {i: int(y[i]) for i in range(6)}
    result = make_loop(tmp_path, initial_labels=seed, init_size=0, stopping=Plateau(window=1, min_gain=1.0),
                       ledger=Ledger(Prices(human_per_label=1.0))).run()
    assert result.curve[0]["labels"] == 6 and result.curve[0]["spent"] == 0.0
    assert result.curve[1]["labels"] == 16 and result.curve[1]["spent"] == 10.0
    db = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM labels WHERE source = 'seed'").fetchone()[0] == 6
    with pytest.raises(ConfigError, match="outside the pool"):
        make_loop(tmp_path / "b", initial_labels={999: 1})
    with pytest.raises(ConfigError, match="'init_size' parameter"):
        make_loop(tmp_path / "c", init_size=0)


class _PricedGold(GoldAnnotator):
    """Gold labels billed as LLM tokens: item i costs i + 1 output tokens, known exactly up front."""

    def annotate(self, pool, ids, *, labeled=None):
        for ann in super().annotate(pool, ids, labeled=labeled):
            yield Annotation(ann.item_id, ann.label, "llm", output_tokens=ann.item_id + 1)

    def worst_case_micros(self, prices):
        raise AssertionError("an annotator with exact costs is never asked for its worst case")

    def item_micros(self, pool, ids, prices):
        return np.array([prices.micros(output_tokens=int(i) + 1) for i in ids], dtype=np.int64)


class _Probe:
    """A strategy part that pays 3 input tokens per probe, up to 4 probes a selection."""

    def __init__(self):
        self.purses = []

    def worst_case_micros(self, prices):
        return 4 * prices.micros(input_tokens=3)

    def use_purse(self, purse):
        self.purses.append(purse)
        while purse.can_afford(purse.price(input_tokens=3)) and purse.spent_micros < self.worst_case_micros(purse.ledger.prices):
            purse.charge("probe", input_tokens=3)


def test_exact_item_costs_trim_batches_and_probes_are_paid_within_the_budget(tmp_path):
    x, _, pool = synthetic(40)
    prices = Prices(llm_input_per_million=1e6, llm_output_per_million=1e6)  # 1 token = 1.00
    probe = _Probe()
    loop = ActiveLoop(pool, strategy=make_strategy("random"), annotator=_PricedGold(),
                      learner=EmbeddingClassifier(x, [0, 1]), run_dir=tmp_path, init_size=4, batch_size=4,
                      ledger=Ledger(prices, budget=200.0), seed=0, probes=[probe])
    result = loop.run()
    entries = result.ledger.entries
    assert result.ledger.spent_micros <= 200_000_000 and "money budget" in result.stop_reason
    assert all(c.micros == prices.micros(input_tokens=c.input_tokens, output_tokens=c.output_tokens) for c in entries)
    labels = [c for c in entries if c.source == "llm"]
    probes = [c for c in entries if c.source == "probe"]
    assert all(c.item_id is None for c in probes) and probes and len(probe.purses) >= 1
    assert all(c.output_tokens == c.item_id + 1 for c in labels)
    # What is left is less than the cheapest item not yet bought: exact costs use the budget up.
    bought = {c.item_id for c in labels}
    cheapest = min(i + 1 for i in range(40) if i not in bought)
    assert 200_000_000 - result.ledger.spent_micros < cheapest * 1_000_000
    # Probe charges are journalled: a resumed run knows them and buys nothing more.
    again = ActiveLoop(pool, strategy=make_strategy("random"), annotator=_PricedGold(),
                       learner=EmbeddingClassifier(x, [0, 1]), run_dir=tmp_path, init_size=4, batch_size=4,
                       ledger=Ledger(prices, budget=200.0), seed=0, probes=[_Probe()]).run()
    assert again.ledger.spent_micros == result.ledger.spent_micros
    assert [c.source for c in again.ledger.entries] == [c.source for c in entries]


def test_probes_give_way_to_labels_when_money_runs_short(tmp_path):
    x, _, pool = synthetic(40)
    prices = Prices(human_per_label=1.0, llm_input_per_million=1e6)
    probe = _Probe()  # 12.00 a selection
    loop = ActiveLoop(pool, strategy=make_strategy("random"), annotator=GoldAnnotator(),
                      learner=EmbeddingClassifier(x, [0, 1]), run_dir=tmp_path, init_size=4, batch_size=4,
                      ledger=Ledger(prices, budget=22.0), seed=0, probes=[probe])
    result = loop.run()
    # Round 0 buys 4 (no probe); round 1: 18 left, probe worst case 12 -> 6 for labels -> 4 labels,
    # and the probe may spend up to 14 (it spends 12); round 2: 2 left, too little for a probe and
    # a label, so the probe gets nothing and 2 labels are bought.
    assert result.ledger.spent_micros == 22_000_000
    assert sum(1 for c in result.ledger.entries if c.source == "human") == 10
    assert [p.limit_micros for p in probe.purses] == [14_000_000, 0]
