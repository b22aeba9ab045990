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

The table holds every finished cell in the folder, not only those of the grid being run: a sub-grid
(``--set grid.strategy=[kcenter]``, another seed list) run into a benchmark folder adds its cells
beside the others. A finished cell outside the grid is checked against the recipe where the recipe
defines its schedule and annotator, and refused when the recipe would define it otherwise (one
folder holds one recipe's cells: sub-grids of it, not other recipes under the same names).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from curate.bench.config import BenchConfig, Cell, expand_grid
from curate.errors import ConfigError

__all__ = ["BenchResult", "TABLE", "finished_cells", "plan", "read_table", "rebuild_rows", "run_bench", "write_table"]

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
    others: list[Cell] = field(default_factory=list)  # finished cells in the folder outside this grid (kept in the table)


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
    others = _check_others(config, out, cells)
    _write_metadata(config, out)
    result = BenchResult(out, cells, others=others)
    started = time.perf_counter()
    todo = [c for c in cells if not _done(out, c, config)]
    pending = set(todo)
    result.skipped = [c for c in cells if c not in pending]
    if result.skipped:
        say(f"{len(result.skipped)} of {len(cells)} cells already done in {out}; {len(todo)} to run")
    if others:
        say(f"{len(others)} finished cell(s) in {out} outside this grid stay in the table and the report")
    run_times: list[tuple[float, float, bool]] = []  # (wall, loop time from the journal, first of its dataset)
    loaded: set[tuple[str, str]] = set()
    for n, cell in enumerate(todo, start=1):
        if limit is not None and n > limit:
            break
        folder = out / "cells" / cell.folder
        runner = runners[cell.paradigm]
        clock = time.perf_counter()
        loop_result = _run_cell(config, cell, folder, runner, say)
        seconds = time.perf_counter() - clock
        first = (cell.paradigm, cell.dataset) not in loaded
        loaded.add((cell.paradigm, cell.dataset))
        if getattr(loop_result, "waiting", False):
            result.waiting.append(cell)
            say(f"[{n}/{len(todo)}] {cell.describe()}: waiting for people; it resumes on the next run")
            continue
        rows = _finish_cell(config, cell, folder, runner)
        result.ran.append(cell)
        write_table(out, cells, config)
        run_times.append((seconds, float(rows[-1]["elapsed_seconds"]) if rows else seconds, first))
        per_cell = _per_cell_seconds(run_times)
        eta = per_cell * (len(todo) - n)
        setup = f"; one-time setup {seconds - per_cell:.0f}s not counted per cell" if first and seconds - per_cell > 1 else ""
        unloaded = len({(c.paradigm, c.dataset) for c in todo[n:]} - loaded)
        later = f" + the setup of {unloaded} dataset(s) not loaded yet" if unloaded else ""
        primary = runner.metrics[0]
        first_row, last = rows[0] if rows else {}, rows[-1] if rows else {}
        say(f"[{n}/{len(todo)}] {cell.describe()}: {len(rows)} rounds, {primary} "
            f"{_fmt(first_row.get(primary))} @ {first_row.get('labels')} -> {_fmt(last.get(primary))} @ {last.get('labels')} "
            f"labels, spent {last.get('spent', 0):.2f}; {seconds:.1f}s{setup} (elapsed {time.perf_counter() - started:.0f}s, "
            f"about {eta:.0f}s left{later})")
    result.rows = write_table(out, cells, config)
    result.seconds = time.perf_counter() - started
    return result


def _per_cell_seconds(times: list[tuple[float, float, bool]]) -> float:
    """The mean time of a cell, without one-time setup. The first cell of a dataset in a process pays
    for loading and embedding it (and for loading the models): for it, the loop's own time from its
    journal plus the median overhead outside the loop of the cells that were not first stands in."""
    overheads = [max(0.0, wall - loop) for wall, loop, first in times if not first]
    overhead = float(np.median(overheads)) if overheads else 0.0
    return float(np.mean([min(wall, loop + overhead) if first else wall for wall, loop, first in times]))


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
    _write_rows(folder, rows)
    return rows


def _write_rows(folder: Path, rows: list[dict]) -> None:
    tmp = folder / "rows.json.tmp"
    tmp.write_text(json.dumps(rows))
    tmp.replace(folder / "rows.json")  # atomic: a cell is done exactly when its rows are all there


def plan(config: BenchConfig, out: str | Path | None = None) -> list[str]:
    """What ``curate bench RECIPE --dry-run`` prints: the cells (and how many are already done in
    ``out``), each schedule's labels after every round (round 0 first), and the most the grid can
    spend. Loads no data and runs nothing."""
    cells = expand_grid(config)
    g = config.grid
    product = 1
    for axis in ("paradigm", "dataset", "strategy", "schedule", "annotator", "seed"):
        product *= len(getattr(g, axis))
    plural = {"strategy": "strategies"}
    sizes = " x ".join(f"{len(getattr(g, a))} {a if len(getattr(g, a)) == 1 else plural.get(a, a + 's')}"
                       for a in ("paradigm", "dataset", "strategy", "schedule", "annotator", "seed"))
    excluded = f", less {product - len(cells)} excluded by grid.exclude" if product != len(cells) else ""
    lines = [f"benchmark '{config.name}': {sizes} = {product} cells{excluded}: {len(cells)} to run"]
    if out is not None and (Path(out) / "cells").is_dir():
        done = sum(1 for c in cells if (Path(out) / "cells" / c.folder / "rows.json").exists())
        lines.append(f"  {done} of them already done in {out}")
    prices, currency = config.prices, config.prices.currency
    total = 0.0
    for name in g.schedule:
        schedule = config.schedules[name]
        labels = schedule.planned_labels
        shown = ", ".join(map(str, labels)) if len(labels) <= 12 else \
            f"{', '.join(map(str, labels[:3]))}, ..., {', '.join(map(str, labels[-2:]))}"
        cap = f"; stops at {schedule.money:,.2f} {currency}" if schedule.money is not None else ""
        by = "the cell's own strategy" if schedule.init_strategy == "same" else schedule.init_strategy
        lines.append(f"  schedule {name}: {schedule.rounds} rounds, round 0 included: {shown} labels "
                     f"(init {schedule.init} by {by}, then {schedule.batch} a round{cap})")
        own = {c.strategy: config.init_for(c) for c in cells if c.schedule == name
               and config.strategy(c.strategy).init is not None}
        if own:
            lines.append("    arms with their own round 0: " + ", ".join(f"{arm} (by {init})" for arm, init in own.items()))
        for annotator in g.annotator:
            n = sum(1 for c in cells if c.schedule == name and c.annotator == annotator)
            per_label = _label_worst_case(config.annotators[annotator].kind, prices)
            per_cell = labels[-1] * per_label
            if schedule.money is not None:
                per_cell = min(per_cell, schedule.money)
            total += n * per_cell
            lines.append(f"    annotator {annotator}: {n} cells x at most {per_cell:,.2f} {currency} "
                         f"({labels[-1]} labels x at most {per_label:.4f} {currency} each)")
    lines.append(f"money worst case: {total:,.2f} {currency} for the whole grid (gold labels billed as people, LLM "
                 "labels at their token bound); nothing run")
    return lines


def _label_worst_case(kind: str, prices) -> float:
    """The most one label costs with an annotator of ``kind`` (the annotators' own bounds)."""
    import inspect

    from curate.annotate.llm import LLMAnnotator
    from curate.budget import MICROS
    from curate.build import prices_from

    p = prices_from(prices)
    human = p.micros(human_labels=1)
    params = inspect.signature(LLMAnnotator.__init__).parameters
    llm = p.micros(input_tokens=params["max_input_tokens"].default, output_tokens=params["max_output_tokens"].default)
    return {"gold": human, "llm": llm, "hybrid": human + llm}.get(kind, human) / MICROS


def finished_cells(out: str | Path) -> dict[Cell, Path]:
    """Every finished cell (``rows.json`` written) in the benchmark folder ``out``, by its ``cell.json``."""
    found: dict[Cell, Path] = {}
    root = Path(out) / "cells"
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = folder / "cell.json"
        if not (folder / "rows.json").exists() or not meta.exists():
            continue
        keys = json.loads(meta.read_text())
        try:
            cell = Cell(*(str(keys[k]) for k in Cell.KEYS[:-1]), int(keys["seed"]))
        except (KeyError, TypeError, ValueError):
            continue  # not a cell folder this version of curate wrote
        found[cell] = folder
    return found


def _check_others(config: BenchConfig, out: Path, cells: list[Cell]) -> list[Cell]:
    """The finished cells in ``out`` outside the grid; refuse one the recipe defines otherwise."""
    in_grid = set(cells)
    others = []
    for cell, folder in finished_cells(out).items():
        if cell in in_grid:
            continue
        if cell.schedule in config.schedules and cell.annotator in config.annotators:
            stored = json.loads((folder / "cell.json").read_text()).get("fingerprint")
            if stored != cell.fingerprint(config):
                raise ConfigError(f"{folder} holds a finished cell ('{cell.describe()}') that this recipe would define "
                                  "otherwise (dataset, schedule, strategy parameters, learner, prices or annotator), and "
                                  "the table would mix it with this run's cells. Use a new --out folder, or delete that "
                                  "cell's folder.")
        others.append(cell)
    return others


def rebuild_rows(config: BenchConfig, out: str | Path) -> int:
    """Rewrite every finished cell's rows from its journal and metrics log (after an upgrade of curate
    that changes how rows are derived), then the table; returns the number of cells rewritten. Runs
    nothing. Finished cells outside the grid are rewritten too, with the metrics their ``cell.json`` names."""
    from curate.bench.cells import cell_rows

    out = Path(out)
    cells = expand_grid(config)
    _check_others(config, out, cells)
    done = {c: out / "cells" / c.folder for c in cells if _done(out, c, config)}
    done.update(finished_cells(out))
    for cell, folder in done.items():
        metrics = json.loads((folder / "cell.json").read_text()).get("metrics") if (folder / "cell.json").exists() else None
        if not metrics:
            from curate.bench.registry import load_runner

            metrics = load_runner(cell.paradigm, config).metrics
        _write_rows(folder, cell_rows(folder, cell, tuple(metrics), config.prices.currency))
    write_table(out, cells, config)
    return len(done)


def _table_order(cells: list[Cell], found: list[Cell]) -> list[Cell]:
    """The grid's order (``expand_grid``), extended to cells outside the grid: on each axis, the grid's
    values in its order, then the other values sorted. So the full grid gives the table it always
    did, and a sub-grid's run leaves the same table as the whole grid's."""
    axes = ("paradigm", "dataset", "schedule", "annotator", "seed", "strategy")  # expand_grid's nesting
    rank: dict[str, dict[Any, int]] = {a: {} for a in axes}
    for cell in cells:
        for a in axes:
            rank[a].setdefault(getattr(cell, a), len(rank[a]))
    extra = {a: sorted({getattr(c, a) for c in found} - set(rank[a])) for a in axes}
    for a in axes:
        for v in extra[a]:
            rank[a][v] = len(rank[a])
    return sorted(found, key=lambda c: tuple(rank[a][getattr(c, a)] for a in axes))


def write_table(out: str | Path, cells: list[Cell], config: BenchConfig | None = None) -> int:
    """Gather the rows of every finished cell in ``out`` (those of ``cells`` and any other: a sub-grid
    never hides the rest), in grid order, into ``results.parquet`` and ``results.csv``."""
    import pandas as pd

    out = Path(out)
    found = finished_cells(out)
    for cell in cells:  # a grid cell whose cell.json is missing still counts by its rows
        if cell not in found and (out / "cells" / cell.folder / "rows.json").exists():
            found[cell] = out / "cells" / cell.folder
    rows: list[dict] = []
    for cell in _table_order(cells, list(found)):
        rows.extend(json.loads((found[cell] / "rows.json").read_text()))
    frame = pd.DataFrame(rows)
    if not len(frame):
        return 0
    fixed = [*Cell.KEYS, "round", "labels", "llm_labels", "human_labels", "spent", "currency", "input_tokens",
             "output_tokens", "wall_seconds", "elapsed_seconds", "select_seconds", "picks", "metric"]
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
