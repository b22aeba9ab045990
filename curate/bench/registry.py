"""Which paradigm a benchmark grid can name, and the seam each one plugs into.

A paradigm contributes a *cell runner*: a class built with the benchmark's
:class:`~curate.bench.config.BenchConfig` (its ``__init__`` stores it and sets up caches, nothing
heavy) that has

* ``metrics``: the names of the metrics it reports, the first one the primary (learning curves, AUC);
* ``check(cell)``: raise ``ConfigError`` for a cell it cannot run (unknown strategy, a dataset without
  text...), called for every cell before any is run, so a bad grid fails in seconds, not hours;
* ``run(cell, run_dir, metrics_log)``: run, or resume, the cell's loop in ``run_dir`` with
  ``evaluate=metrics_log.evaluator(fn)``, where ``fn(learner)`` returns ``{metric: value}``. The
  benchmark reads labels, money, tokens and timings from the loop's journal; the runner only measures.

A paradigm names its runner as ``"module:Class"`` in its plugin record (``bench_runner``,
:mod:`curate.plugins`), imported on first use; the core names none. A grid names paradigms only:
a runner outside the installed plugins comes with a plugin of its own (a recipe never names a module).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from curate.errors import ConfigError, did_you_mean

__all__ = ["CellRunner", "load_runner", "runners"]


def runners() -> dict[str, str]:
    """``{paradigm name: "module:Class"}`` for every installed paradigm with a benchmark runner
    (under each of its names)."""
    from curate.plugins import installed

    out = {}
    for p in installed().values():
        if p.bench_runner:
            for name in (p.name, *p.also):
                out[name] = p.bench_runner
    return out


class CellRunner(Protocol):
    metrics: tuple[str, ...]

    def check(self, cell) -> None: ...

    def run(self, cell, run_dir, metrics_log) -> Any: ...


def load_runner(name: str, config) -> CellRunner:
    """The runner of the installed paradigm ``name``, built with ``config``. A recipe names a
    paradigm, never a module: only runners that installed paradigms declare (``bench_runner`` of a
    ``curate.plugins`` entry point) are imported, so a benchmark recipe cannot make curate import
    and instantiate arbitrary classes."""
    known = runners()
    target = known.get(name)
    if target is None:
        raise ConfigError(f"grid.paradigm names '{name}', which has no benchmark runner. Known: {', '.join(known)}."
                          f"{did_you_mean(name, known)} A new runner comes with a paradigm plugin (the "
                          "'curate.plugins' entry point group, with bench_runner=).")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"The benchmark runner of paradigm '{name}' ({target}) cannot be imported: {err}.") from None
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{module_name} has no '{attr}' (the benchmark runner of paradigm '{name}').") from None
    runner = cls(config)
    if not getattr(runner, "metrics", None):
        raise ConfigError(f"The benchmark runner {target} must name its metrics (a 'metrics' tuple, primary first).")
    return runner
