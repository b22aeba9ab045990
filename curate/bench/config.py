"""Benchmark recipes: a YAML grid (paradigm x dataset x strategy x schedule x annotator x seed) and the
named parts its axes refer to, mirrored one to one by the dataclasses here.

A recipe names values on each axis of ``grid``; each value that is not built in is defined in the
block of the same name (``datasets``, ``strategies``, ``schedules``, ``annotators``). The learner,
prices, embedder and LM are shared by every cell. Unknown keys are errors that name the key and
suggest the right one (``curate.config.from_dict``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate.config import (
    AnnotatorConfig,
    LearnerConfig,
    LMConfig,
    PoolConfig,
    PricesConfig,
    apply_overrides,
    from_dict,
)
from curate.errors import ConfigError, did_you_mean
from curate.models import DEFAULT_EMBEDDER

__all__ = ["AXES", "BUILTIN_DATASETS", "BenchConfig", "Cell", "DatasetConfig", "GridConfig", "ScheduleConfig", "SpeedConfig",
           "StrategyConfig", "expand_grid", "load_bench_config"]

# Datasets a grid may name without defining them (read in place; see curate.bench.datasets).
BUILTIN_DATASETS = ("sst2", "trec", "agnews", "reviews", "synthetic", "instructions", "alpaca_eval")


@dataclass
class DatasetConfig:
    """Where a dataset's pool and test set come from.

    ``source`` is a built-in name (``sst2``, ``trec``, ``agnews`` read from the shared data folder;
    ``reviews``, the sample shipped with curate; ``synthetic``, Gaussian blobs with no text) or
    ``files``, with ``pool`` and ``test`` read by ``load_pool`` (both need ``text`` and ``label``).
    ``pool_max`` / ``test_max`` subsample with a fixed seed (the same rows for every cell).
    """

    source: str = ""
    pool: PoolConfig | None = None
    test: PoolConfig | None = None
    labels: list[str] = field(default_factory=list)   # files: the label set (default: labels in the pool)
    pool_max: int | None = None
    test_max: int | None = None
    data_dir: str | None = None                        # shared data root (default: ../shared/data, $CURATE_DATA)
    params: dict[str, Any] = field(default_factory=dict)  # synthetic: n_pool, n_test, dim, classes, spread

    def __post_init__(self) -> None:
        known = (*BUILTIN_DATASETS, "files")
        if self.source and self.source not in known:
            raise ConfigError(f"datasets.*.source must be one of {', '.join(known)}. Got '{self.source}' instead."
                              f"{did_you_mean(self.source, known)}")
        for name in ("pool_max", "test_max"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"datasets.*.{name} must be a positive integer or null. Got {value!r} instead.")


@dataclass
class StrategyConfig:
    """A strategy with parameters, under a name of its own: ``votek10: {name: votek, params: {k: 10}}``.
    ``name`` is a ``curate.acquire`` strategy or ``small-text:ClassName`` (a peer, see curate.bench.peers)."""

    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    # The arm's own round-0 strategy, over the schedule's init_strategy: cold-start strategies
    # (typiclust, probcover) are meant to choose the first labels too. ``same``: this strategy.
    init: str | None = None


@dataclass
class ScheduleConfig:
    """How labels are bought: ``init`` in round 0 (by ``init_strategy``), then ``batch`` per round;
    ``money`` stops a cell when the next batch no longer fits.

    ``rounds`` counts every round, **round 0 included** (the round that buys ``init``): a cell ends
    with ``init + (rounds - 1) * batch`` labels, so ``{init: 20, batch: 20, rounds: 10}`` buys 20,
    40, ..., 200 labels in 10 rounds (``planned_labels``; ``curate bench RECIPE --dry-run`` prints them).

    ``init_strategy: same`` uses the cell's own strategy for round 0 (selective annotation for ICL, where
    vote-k chooses every label); the default ``random`` gives every strategy the same random start
    for a seed, the classic protocol.
    """

    init: int = 25
    batch: int = 25
    rounds: int = 10   # round 0 included: the last round ends at init + (rounds - 1) * batch labels
    init_strategy: str = "random"
    money: float | None = None

    def __post_init__(self) -> None:
        for name, low in (("init", 1), ("batch", 1), ("rounds", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"schedules.*.{name} must be an integer >= {low}. Got {value!r} instead.")
        if self.money is not None and self.money < 0:
            raise ConfigError(f"schedules.*.money must be non-negative. Got {self.money!r} instead.")

    @property
    def planned_labels(self) -> list[int]:
        """Labels held after each round, round 0 first (before a money budget or the pool's end)."""
        return [self.init + r * self.batch for r in range(self.rounds)]


AXES = ("paradigm", "dataset", "strategy", "schedule", "annotator", "seed")


@dataclass
class GridConfig:
    """The grid's axes, a full product, less the partial cells in ``exclude``.

    ``exclude`` lists partial cells to leave out: each entry maps some axes to a value or a list
    of values, and drops every cell that matches all of them. So one slow peer gets fewer seeds
    (``{strategy: small-text:GreedyCoreset, seed: [3, 4, 5, 6, 7, 8, 9]}``), or a strategy skips a
    dataset (``{strategy: badge, dataset: agnews}``). Every value must be on its axis (a typo is an
    error, not a no-op). The report pairs strategies with random on the seeds both ran.
    """

    paradigm: list[str] = field(default_factory=lambda: ["classification"])
    dataset: list[str] = field(default_factory=list)
    strategy: list[str] = field(default_factory=list)
    schedule: list[str] = field(default_factory=lambda: ["default"])
    annotator: list[str] = field(default_factory=lambda: ["gold"])
    seed: list[int] = field(default_factory=lambda: [0])
    exclude: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in AXES:
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"grid.{name} must list at least one value.")
            if len(set(map(str, values))) != len(values):
                raise ConfigError(f"grid.{name} lists a value twice: {values}.")
        bad = [s for s in self.seed if isinstance(s, bool) or not isinstance(s, int)]
        if bad:
            raise ConfigError(f"grid.seed must list integers. Got {bad} instead.")
        self.exclude = [self._check_exclude(i, entry) for i, entry in enumerate(self.exclude)]

    def _check_exclude(self, i: int, entry: Any) -> dict[str, list]:
        where = f"grid.exclude[{i}]"
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(f"{where} must map axes to values, e.g. {{strategy: small-text:GreedyCoreset, seed: [3, 4]}}. "
                              f"Got {entry!r} instead.")
        out: dict[str, list] = {}
        for axis, values in entry.items():
            if axis not in AXES:
                raise ConfigError(f"Unknown key '{where}.{axis}'. Axes: {', '.join(AXES)}.{did_you_mean(str(axis), AXES)}")
            values = values if isinstance(values, list) else [values]
            on_axis = [str(v) for v in getattr(self, axis)]
            for v in values:
                if str(v) not in on_axis:
                    raise ConfigError(f"{where}.{axis} names {v!r}, which grid.{axis} does not list ({', '.join(on_axis)})."
                                      f"{did_you_mean(str(v), on_axis)}")
            out[axis] = list(values)  # lists, not sets: the resolved recipe is written as YAML
        return out

    def excludes(self, cell: Cell) -> bool:
        """Whether an ``exclude`` entry drops ``cell``."""
        return any(all(str(getattr(cell, axis)) in map(str, values) for axis, values in entry.items())
                   for entry in self.exclude)


