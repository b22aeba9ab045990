"""What every cell runner shares: strategies by name (peers included), annotators, ledgers and stopping
from the recipe, the per-round metrics log, and the rows a finished cell contributes to the table.

A cell's rows come from its run folder alone: the loop's journal (labels, money, tokens, timings,
selection time) and ``metrics.jsonl`` (every metric the runner measured per round). So the table can
be rebuilt from the run folders, and a resumed cell gives the same rows as an uninterrupted one
(timings aside).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from curate.errors import ConfigError
from curate.journal import FILE as JOURNAL_FILE
from curate.jsonl import iter_jsonl

__all__ = ["MetricsLog", "build_cell_annotator", "check_strategy", "build_ledger", "build_stopping", "build_strategy", "cell_rows",
           "init_strategy"]

PEER_PREFIX = "small-text:"


def build_strategy(config, name: str, context=None, **extra: Any):
    """The strategy a grid's ``strategy`` value names: an alias from ``strategies``, a ``curate.acquire``
    name, or a peer (``small-text:ClassName``); ``context`` (a StrategyContext: the cell's learner, seed)
    for strategies that read it."""
    spec = config.strategy(name)
    params = {**spec.params, **extra}
    if spec.name.startswith(PEER_PREFIX):
        from curate.bench.peers import SmallTextStrategy

        return SmallTextStrategy(spec.name[len(PEER_PREFIX):], **params)
    from curate.acquire import REGISTRY

    return REGISTRY.build(spec.name, params, context)


def check_strategy(config, name: str) -> None:
    """Raise ``ConfigError`` now for a strategy name that cannot be built (before a benchmark starts)."""
    from curate.acquire import REGISTRY
    from curate.errors import did_you_mean

    spec = config.strategy(name)
    if not spec.name:
        raise ConfigError(f"strategies.{name} names no strategy ('name:').")
    if spec.name.startswith(PEER_PREFIX):
        from curate.bench.peers import check_peer

        check_peer(spec.name[len(PEER_PREFIX):])
    elif spec.name not in REGISTRY:
        known = REGISTRY.names()
        raise ConfigError(f"grid.strategy '{name}' is not a strategy. Known: {', '.join(known)}, or "
                          f"small-text:ClassName.{did_you_mean(spec.name, known)}")


def init_strategy(config, cell, context=None):
    """The strategy of round 0 (:meth:`BenchConfig.init_for`)."""
    return build_strategy(config, config.init_for(cell), context)


def build_cell_annotator(config, cell, classes, pool, index, backend_factory: Callable[[], Any]):
    """The annotator of ``annotators[cell.annotator]`` (gold, llm, hybrid; people are not simulated here)."""
    from curate.build import annotator_from, labeller_from

    spec = config.annotators[cell.annotator]
    if spec.kind == "human" or (spec.kind == "hybrid" and spec.human != "gold"):
        raise ConfigError(f"annotators.{cell.annotator}: a benchmark cannot wait for people; use kind gold, llm, or "
                          "hybrid with human: gold (people simulated by the gold labels).")
    return annotator_from(spec, labels=list(classes), where=f"annotators.{cell.annotator}",
                          machine=lambda: labeller_from(spec, list(classes), index=index, backend=backend_factory))


def build_ledger(config, cell):
    from curate.build import ledger_from

    return ledger_from(config.prices, config.schedules[cell.schedule].money)


def build_stopping(config, cell):
    from curate.build import stopping_from
    from curate.config import StopConfig

    return stopping_from(StopConfig(rounds=config.schedules[cell.schedule].rounds))


class MetricsLog:
    """Per-round metrics of one cell, appended to ``metrics.jsonl`` in its run folder.

    ``evaluator(fn)`` is the loop's ``evaluate``: it calls ``fn(learner) -> {name: value}``, writes the
    values under the round being trained, and gives the loop the primary metric. Rounds are counted
    from the journal, so a resumed cell writes under the right round; the last line of a round wins
    (a crash between the metrics and the journal's commit rewrites that round).
    """

    def __init__(self, run_dir: str | Path, names: tuple[str, ...], *, progress: Callable[[str], None] | None = None,
                 slow_seconds: float = 20.0) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.names = tuple(names)
        self.round = _trained_rounds(Path(run_dir) / JOURNAL_FILE)
        self.progress = progress
        self.slow_seconds = slow_seconds  # rounds slower than this are reported as they finish
        self._clock = time.perf_counter()

    def evaluator(self, fn: Callable[[Any], Mapping[str, float]]) -> Callable[[Any], float]:
        def evaluate(learner) -> float:
            values = {k: None if v is None else float(v) for k, v in dict(fn(learner)).items()}
            missing = [n for n in self.names if n not in values]
            if missing:
                raise ConfigError(f"The benchmark's evaluate function returned no {missing} (it promised {self.names}).")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"round": self.round, **values}) + "\n")
            now = time.perf_counter()
            if self.progress is not None and now - self._clock > self.slow_seconds:
                value = values[self.names[0]]
                shown = "-" if value is None else f"{value:.4f}"
                self.progress(f"    round {self.round}: {self.names[0]} {shown} ({now - self._clock:.0f}s)")
            self._clock = now
            self.round += 1
            return values[self.names[0]]

        return evaluate

    @staticmethod
    def read(run_dir: str | Path) -> dict[int, dict[str, float]]:
        path = Path(run_dir) / "metrics.jsonl"
        out: dict[int, dict[str, float]] = {}
        if path.exists():
            for _, row in iter_jsonl(path):
                out[int(row.pop("round"))] = row
        return out


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)


def _trained_rounds(path: Path) -> int:
    if not path.exists():
        return 0
    db = _connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM rounds WHERE status = 'trained'").fetchone()[0]
    except sqlite3.OperationalError:  # a journal created but never written
        return 0
    finally:
        db.close()


def cell_rows(run_dir: str | Path, cell, metric_names: tuple[str, ...], currency: str) -> list[dict]:
    """One row per trained round of the cell in ``run_dir``: cumulative labels, money and tokens, the
    round's wall and selection time, ``picks`` (a digest of the items bought up to that round, so the
    report can tell strategies that picked the same items from the table alone), and every metric
    (the primary also as ``metric``)."""
    run_dir = Path(run_dir)
    db = _connect(run_dir / JOURNAL_FILE)
    try:
        rounds = db.execute("SELECT round, labels, spent_micros, metric, started, finished, info FROM rounds "
                            "WHERE status = 'trained' ORDER BY round").fetchall()
        charges = db.execute("SELECT round, COUNT(item_id), SUM(human_labels), SUM(input_tokens), SUM(output_tokens) "
                             "FROM charges GROUP BY round").fetchall()
        sources = db.execute("SELECT round, source, COUNT(*) FROM labels WHERE label IS NOT NULL "
                             "GROUP BY round, source").fetchall()
        bought = db.execute("SELECT round, item_id FROM labels").fetchall()
    finally:
        db.close()
    per_round = {r[0]: r[1:] for r in charges}
    by_source: dict[int, dict[str, int]] = {}
    for r, source, n in sources:
        by_source.setdefault(r, {})[source] = n
    metrics = MetricsLog.read(run_dir)
    picks = _picks_digests(bought, [r[0] for r in rounds])
    rows, elapsed, human, tin, tout, llm_labels = [], 0.0, 0, 0, 0, 0
    previous_finished = None
    for r, labels, spent_micros, metric, started, finished, info in rounds:
        info = json.loads(info or "{}")
        _, h, i, o = per_round.get(r, (0, 0, 0, 0))
        human, tin, tout = human + (h or 0), tin + (i or 0), tout + (o or 0)
        llm_labels += by_source.get(r, {}).get("llm", 0)
        # A round runs from the end of the one before (predictions for the pool, selection, then the
        # journalled part: annotation, training, evaluation); round 0's selection precedes its start.
        if previous_finished is None:
            wall = float(finished - started) + float(info.get("select_seconds", 0.0))
        else:
            wall = float(finished - previous_finished)
        previous_finished = finished
        elapsed += wall
        row = {**cell.keys, "round": int(r), "labels": int(labels), "llm_labels": int(llm_labels),
               "human_labels": int(human), "spent": (spent_micros or 0) / 1e6, "currency": currency,
               "input_tokens": int(tin), "output_tokens": int(tout), "wall_seconds": wall,
               "elapsed_seconds": elapsed, "select_seconds": float(info.get("select_seconds", float("nan"))),
               "picks": picks[r], "metric": metric}
        got = metrics.get(int(r), {})
        for name in metric_names:
            row[name] = got.get(name, metric if name == metric_names[0] else None)
        rows.append(row)
    return rows


def _picks_digests(bought: list[tuple[int, int]], rounds: list[int]) -> dict[int, str]:
    """For each round, the first 16 hex digits of the SHA-256 of the sorted ids of the items bought
    in it and every round before."""
    import hashlib

    bought = sorted((int(r), int(item)) for r, item in bought)
    out, held, k = {}, [], 0
    for r in sorted(rounds):
        while k < len(bought) and bought[k][0] <= r:
            held.append(bought[k][1])
            k += 1
        out[r] = hashlib.sha256(",".join(map(str, sorted(held))).encode()).hexdigest()[:16]
    return out
