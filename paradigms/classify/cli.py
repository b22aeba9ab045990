"""What a classification run prints, and ``curate demo``."""

from __future__ import annotations

from curate.runs import curve_table

__all__ = ["add_demo", "report"]


def report(outcome) -> None:
    result = outcome.result
    print(f"Stopped: {result.stop_reason}")
    print(f"Ledger: {result.ledger.describe()}")
    print(curve_table(result.curve))
    summary = outcome.summary.get("generation")
    if summary:
        print(summary)
    extra = ", generated.jsonl" if "generated" in outcome.summary else ""
    print(f"Run folder: {outcome.folder} (journal.sqlite, config.yaml, curve.csv, curve.png, summary.json{extra})")
    if result.waiting:
        print(f"Label the exported batch (curate label ...), then: curate resume {outcome.folder}")


def add_demo(subparsers) -> dict:
    demo = subparsers.add_parser("demo", help="a short real loop on the embedded models and the shipped reviews")
    demo.add_argument("--out", default=None, help="run folder (default: a new temporary folder)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                      help="override recipes/demo.yaml, e.g. stop.rounds=3 or lm.device=cpu; repeatable")
    demo.add_argument("--no-baseline", action="store_true",
                      help="skip the random-picks run that the saving is measured against (about as long again)")
    return {"demo": _demo}


def _demo(args) -> int:
    from .demo import demo_config, format_report, run_baseline, run_demo

    outcome, routing = run_demo(args.overrides, args.out)
    baseline = None if args.no_baseline else run_baseline(args.overrides, outcome.folder)
    print(format_report(outcome, routing, baseline, demo_config(args.overrides)))
    return 0
