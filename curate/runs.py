"""The run folder, one lifecycle for every paradigm: create (or refuse), resume, and what it holds.

A run folder holds ``config.yaml`` (the resolved recipe, which names its paradigm) and
``versions.json`` (written before anything is bought), the loop's ``journal.sqlite`` (every paid
label, charge and round: the source of truth), and after each invocation ``curve.csv`` /
``curve.png`` and ``summary.json``. ``curate resume RUN_DIR`` reads ``config.yaml`` to know which
paradigm continues it.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curate.errors import ConfigError
from curate.journal import FILE as JOURNAL_FILE
from curate.lock import run_lock
from curate.outputs import check_output

__all__ = ["CONFIG", "JOURNAL", "Built", "RunFolder", "RunOutcome", "curve_table", "execute", "export_run", "labelled_rows", "resume_run",
           "start_run"]

logger = logging.getLogger(__name__)

CONFIG = "config.yaml"
JOURNAL = JOURNAL_FILE
VERSIONS = "versions.json"
SUMMARY = "summary.json"
# Config files of run folders written before every paradigm used config.yaml: name -> paradigm.
_LEGACY_CONFIGS = {"prefs.yaml": "prefs", "distill.yaml": "distill"}


@dataclass
class Built:
    """A paradigm's run, built and not started: the loop, the rounds it plans (for the worst case;
    None = until a budget or the pool runs out), what its curve's metric is, and ``finish(result)``:
    what happens after the loop (exports, evaluation), returning the paradigm's summary."""

    loop: Any
    rounds: int | None
    metric: str = "metric"
    finish: Callable[[Any], dict[str, Any]] | None = None
    export: Callable[[Path | None], Path] | None = None  # out -> the run's data, written from its journal


