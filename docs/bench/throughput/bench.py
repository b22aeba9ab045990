"""Requests in flight at once vs one at a time, against a local OpenAI-style server that answers after a
fixed latency (tests/servers/latency.py, standing for a hosted API), in one run side by side:

* ``chat``: N conversations through ``OpenAICompatibleBackend.chat``;
* ``label``: N items LLM-labelled by ``LLMAnnotator`` (option scoring over chat), each annotation
  charged to a ledger as it arrives; labels and ledger totals must be identical at every concurrency.

    .venv/bin/python -u docs/bench/throughput/bench.py --n 64 --latency 0.2 --concurrency 1 16
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("CURATE_QUIET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))  # the test servers

import numpy as np  # noqa: E402
from servers.chat_only import serve  # noqa: E402
from servers.latency import create_app  # noqa: E402

from curate.annotate.llm import LLMAnnotator  # noqa: E402
from curate.backends.openai_compat import OpenAICompatibleBackend  # noqa: E402
from curate.budget import Ledger, Prices  # noqa: E402
from curate.pool import load_pool  # noqa: E402

PRICES = Prices(llm_input_per_million=0.15, llm_output_per_million=0.60)


def chat(base_url: str, n: int, concurrency: int) -> tuple[float, list[str]]:
    conversations = [[{"role": "user", "content": f"request {i}"}] for i in range(n)]
    with OpenAICompatibleBackend("remote", base_url, max_concurrency=concurrency) as backend:
        clock = time.perf_counter()
        replies = backend.chat(conversations, max_new_tokens=8)
        return time.perf_counter() - clock, [r[0].text for r in replies]


def label(base_url: str, n: int, concurrency: int) -> tuple[float, list, int, int]:
    pool = load_pool([{"text": f"review {i}: {'good' if i % 3 else 'dull'} film"} for i in range(n)])
    ledger = Ledger(PRICES)
    with OpenAICompatibleBackend("remote", base_url, max_concurrency=concurrency) as backend:
        annotator = LLMAnnotator(backend, ["neg", "pos"], instruction="Sentiment?")
        clock = time.perf_counter()
        labels = []
        for a in annotator.annotate(pool, np.arange(n)):
            ledger.charge(a.source, input_tokens=a.input_tokens, output_tokens=a.output_tokens, item_id=a.item_id)
            labels.append((a.item_id, a.label))
        wall = time.perf_counter() - clock
    return wall, labels, ledger.spent_micros, sum(e.input_tokens for e in ledger.entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    logging.getLogger("curate").setLevel(logging.ERROR)  # the server has no chat template: said once is enough
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average before "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"server latency {args.latency:.3f} s per request, N = {args.n}")
    app = create_app(latency=args.latency)
    with serve(app) as base_url:
        rows, reference = [], None
        for c in args.concurrency:
            app.state.max_in_flight = 0
            chat_wall, texts = chat(base_url, args.n, c)
            chat_peak = app.state.max_in_flight
            app.state.max_in_flight = 0
            label_wall, labels, micros, tokens = label(base_url, args.n, c)
            same = reference is None or (texts, labels, micros) == reference
            reference = reference or (texts, labels, micros)
            rows.append((c, chat_wall, chat_peak, label_wall, app.state.max_in_flight, micros, tokens, same))
    base = rows[0]
    print(f"{'concurrency':>11} {'chat s':>8} {'peak':>5} {'speedup':>8} {'label s':>8} {'peak':>5} {'speedup':>8} "
          f"{'ledger micros':>13} {'tokens in':>9} {'same':>5}")
    for c, cw, cp, lw, lp, micros, tokens, same in rows:
        print(f"{c:>11} {cw:>8.2f} {cp:>5} {base[1] / cw:>7.1f}x {lw:>8.2f} {lp:>5} {base[3] / lw:>7.1f}x "
              f"{micros:>13} {tokens:>9} {str(same):>5}")
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not all(r[-1] for r in rows):
        sys.exit("labels, answers or ledger totals differ between concurrencies")


if __name__ == "__main__":
    main()
