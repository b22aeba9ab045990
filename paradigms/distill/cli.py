"""What ``curate distill run RECIPE`` prints (the command itself is the core's run; ``curate
distill RECIPE`` reads as ``curate distill run RECIPE``, and running it again with the same ``--out``
resumes the run: nothing is bought or trained twice)."""

from __future__ import annotations

__all__ = ["report"]


def report(outcome) -> None:
    summary = outcome.summary
    cur = summary["currency"]
    ledger = summary["ledger"]
    print(f"Stopped: {summary['stop_reason']}")
    print(f"Spent: {ledger['spent']:.6f} {cur} (answers {ledger.get('spent_llm', 0.0):.6f}, probes "
          f"{ledger.get('spent_probe', 0.0):.6f}); {summary['responses']} teacher answers, {summary['probes']} probes")
    print(f"{'round':>5} {'answers':>7} {'spent':>10} {'train loss':>10} {'seconds':>8}")
    trained = {h["round"] - 1: h for h in summary["rounds"]}  # training round n follows loop round n - 1
    for c in summary["curve"]:
        h = trained.get(c["round"])
        loss = "" if h is None else f"{h['train_loss']:.4f}"
        secs = "" if h is None else f"{h['seconds']:.1f}"
        print(f"{c['round']:>5} {c['labels']:>7} {c['spent']:>10.6f} {loss:>10} {secs:>8}")
    if "eval" in summary:
        ev = summary["eval"]
        if "loss" in ev:
            print(f"Held-out loss {ev['loss']:.4f} nats/token (perplexity {ev['perplexity']:.2f}) on {ev['n']} answers")
        if "accuracy" in ev:
            print(f"Exact match {ev['accuracy']:.3f} ({ev['em_right']}/{ev['em_n']})")
    print(f"Distilled data: {summary['data']}")
    print(f"Student: {summary['student']}")
    print(f"Run folder: {outcome.folder}")
