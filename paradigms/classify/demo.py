"""``curate demo``: the main job, a short real loop on the embedded models and the shipped reviews.

It runs ``recipes/demo.yaml`` through the same machinery as ``curate run`` and then reports what
a user pays attention to: how many labels the LLM kept and how often it was right, how many went
to people, what was spent, and the learning curve on held-out reviews.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

__all__ = ["demo_config", "format_report", "run_demo"]


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


def format_report(outcome, routing) -> str:
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
    return "\n".join(lines)