@dataclass
class RunOutcome:
    """What one invocation of a paradigm's run did: the folder, the worst case it could spend, the
    loop's result (None for a dry run) and the paradigm's own summary (also in ``summary.json``)."""

    folder: RunFolder
    estimate: Any
    result: Any = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def dry_run(self) -> bool:
        return self.result is None


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    def holds_run(self) -> bool:
        return self.journal.exists()

    def check_consistent(self) -> None:
        """Refuse a folder whose journal is missing, damaged, or holds less than its own ``curve.csv``
        says was bought: continuing from it would buy those labels again."""
        from curate.journal import Journal, JournalError

        curve = self._last_curve_row()
        if not self.holds_run():
            if curve is not None:
                raise JournalError(
                    f"{self.journal} is missing, but {self.path / 'curve.csv'} records {curve[0]} labels bought "
                    f"({curve[1]:.6f} spent). Nothing was bought now. Restore the journal from a backup to continue, "
                    "or start a new run folder.")
            return
        journal = Journal.of(self.path)  # checks that the journal is whole
        try:
            labels, spent = len(journal.labels()), sum(c.micros for c in journal.charges()) / 1e6
        finally:
            journal.close()
        if curve is not None and (labels < curve[0] or spent + 1e-6 < curve[1]):
            raise JournalError(
                f"{self.journal} holds {labels} labels and {spent:.6f} spent, but {self.path / 'curve.csv'} records "
                f"{curve[0]} labels and {curve[1]:.6f} spent: the journal lost part of the run. Nothing was bought "
                "now. Restore the journal from a backup to continue, or start a new run folder.")

    def _last_curve_row(self) -> tuple[int, float] | None:
        path = self.path / "curve.csv"
        if not path.exists():
            return None
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            return (int(rows[-1]["labels"]), float(rows[-1]["spent"])) if rows else None
        except (OSError, UnicodeDecodeError, KeyError, ValueError, TypeError, csv.Error):
            raise ConfigError(f"{path} is not the curve curate wrote (unreadable, or its labels/spent columns "
                              "are damaged); restore it or delete it to continue.") from None

    # ------------------------------------------------------------------ config

    def read_config(self) -> tuple[str | None, dict]:
        """``(paradigm, recipe data)`` of the run here; the paradigm is None for a run folder
        written before recipes named theirs (then it is the default paradigm's)."""
        path = self.path / CONFIG
        legacy = None
        if not path.exists():
            legacy = next((name for name in _LEGACY_CONFIGS if (self.path / name).exists()), None)
            if legacy is None:
                raise ConfigError(f"{self.path} is not a run folder (no {CONFIG}). Start one with `curate run RECIPE` "
                                  "(or `curate <paradigm> run RECIPE`).")
            path = self.path / legacy
        from curate.config import read_recipe

        data = read_recipe(path)
        return data.get("paradigm") or (_LEGACY_CONFIGS[legacy] if legacy else None), data

    def start(self, config, paradigm: str, *, on_existing: str = "refuse") -> bool:
        """Write the config and versions before anything is bought. A folder that holds a run
        already is refused (``on_existing="refuse"``) or continued with this config
        (``"continue"``: re-running a recipe resumes it). Returns True when a run was continued."""
        from curate.env import environment_report

        continued = False
        if self.holds_run():
            if on_existing != "continue":
                raise ConfigError(f"{self.path} already holds a run; continue it with `curate resume {self.path}`, "
                                  "or choose a new --out folder.")
            stored = self.read_config()[0] if self.has_config() else None
            if stored not in (None, paradigm):
                raise ConfigError(f"{self.path} holds a {stored} run; this recipe is {paradigm}. Use a new --out folder.")
            continued = True
        path = self.path / CONFIG
        before = path.read_text() if continued and path.exists() else None
        self.save_config(config, paradigm)
        if before is not None and path.read_text() != before:
            logger.warning("%s was written by another recipe or overrides; continuing with the new one", path)
        (self.path / VERSIONS).write_text(json.dumps(environment_report(), indent=2))
        return continued

    def has_config(self) -> bool:
        return any((self.path / name).exists() for name in (CONFIG, *_LEGACY_CONFIGS))

    def save_config(self, config, paradigm: str) -> None:
        """Rewrite the config (a resume with ``--set`` overrides continues under the new values)."""
        from curate.config import to_dict

        resolved = {"paradigm": paradigm, **{k: v for k, v in to_dict(config).items() if k != "paradigm"}}
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / CONFIG).write_text(yaml.safe_dump(resolved, sort_keys=False))
        for name in _LEGACY_CONFIGS:  # one config file per folder
            (self.path / name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ outputs

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.path / SUMMARY
        path.write_text(json.dumps(summary, indent=1, default=str))
        return path

    def write_curve(self, curve: list[dict], *, currency: str = "USD", metric: str = "test accuracy") -> None:
        """``curve.csv`` always; ``curve.png`` (``metric`` vs labels and vs money) when there is a metric."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "curve.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["round", "labels", "spent", "metric"])
            writer.writeheader()
            writer.writerows(curve)
        points = [c for c in curve if c["metric"] is not None]
        if not points:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        axes[0].plot([c["labels"] for c in points], [c["metric"] for c in points], marker="o")
        axes[0].set_xlabel("labels")
        axes[1].plot([c["spent"] for c in points], [c["metric"] for c in points], marker="o", color="tab:green")
        axes[1].set_xlabel(f"money spent ({currency})")
        for ax in axes:
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        fig.suptitle(f"Learning curve: {self.path.name}")
        fig.tight_layout()
        fig.savefig(self.path / "curve.png", dpi=100)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- the lifecycle


def execute(paradigm, config, folder: RunFolder, *, dry_run: bool = False, resume: bool = False,
            **options: Any) -> RunOutcome:
    """Build ``paradigm``'s run of ``config`` in ``folder``, price its worst case, and (unless
    ``dry_run``) write the config and run the loop: one lifecycle for every paradigm."""
    check_output(folder.path, what="the run folder", folder=True)
    if dry_run:
        return _execute(paradigm, config, folder, dry_run=True, resume=resume, **options)
    with run_lock(folder.path):  # a second process on this folder fails here, before anything is built
        return _execute(paradigm, config, folder, dry_run=False, resume=resume, **options)


def _execute(paradigm, config, folder: RunFolder, *, dry_run: bool, resume: bool, **options: Any) -> RunOutcome:
    if not dry_run and not resume and folder.holds_run() and paradigm.on_existing != "continue":
        folder.start(config, paradigm.name)  # refuses, before anything is built
    if not dry_run:
        folder.check_consistent()  # a damaged or emptied folder is refused before anything is built
    built = paradigm.build(config, folder, **options)
    estimate = built.loop.worst_case(built.rounds)
    built.loop.preflight()  # what needs no money is checked in a dry run too
    if dry_run:
        return RunOutcome(folder, estimate)
    # Before the folder is written to: a refused run or resume leaves it as it was, and costs nothing.
    built.loop.check_resumable()
    if resume:
        folder.save_config(config, paradigm.name)
    else:
        folder.start(config, paradigm.name, on_existing=paradigm.on_existing)
    result = built.loop.run()
    folder.write_curve(result.curve, currency=result.ledger.prices.currency, metric=built.metric)
    summary: dict[str, Any] = {"paradigm": paradigm.name, "stop_reason": result.stop_reason,
                               "waiting": result.waiting, "labels": len(result.labels),
                               "ledger": result.ledger.totals(), "curve": result.curve}
    if built.finish is not None:
        summary.update(built.finish(result))
    folder.write_summary(summary)
    return RunOutcome(folder, estimate, result, summary)


def start_run(recipe: str | Path, overrides: list[str] | None = None, out: str | Path | None = None, *,
              paradigm: str | None = None, dry_run: bool = False, **options: Any):
    """``curate run RECIPE`` / ``curate <paradigm> run RECIPE``: ``(paradigm, outcome)``. The recipe's
    ``paradigm:`` key names its paradigm (``paradigm`` must agree with it); none means the default."""
    from curate.config import read_recipe
    from curate.plugins import default_paradigm, get_paradigm

    data = read_recipe(recipe)
    named = data.get("paradigm")
    if paradigm is not None and named is not None and get_paradigm(named).name != get_paradigm(paradigm).name:
        raise ConfigError(f"{recipe} is a {named} recipe (paradigm: {named}); run it with `curate run {recipe}` "
                          f"or `curate {named} run {recipe}`.")
    chosen = get_paradigm(paradigm or named) if (paradigm or named) else default_paradigm()
    config = chosen.load_config(recipe, overrides)
    folder = RunFolder(out if out is not None else Path("runs") / Path(recipe).stem)
    return chosen, execute(chosen, config, folder, dry_run=dry_run, **options)


def resume_run(run_dir: str | Path, overrides: list[str] | None = None, *, dry_run: bool = False, **options: Any):
    """``curate resume RUN_DIR``: continue the run there with the paradigm its config names,
    optionally under ``overrides`` (``stop.rounds=6`` buys more rounds); ``(paradigm, outcome)``."""
    from curate.plugins import default_paradigm, get_paradigm

    folder = RunFolder(run_dir)
    name, data = folder.read_config()
    folder.check_consistent()
    if not folder.holds_run():
        raise ConfigError(f"{folder} has a config but no journal: nothing was bought there yet. Start it with "
                          f"`curate run {folder / CONFIG} --out {folder}`.")
    chosen = get_paradigm(name) if name else default_paradigm()
    config = chosen.load_config(None, overrides, data={k: v for k, v in data.items()})
    return chosen, execute(chosen, config, folder, dry_run=dry_run, resume=True, **options)


def export_run(run_dir: str | Path, out: str | Path | None = None) -> tuple[Any, Path]:
    """``curate export RUN_DIR``: the run's data as its paradigm writes it (labels, demonstrations,
    responses, preference pairs), from the journal alone: nothing is bought or trained. Returns
    ``(paradigm, path)``."""
    from curate.plugins import default_paradigm, get_paradigm

    folder = RunFolder(run_dir)
    name, data = folder.read_config()
    if not folder.holds_run():
        raise ConfigError(f"{folder} holds no journal: nothing was bought there yet, so there is nothing to export.")
    chosen = get_paradigm(name) if name else default_paradigm()
    built = chosen.build(chosen.load_config(None, None, data=data), folder, evaluate=False)
    if built.export is None:
        raise ConfigError(f"The {chosen.name} paradigm has no export.")
    return chosen, built.export(None if out is None else Path(out))


def curve_table(curve: list[dict], metric: str = "metric") -> str:
    """The learning curve as a table: round, labels owned, money spent, the metric."""
    width = max(len(metric), 7)
    lines = [f"{'round':>5} {'labels':>6} {'spent':>10} {metric:>{width}}"]
    for c in curve:
        value = "" if c["metric"] is None else f"{c['metric']:.4f}"
        lines.append(f"{c['round']:>5} {c['labels']:>6} {c['spent']:>10.4f} {value:>{width}}")
    return "\n".join(lines)


def labelled_rows(run_dir: str | Path, pool) -> list[dict]:
    """Every labelled item of a run, from its journal: the pool row (or the generated row), its
    label, who labelled it and in which round."""
    from curate.journal import Journal

    journal = Journal.of(run_dir)
    try:
        generated = {g["item_id"]: g["row"] for g in journal.generated()}
        rows = [r for r in journal.label_rows() if r["label"] is not None]
    finally:
        journal.close()
    base = len(pool)
    out = []
    for r in rows:
        i = r["item_id"]
        row = dict(pool.dataset[i]) if i < base else dict(generated.get(i, {}))
        row.pop("id", None)
        out.append({"id": i, **row, "label": r["label"], "source": r["source"], "round": r["round"]})
    return out
