"""Run a benchmark grid: every cell through the loop engine in its own run folder, then one tidy table.

Layout of a benchmark folder (``RUN_DIR``)::

    bench.yaml            the resolved recipe          versions.json   package versions, machine
    cells/<cell>/         one run folder per cell: journal.sqlite, metrics.jsonl, cell.json, rows.json
    results.parquet       the table: one row per (cell, round)   results.csv   the same, as CSV
    speed.parquet/.csv    the speed table (when the recipe has a speed section)

A cell is done when ``rows.json`` exists: a rerun skips it. A cell stopped half-way resumes from its
journal (no label is bought twice) and gives the rows an uninterrupted run would (timings aside).
A cell folder written with another definition (another schedule, learner, prices...) is refused
rather than mixed in. The table is rewritten after every cell, so a stopped benchmark leaves the
rows of the cells it finished.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curate.bench.config import BenchConfig, Cell, expand_grid
from curate.errors import ConfigError

__all__ = ["BenchResult", "TABLE", "read_table", "rebuild_rows", "run_bench", "write_table"]

logger = logging.getLogger(__name__)

TABLE = "results"


@dataclass
class BenchResult:
    out: Path
    cells: list[Cell]
    ran: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    waiting: list[Cell] = field(default_factory=list)


def run_bench(config: BenchConfig, out: str | Path, *, progress: Callable[[str], None] | None = None,
              limit: int | None = None) -> BenchResult:
    """Run (or resume) every cell of ``config``'s grid under ``out``; write the table.

    Args:
        progress: called with one line per cell (the CLI prints them).
        limit: run at most this many cells that are not done yet, then stop (for smoke runs and tests).
    """
    from curate.bench.registry import load_runner

    out = Path(out)
    say = progress or (lambda line: None)
    cells = expand_grid(config)
    runners = {name: load_runner(name, config) for name in dict.fromkeys(c.paradigm for c in cells)}
    for cell in cells:
        runners[cell.paradigm].check(cell)
    _write_metadata(config, out)
    result = BenchResult(out, cells)
    started = time.perf_counter()
    todo = [c for c in cells if not _done(out, c, config)]
    pending = set(todo)
    result.skipped = [c for c in cells if c not in pending]
    if result.skipped:
        say(f"{len(result.skipped)} of {len(cells)} cells already done in {out}; {len(todo)} to run")
    run_times: list[float] = []
    for n, cell in enumerate(todo, start=1):
        if limit is not None and n > limit:
            break
        folder = out / "cells" / cell.folder
        runner = runners[cell.paradigm]
        clock = time.perf_counter()
        loop_result = _run_cell(config, cell, folder, runner, say)
        seconds = time.perf_counter() - clock
        run_times.append(seconds)
        if getattr(loop_result, "waiting", False):
            result.waiting.append(cell)
            say(f"[{n}/{len(todo)}] {cell.describe()}: waiting for people; it resumes on the next run")
            continue
        rows = _finish_cell(config, cell, folder, runner)
        result.ran.append(cell)
        write_table(out, cells, config)
        eta = sum(run_times) / len(run_times) * (len(todo) - n)
        primary = runner.metrics[0]
        first, last = rows[0] if rows else {}, rows[-1] if rows else {}
        say(f"[{n}/{len(todo)}] {cell.describe()}: {len(rows)} rounds, {primary} "
            f"{_fmt(first.get(primary))} @ {first.get('labels')} -> {_fmt(last.get(primary))} @ {last.get('labels')} "
            f"labels, spent {last.get('spent', 0):.2f}; {seconds:.1f}s (elapsed {time.perf_counter() - started:.0f}s, "
            f"about {eta:.0f}s left)")
    result.rows = write_table(out, cells, config)
    result.seconds = time.perf_counter() - started
    return result


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _write_metadata(config: BenchConfig, out: Path) -> None:
    from dataclasses import asdict

    from curate.env import environment_report

    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    (out / "versions.json").write_text(json.dumps(environment_report(), indent=2))


def _done(out: Path, cell: Cell, config: BenchConfig) -> bool:
    folder = out / "cells" / cell.folder
    _check_fingerprint(folder, cell, config)
    return (folder / "rows.json").exists()


def _check_fingerprint(folder: Path, cell: Cell, config: BenchConfig) -> None:
    meta = folder / "cell.json"
    if not meta.exists():
        return
    stored = json.loads(meta.read_text()).get("fingerprint")
    if stored != cell.fingerprint(config):
        raise ConfigError(f"{folder} holds cell '{cell.describe()}' run with another definition (dataset, schedule, "
                          "strategy parameters, learner, prices or annotator changed). Use a new --out folder, or "
                          "delete that cell's folder to rerun it.")


def _run_cell(config: BenchConfig, cell: Cell, folder: Path, runner, say: Callable[[str], None]):
    from curate.bench.cells import MetricsLog

    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "cell.json"
    if not meta.exists():
        meta.write_text(json.dumps({**cell.keys, "fingerprint": cell.fingerprint(config),
                                    "metrics": list(runner.metrics)}, indent=1))
    return runner.run(cell, folder, MetricsLog(folder, tuple(runner.metrics), progress=say))


def _finish_cell(config: BenchConfig, cell: Cell, folder: Path, runner) -> list[dict]:
    from curate.bench.cells import cell_rows

    rows = cell_rows(folder, cell, tuple(runner.metrics), config.prices.currency)
    tmp = folder / "rows.json.tmp"
    tmp.write_text(json.dumps(rows))
    tmp.replace(folder / "rows.json")  # atomic: a cell is done exactly when its rows are all there
    return rows


def rebuild_rows(config: BenchConfig, out: str | Path) -> int:
    """Rewrite every done cell's rows from its journal and metrics log (after an upgrade of curate that
    changes how rows are derived), then the table; returns the number of cells rewritten. Runs nothing."""
    from curate.bench.registry import load_runner

    out = Path(out)
    cells = expand_grid(config)
    runners = {name: load_runner(name, config) for name in dict.fromkeys(c.paradigm for c in cells)}
    done = [c for c in cells if _done(out, c, config)]
    for cell in done:
        _finish_cell(config, cell, out / "cells" / cell.folder, runners[cell.paradigm])
    write_table(out, cells, config)
    return len(done)


def write_table(out: str | Path, cells: list[Cell], config: BenchConfig | None = None) -> int:
    """Gather the rows of the done cells, in grid order, into ``results.parquet`` and ``results.csv``."""
    import pandas as pd

    out = Path(out)
    rows: list[dict] = []
    for cell in cells:
        path = out / "cells" / cell.folder / "rows.json"
        if path.exists():
            rows.extend(json.loads(path.read_text()))
    frame = pd.DataFrame(rows)
    if not len(frame):
        return 0
    fixed = [*Cell.KEYS, "round", "labels", "llm_labels", "human_labels", "spent", "currency", "input_tokens",
             "output_tokens", "wall_seconds", "elapsed_seconds", "select_seconds", "metric"]
    frame = frame[[c for c in fixed if c in frame] + [c for c in frame if c not in fixed]]
    for suffix, write in ((".parquet", lambda p: frame.to_parquet(p, index=False)),
                          (".csv", lambda p: frame.to_csv(p, index=False))):
        tmp = out / f"{TABLE}{suffix}.tmp"
        write(tmp)
        tmp.replace(out / f"{TABLE}{suffix}")
    return len(frame)


def read_table(out: str | Path):
    """The benchmark table of ``out`` (Parquet, or the CSV when the Parquet file is missing)."""
    import pandas as pd

    out = Path(out)
    if (out / f"{TABLE}.parquet").exists():
        return pd.read_parquet(out / f"{TABLE}.parquet")
    if (out / f"{TABLE}.csv").exists():
        return pd.read_csv(out / f"{TABLE}.csv")
    raise ConfigError(f"{out} holds no benchmark table ({TABLE}.parquet or {TABLE}.csv). Run `curate bench RECIPE "
                      f"--out {out}` first.")