@dataclass
class SpeedConfig:
    """The speed table: selection time and peak memory per strategy on synthetic unit vectors."""

    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    strategies: list[str] = field(default_factory=lambda: ["random", "entropy", "margin", "kcenter", "badge"])
    budget: int = 100
    labeled: int = 100
    dim: int = 384
    classes: int = 4
    max_size: dict[str, int] = field(default_factory=dict)  # strategy -> largest pool it is timed on
    repeats: int = 1

    def __post_init__(self) -> None:
        if not self.sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.sizes):
            raise ConfigError(f"speed.sizes must list positive integers. Got {self.sizes!r} instead.")
        if self.budget < 1 or self.labeled < 1:
            raise ConfigError("speed.budget and speed.labeled must be at least 1.")


@dataclass
class BenchConfig:
    name: str = "bench"
    grid: GridConfig = field(default_factory=GridConfig)
    datasets: dict[str, Any] = field(default_factory=dict)     # name -> DatasetConfig
    strategies: dict[str, Any] = field(default_factory=dict)   # name -> StrategyConfig
    schedules: dict[str, Any] = field(default_factory=dict)    # name -> ScheduleConfig
    annotators: dict[str, Any] = field(default_factory=dict)   # name -> curate.config.AnnotatorConfig
    options: dict[str, Any] = field(default_factory=dict)      # paradigm -> its options (checked by its runner)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    prices: PricesConfig = field(default_factory=PricesConfig)
    embedder: str = DEFAULT_EMBEDDER
    lm: LMConfig = field(default_factory=LMConfig)
    speed: SpeedConfig | None = None

    def __post_init__(self) -> None:
        # The named blocks are typed here, so that an error names the full key ("schedules.fast.batchh").
        typed = {"datasets": DatasetConfig, "strategies": StrategyConfig, "schedules": ScheduleConfig,
                 "annotators": AnnotatorConfig}
        for block, cls in typed.items():
            entries = getattr(self, block)
            setattr(self, block, {str(k): v if isinstance(v, cls) else from_dict(cls, v or {}, f"{block}.{k}")
                                  for k, v in entries.items()})
        if "default" not in self.schedules:
            self.schedules["default"] = ScheduleConfig()
        if "gold" not in self.annotators:
            self.annotators["gold"] = AnnotatorConfig(kind="gold")
        for axis, block in (("schedule", "schedules"), ("annotator", "annotators")):
            defined = getattr(self, block)
            for value in getattr(self.grid, axis):
                if value not in defined:
                    raise ConfigError(f"grid.{axis} names '{value}', which {block} does not define. Defined: "
                                      f"{', '.join(defined)}.{did_you_mean(value, defined)}")
        for value in self.grid.dataset:
            if value not in self.datasets and value not in BUILTIN_DATASETS:
                raise ConfigError(f"grid.dataset names '{value}', which is neither built in ({', '.join(BUILTIN_DATASETS)}) "
                                  f"nor defined under datasets.{did_you_mean(value, [*BUILTIN_DATASETS, *self.datasets])}")
        for name, options in self.options.items():
            if not isinstance(options, dict):
                raise ConfigError(f"options.{name} must be a mapping of options. Got {options!r} instead.")

    def paradigm_options(self, paradigm: str, defaults: dict[str, Any]) -> dict[str, Any]:
        """``options.<paradigm>`` over the runner's ``defaults``; a key the runner does not know is an error."""
        options = dict(self.options.get(paradigm, {}))
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ConfigError(f"Unknown key 'options.{paradigm}.{unknown[0]}'. Known: {', '.join(defaults)}."
                              f"{did_you_mean(unknown[0], list(defaults))}")
        return {**defaults, **options}

    def dataset(self, name: str) -> DatasetConfig:
        found = self.datasets.get(name)
        if found is None:
            return DatasetConfig(source=name)
        if not found.source:
            found.source = name if name in BUILTIN_DATASETS else "files"
        return found

    def strategy(self, name: str) -> StrategyConfig:
        return self.strategies.get(name) or StrategyConfig(name=name)

    def init_for(self, cell) -> str:
        """The grid strategy that buys round 0 of ``cell``: the arm's own ``init`` when it has one,
        else the schedule's ``init_strategy`` (``same``: the arm itself)."""
        own = self.strategy(cell.strategy).init
        chosen = own if own is not None else self.schedules[cell.schedule].init_strategy
        return cell.strategy if chosen == "same" else chosen


