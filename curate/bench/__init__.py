"""``curate bench``: one benchmark for every strategy and paradigm.

A YAML grid (paradigm x dataset x strategy x budget schedule x annotator x seed) is expanded into
cells; each cell runs through the loop engine (:class:`curate.loop.ActiveLoop`) in its own run folder,
resumes after an interruption and is skipped when done; the results are one tidy table with one row
per round (labels, money, tokens, wall and selection time, metrics). ``curate bench report`` rebuilds
learning curves, areas under them with paired comparisons against random, and a Markdown and an HTML
report from that table alone. ``curate bench speed`` times selection at large pool sizes.

Paradigms plug in a cell runner (:mod:`curate.bench.registry`). ``import curate.bench`` is light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BenchConfig": "curate.bench.config", "Cell": "curate.bench.config", "expand_grid": "curate.bench.config",
    "load_bench_config": "curate.bench.config",
    "run_bench": "curate.bench.run", "read_table": "curate.bench.run", "BenchResult": "curate.bench.run",
    "write_report": "curate.bench.report", "summarise": "curate.bench.report",
    "run_speed": "curate.bench.speed",
    "runners": "curate.bench.registry", "load_runner": "curate.bench.registry",
    "MetricsLog": "curate.bench.cells",
    "SmallTextStrategy": "curate.bench.peers",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'curate.bench' has no attribute '{name}'")
