"""``curate demo``: the main job, a short real loop on the embedded models and the shipped reviews.

It runs ``recipes/demo.yaml`` through the same machinery as ``curate run`` and then reports what
a user pays attention to: how many labels the LLM kept and how often it was right, how many went
to people, what was spent, and the learning curve on held-out reviews. Then the same loop with
random picks (same annotator, prices and stop rule, in ``RUN_DIR/baseline-random``), so that the
report ends with what the strategy saved: the held-out accuracy of both at equal money, and the
money random needed to reach the strategy's accuracy.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

__all__ = ["demo_config", "format_report", "run_baseline", "run_demo", "saving"]


def demo_config(overrides: list[str] | None = None):
    """The demo's :class:`~curate.paradigms.classify.config.ClassifyConfig`: ``recipes/demo.yaml`` plus ``overrides``."""
    from .config import load_classify_config

    with resources.as_file(resources.files("curate.recipes") / "demo.yaml") as path:
        return load_classify_config(path, overrides)


def run_demo(overrides: list[str] | None = None, out: str | None = None):
    """Run the demo loop; returns ``(outcome, routing)`` where routing is per-round counts."""
    from curate.journal import Journal
    from curate.pool import load_pool
    from curate.runs import RunFolder, execute

    from . import PARADIGM

    config = demo_config(overrides)
    run_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="curate-demo-"))
    outcome = execute(PARADIGM, config, RunFolder(run_dir))
    gold = load_pool(config.pool.path).column("label")
    journal = Journal.of(run_dir)
    try:
        rows = journal.label_rows()
    finally:
        journal.close()
    routing = []
    for r in sorted({row["round"] for row in rows}):
        mine = [row for row in rows if row["round"] == r]
        llm = [row for row in mine if row["source"] == "llm" and row["label"] is not None]
        people = [row for row in mine if row["source"] != "llm" and row["label"] is not None]
        routing.append({"round": r, "llm_kept": len(llm), "llm_correct": sum(row["label"] == gold[row["item_id"]] for row in llm),
                        "people": len(people)})
    return outcome, routing


def run_baseline(overrides: list[str] | None, run_dir: Path):
    """The demo's loop with random picks in round 0 and after (``run_dir/baseline-random``)."""
    from curate.runs import RunFolder, execute

    from . import PARADIGM

    config = demo_config([*(overrides or []), "init.strategy=random", "init.params={}", "acquire.strategy=random",
                          "acquire.params={}"])
    return execute(PARADIGM, config, RunFolder(Path(getattr(run_dir, "path", run_dir)) / "baseline-random"))


def _money_to_reach(curve, target: float) -> float | None:
    """The money spent by the first round whose metric reaches ``target`` (None: never)."""
    for c in sorted(curve, key=lambda c: c["round"]):
        if c.get("metric") is not None and c["metric"] >= target - 1e-12:
            return float(c["spent"])
    return None


def _metric_at(curve, money: float) -> float | None:
    """The metric of the last round that had spent at most ``money``."""
    done = [c for c in sorted(curve, key=lambda c: c["round"]) if c["spent"] <= money + 1e-9 and c.get("metric") is not None]
    return float(done[-1]["metric"]) if done else None


def saving(strategy_curve, random_curve, strategy: str, currency: str) -> list[str]:
    """What the strategy saved over random picks, from the two learning curves (one seed each)."""
    if not strategy_curve or not random_curve:
        return []
    last = max(strategy_curve, key=lambda c: c["round"])
    money, mine = float(last["spent"]), last.get("metric")
    if mine is None:
        return []
    theirs = _metric_at(random_curve, money)
    lines = [f"Saving: {strategy} vs random picks, same annotator and prices (one seed, {len(strategy_curve)} rounds):"]
    lines.append(f"  at {money:.2f} {currency}: held-out accuracy {mine:.3f} vs {'n/a' if theirs is None else f'{theirs:.3f}'} "
                 "for random")
    need = _money_to_reach(random_curve, mine)
    own = _money_to_reach(strategy_curve, mine)
    if need is None:
        best = max(c["metric"] for c in random_curve if c.get("metric") is not None)
        spent = max(c["spent"] for c in random_curve)
        lines.append(f"  random never reached {mine:.3f} ({best:.3f} at most, {spent:.2f} {currency} spent)")
    elif own is not None and need > own:
        lines.append(f"  to reach {mine:.3f}: random needed {need:.2f} {currency}, {strategy} {own:.2f}: "
                     f"{need - own:.2f} {currency} saved ({100 * (need - own) / need:.0f}% of random's)")
    else:
        lines.append(f"  random reached {mine:.3f} with {need:.2f} {currency}: no saving on this sample")
    return lines


def format_report(outcome, routing, baseline=None, config=None) -> str:
    result = outcome.result
    curve = {c["round"]: c for c in result.curve}
    lines = [f"Estimated worst-case cost before starting: {outcome.estimate.describe()}", "",
             f"{'round':>5} {'LLM kept':>8} {'LLM right':>9} {'to people':>9} {'labels':>6} {'spent':>9} {'test acc':>8}"]
    for row in routing:
        c = curve.get(row["round"], {})
        metric = c.get("metric")
        lines.append(f"{row['round']:>5} {row['llm_kept']:>8} {row['llm_correct']:>9} {row['people']:>9} "
                     f"{c.get('labels', 0):>6} {c.get('spent', 0.0):>9.4f} {'' if metric is None else f'{metric:.3f}':>8}")
    lines += ["", f"Stopped: {result.stop_reason}", f"Ledger: {result.ledger.describe()}",
              f"Run folder: {result.run_dir} (journal.sqlite, config.yaml, curve.csv, curve.png)"]
    if baseline is not None:
        config = config or demo_config()
        strategy = f"{config.init.strategy} then {config.acquire.strategy}"
        lines += ["", *saving(result.curve, baseline.result.curve, strategy, config.prices.currency)]
    return "\n".join(lines)