@dataclass(frozen=True)
class Cell:
    """One point of the grid: one loop, in its own run folder."""

    paradigm: str
    dataset: str
    strategy: str
    schedule: str
    annotator: str
    seed: int

    KEYS = AXES

    @property
    def keys(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEYS}

    @property
    def folder(self) -> str:
        """The cell's run folder under the benchmark's, readable and safe on every file system."""
        parts = [self.paradigm, self.dataset, self.strategy, self.schedule, self.annotator, f"seed{self.seed}"]
        return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)) for p in parts)

    def describe(self) -> str:
        return f"{self.paradigm} {self.dataset} {self.strategy} {self.schedule} {self.annotator} seed {self.seed}"

    def fingerprint(self, config: BenchConfig) -> str:
        """What the cell's results depend on: a rerun with another definition is refused, not mixed in."""
        parts = {"cell": self.keys, "dataset": asdict(config.dataset(self.dataset)),
                 "strategy": asdict(config.strategy(self.strategy)), "schedule": asdict(config.schedules[self.schedule]),
                 "annotator": asdict(config.annotators[self.annotator]), "learner": asdict(config.learner),
                 "prices": asdict(config.prices), "embedder": config.embedder,
                 "paradigm": config.options.get(self.paradigm, {})}
        if config.annotators[self.annotator].kind != "gold":
            parts["lm"] = asdict(config.lm)
        blob = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def expand_grid(config: BenchConfig) -> list[Cell]:
    """Every cell, in a stable order: paradigm, dataset, schedule, annotator, seed, then strategy (so
    that the strategies of one seed run next to each other, and a stopped run has whole comparisons);
    the cells ``grid.exclude`` names left out."""
    g = config.grid
    cells = []
    for paradigm, dataset, schedule, annotator, seed, strategy in itertools.product(
            g.paradigm, g.dataset, g.schedule, g.annotator, g.seed, g.strategy):
        cell = Cell(str(paradigm), str(dataset), str(strategy), str(schedule), str(annotator), int(seed))
        if not g.excludes(cell):
            cells.append(cell)
    return cells


def load_bench_config(path: str | Path, overrides: list[str] | None = None) -> BenchConfig:
    """A benchmark recipe (YAML), then ``a.b=value`` overrides; relative file paths in ``datasets``
    are resolved against the recipe's folder."""
    from curate.config import read_recipe

    path = Path(path)
    data = read_recipe(path, " The shipped benchmark recipes are recipes/bench-*.yaml.")
    config = from_dict(BenchConfig, apply_overrides(data, overrides or []))
    for ds in config.datasets.values():
        for pc in (ds.pool, ds.test):
            if pc is not None and pc.path and not Path(pc.path).is_absolute() and (path.parent / pc.path).exists():
                pc.path = str((path.parent / pc.path).resolve())
    return config
