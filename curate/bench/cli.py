"""``curate bench RECIPE [--dry-run] | report RUN_DIR | speed RECIPE``: the handler the core CLI calls."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from curate.errors import ConfigError

__all__ = ["pin_threads", "run_bench_command"]


def pin_threads(threads: int) -> None:
    """BLAS, OpenMP and torch threads, for stable timings on a shared machine."""
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1. Got {threads} instead.")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)  # for libraries not loaded yet
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # for those already loaded (numpy's BLAS)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


def _say(line: str) -> None:
    print(line, flush=True)


def run_bench_command(args) -> int:
    import logging

    if not getattr(args, "verbose", False):
        # One line per cell (and per slow round) instead of the loop's two lines per round.
        logging.getLogger("curate.loop").setLevel(logging.WARNING)
    if args.threads is not None:
        pin_threads(args.threads)
    if args.target == "report":
        return _report(args)
    if args.target == "speed":
        return _speed(args)
    if args.path is not None:
        raise ConfigError(f"curate bench takes one recipe; got '{args.target}' and '{args.path}'. For the report: "
                          "curate bench report RUN_DIR.")
    return _run(args)


def _load(recipe: str, overrides):
    from curate.bench.config import load_bench_config

    return load_bench_config(recipe, overrides)


def _out(args, config) -> Path:
    return Path(args.out) if args.out else Path("runs") / f"bench-{config.name}"


def _run(args) -> int:
    from curate.bench.config import expand_grid
    from curate.bench.run import rebuild_rows, run_bench

    config = _load(args.target, args.overrides)
    out = _out(args, config)
    if getattr(args, "dry_run", False):
        from curate.bench.registry import load_runner
        from curate.bench.run import plan

        cells = expand_grid(config)
        runners = {name: load_runner(name, config) for name in dict.fromkeys(c.paradigm for c in cells)}
        for cell in cells:  # a bad grid fails here too, before anyone trusts its plan
            runners[cell.paradigm].check(cell)
        for line in plan(config, out):
            _say(line)
        return 0
    if args.rebuild_table:
        _say(f"rows of {rebuild_rows(config, out)} done cells rewritten from their journals; table: {out / 'results.parquet'}")
        return 0
    cells = expand_grid(config)
    _say(f"benchmark '{config.name}': {len(cells)} cells into {out} (load average "
         f"{' '.join(f'{v:.2f}' for v in os.getloadavg())})")
    clock = time.perf_counter()
    try:
        result = run_bench(config, out, progress=_say, limit=args.limit)
    except KeyboardInterrupt:
        _say(f"\ninterrupted: finished cells are kept; run the same command again to resume ({out}).")
        return 130
    kept = f", {len(result.others)} finished outside this grid kept" if result.others else ""
    _say(f"{len(result.ran)} cells run, {len(result.skipped)} already done{kept}; table: {out / 'results.parquet'} "
         f"({result.rows} rows) and results.csv; {result.seconds:.0f}s")
    if result.waiting:
        _say(f"{len(result.waiting)} cell(s) wait for people; run the command again after they answer.")
    if config.speed is not None and not args.no_speed and args.limit is None:
        _run_speed(config, out, args.sizes)
    if not args.no_report and result.rows:
        from curate.bench.report import write_report

        folder = write_report(out, title=f"Benchmark report: {config.name}")
        _say(f"report: {folder / 'report.md'} and {folder / 'report.html'}")
    _say(f"total {time.perf_counter() - clock:.0f}s")
    return 0


def _run_speed(config, out: Path, sizes: str | None) -> None:
    from curate.bench.cells import build_strategy
    from curate.bench.config import SpeedConfig
    from curate.bench.speed import run_speed

    speed = config.speed or SpeedConfig()
    chosen = None
    if sizes:
        try:
            chosen = [int(s) for s in sizes.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--sizes takes comma-separated integers, e.g. 10000,100000. Got '{sizes}'.") from None
    _say(f"speed table: strategies {', '.join(speed.strategies)} at sizes "
         f"{', '.join(f'{n:,}' for n in chosen or speed.sizes)}")
    run_speed(speed, out, strategy_factory=lambda name: build_strategy(config, name), progress=_say, sizes=chosen)
    _say(f"speed table: {out / 'speed.parquet'} and speed.csv")


def _speed(args) -> int:
    if args.path is None:
        raise ConfigError("curate bench speed needs a recipe: curate bench speed RECIPE [--out RUN_DIR] [--sizes ...].")
    config = _load(args.path, args.overrides)
    out = _out(args, config)
    _run_speed(config, out, args.sizes)
    return 0


def _report(args) -> int:
    from curate.bench.report import write_report

    if args.path is None:
        raise ConfigError("curate bench report needs the benchmark folder: curate bench report RUN_DIR.")
    folder = write_report(args.path, out=args.out, metric=args.metric)
    _say(f"report: {folder / 'report.md'} and {folder / 'report.html'} (plots: {folder}/curves_*.png)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from curate.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
