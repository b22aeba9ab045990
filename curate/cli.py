"""The ``curate`` command line. Only this module configures logging handlers.

The core's commands are here; every installed paradigm (:mod:`curate.plugins`) adds ``curate
<paradigm> run | resume | ...`` and any top-level commands of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from curate.errors import CurateError
from curate.outputs import check_output

__all__ = ["main"]

logger = logging.getLogger("curate")


def _columns(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        role, sep, name = pair.partition("=")
        if not sep or not role or not name:
            raise CurateError(f"--column takes ROLE=COLUMN (e.g. text=sentence); got '{pair}'.")
        out[role] = name
    return out


def _add_pool_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pool", help="JSONL/JSON/CSV/TSV/Parquet or '<label> <text>' line file, saved datasets folder, "
                   "sample:NAME, or hf:NAME for a hub dataset")
    p.add_argument("--column", action="append", default=[], metavar="ROLE=COLUMN",
                   help="map a role (text, label, prompt, response, chosen, rejected) to a column; repeatable")
    p.add_argument("--split", default="train", help="split of a hub dataset or saved DatasetDict (default: train)")
    p.add_argument("--format", default=None, dest="pool_format", metavar="FORMAT",
                   help="read the pool file as jsonl, json, csv, tsv, parquet or lines (default: from the suffix); "
                   "lines = '<label> <text>' per line, options lines:label_last / lines:no_label / lines:tab")


def build_parser(plugins: Sequence[Any] | None = None) -> tuple[argparse.ArgumentParser, dict]:
    """The parser and ``{command: handler}``, with the commands of each paradigm in ``plugins``
    (default: every installed one)."""
    if plugins is None:
        from curate.plugins import installed

        plugins = list(installed().values())
    parser = argparse.ArgumentParser(prog="curate", description="Active learning for LLM training data.")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("env", help="versions, embedded models and optional parts present")

    index = sub.add_parser("index", help="build or query an embedding index")
    isub = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    build = isub.add_parser("build", help="embed a pool and save a FAISS index")
    _add_pool_args(build)
    build.add_argument("--out", required=True, help="folder to write the index into")
    build.add_argument("--embedder", default=None, help="embedder id or path (default: all-MiniLM-L6-v2)")
    build.add_argument("--kind", default="auto", help="auto, flat, hnsw, ivf, or a FAISS factory string")
    query = isub.add_parser("query", help="nearest pool items to a text")
    query.add_argument("index", help="folder written by 'curate index build'")
    query.add_argument("--text", required=True, action="append", help="query text; repeatable")
    query.add_argument("-k", type=_at_least(1), default=5, help="neighbours per query (default: 5)")
    query.add_argument("--embedder", default=None, help="defaults to the model the index was built with")

    select = sub.add_parser("select", help="one-shot selection: the K items to label next, to a file")
    _add_pool_args(select)
    select.add_argument("--strategy", required=True, help="e.g. random, entropy, margin, kcenter, kmeans, votek, badge")
    select.add_argument("--budget", type=_at_least(1), required=True, help="how many items to select")
    select.add_argument("--out", required=True, help="output .jsonl or .csv with rank, id, score and the row")
    select.add_argument("--labels", default=None,
                        help="comma-separated classes; rows whose label is one of them count as labelled and "
                             "train the model that uncertainty strategies need")
    select.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="strategy parameter; repeatable")
    select.add_argument("--embedder", default=None, help="embedder id or path (default: all-MiniLM-L6-v2)")
    select.add_argument("--seed", type=_at_least(0), default=0)
    select.add_argument("--allow-fewer", action="store_true", help="take what is left when fewer than --budget remain")

    _add_run_arguments(sub.add_parser("run", help="run a recipe of any paradigm (its 'paradigm:' key says which)"))
    _add_resume_arguments(sub.add_parser("resume", help="continue a run of any paradigm that stopped or was killed"))
    _add_export_arguments(sub.add_parser("export", help="write a run's data (any paradigm) from its journal"))

    label = sub.add_parser("label", help="label an exported batch in the terminal (keys: 1-9, s skip, u undo, q quit)")
    label.add_argument("batch", help="batch file exported for people (JSONL or CSV)")
    label.add_argument("--labels", required=True, help="comma-separated classes, in key order")
    label.add_argument("--answers", default=None, help="answers file to append to (default: answers.jsonl beside the batch)")

    gen = sub.add_parser("generate", help="generate new labelled examples, checked by rejection sampling")
    gen.add_argument("--task", required=True, help="what the examples are, e.g. 'movie review sentiment'")
    gen.add_argument("--labels", required=True, help="comma-separated labels to generate for (balanced)")
    gen.add_argument("--n", type=_at_least(1), required=True, help="accepted examples wanted")
    gen.add_argument("--out", required=True, help="output .jsonl (text, label, source)")
    gen.add_argument("--examples", default=None, help="pool with text/label to imitate (label-conditioned generation)")
    gen.add_argument("--dedup-against", default=None, help="pool whose texts generated ones must not duplicate")
    gen.add_argument("--lm", default=None, help="generator and filter LM (default: embedded SmolLM2-135M-Instruct)")
    gen.add_argument("--device", default="auto")
    gen.add_argument("--backend", default="hf", choices=["hf", "vllm", "openai"], help="LM backend (default: hf)")
    gen.add_argument("--base-url", default=None, help="server URL for --backend openai")
    gen.add_argument("--temperature", type=float, default=0.9)
    gen.add_argument("--max-new-tokens", type=_at_least(1), default=40)
    gen.add_argument("--batch-size", type=_at_least(1), default=8)
    gen.add_argument("--label-threshold", type=float, default=0.5,
                     help="reject when the LM gives the intended label less than this probability (0 = off)")
    gen.add_argument("--judge-threshold", type=float, default=0.0, help="Ask-LLM quality threshold (0 = off)")
    gen.add_argument("--dup-threshold", type=float, default=0.92, help="cosine at which an example is a near duplicate")
    gen.add_argument("--max-cost", type=float, default=None, help="cost cap in currency (needs --price-in/--price-out)")
    gen.add_argument("--price-in", type=float, default=0.0, help="price per 1M input tokens")
    gen.add_argument("--price-out", type=float, default=0.0, help="price per 1M output tokens")
    gen.add_argument("--seed", type=_at_least(0), default=0)

    score = sub.add_parser("score", help="score a pool with the LM into a new column")
    _add_pool_args(score)
    score.add_argument("--kind", choices=["perplexity", "options"], required=True,
                       help="perplexity of each text, or log-probs of --options after a --template prompt")
    score.add_argument("--options", default=None, help="comma-separated options, e.g. positive,negative")
    score.add_argument("--template", default=None,
                       help="prompt with {text} (and other {column}s), e.g. 'Review: {text}\\nSentiment:'")
    score.add_argument("--chat", action="store_true", help="wrap the template as a user message in the chat template")
    score.add_argument("--lm", default=None, help="LM id or path (default: embedded SmolLM2-135M-Instruct)")
    score.add_argument("--backend", default="hf", choices=["hf", "vllm", "openai"], help="LM backend (default: hf)")
    score.add_argument("--base-url", default=None, help="server URL for --backend openai")
    score.add_argument("--device", default="auto")
    score.add_argument("--out", required=True, help="output .jsonl, .parquet, or folder")
    bench = sub.add_parser("bench", help="benchmark grid -> table; 'bench report RUN_DIR'; 'bench speed RECIPE'",
                           description="curate bench RECIPE [--out RUN_DIR] runs (or resumes) a benchmark grid; "
                                       "curate bench report RUN_DIR writes the report from its table; "
                                       "curate bench speed RECIPE times selection at large pool sizes.")
    bench.add_argument("target", help="a benchmark recipe (recipes/bench-*.yaml), or 'report' / 'speed'")
    bench.add_argument("path", nargs="?", default=None, help="report: the benchmark folder; speed: the recipe")
    bench.add_argument("--out", default=None, help="benchmark folder (default: runs/bench-<name>); report: where to write")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="override a recipe value, e.g. grid.seed=[0] or schedules.default.rounds=3; repeatable")
    bench.add_argument("--threads", type=int, default=None, help="pin BLAS/OpenMP/torch threads (stable timings)")
    bench.add_argument("--limit", type=int, default=None, help="run at most this many cells, then stop")
    bench.add_argument("--no-speed", action="store_true", help="skip the recipe's speed section")
    bench.add_argument("--sizes", default=None, help="speed: comma-separated pool sizes, e.g. 10000,100000")
    bench.add_argument("--metric", default="metric", help="report: the metric column (default: the primary)")
    bench.add_argument("--no-report", action="store_true", help="do not write the report after the run")
    bench.add_argument("--dry-run", action="store_true", help="print the cells, label schedules and money worst case; "
                       "run nothing")
    bench.add_argument("--rebuild-table", action="store_true",
                       help="rewrite the done cells' rows from their journals (after an upgrade); runs nothing")
    handlers = {"env": _env, "index": _index, "score": _score, "select": _select, "run": _run,
                "resume": _resume, "export": _export, "label": _label, "generate": _generate, "bench": _bench}
    for paradigm in plugins:
        handlers.update(_paradigm_commands(sub, paradigm))
    return parser, handlers


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<recipe name>)")
    _add_lifecycle_flags(p, "override a recipe value, e.g. acquire.batch_size=50; repeatable")


def _add_resume_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run folder")
    _add_lifecycle_flags(p, "continue under changed recipe values, e.g. stop.rounds=6; repeatable")


def _add_lifecycle_flags(p: argparse.ArgumentParser, set_help: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides", help=set_help)
    p.add_argument("--dry-run", action="store_true", help="print the most it can spend, spend nothing")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")


def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run folder")
    p.add_argument("--out", default=None, help="where to write (default: the paradigm's file in the run folder)")


def _paradigm_commands(sub, paradigm) -> dict:
    """``curate <paradigm> run | resume | <its own actions>``, and its top-level commands."""
    parser = sub.add_parser(paradigm.name, help=paradigm.summary)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_run_arguments(actions.add_parser("run", help=f"run a {paradigm.name} recipe"))
    _add_resume_arguments(actions.add_parser("resume", help=f"continue a {paradigm.name} run folder"))
    _add_export_arguments(actions.add_parser("export", help=f"write a {paradigm.name} run's data from its journal"))
    own = {"run": lambda args: _run(args, paradigm.name), "resume": _resume, "export": _export}
    if paradigm.actions is not None:
        own.update(paradigm.actions(actions))
    handlers = {paradigm.name: lambda args: own[args.action](args)}
    if paradigm.commands is not None:
        handlers.update(paradigm.commands(sub))
    return handlers


def _with_default_action(argv: list[str], names: Sequence[str]) -> list[str]:
    """``curate distill RECIPE`` reads as ``curate distill run RECIPE``: a paradigm followed by
    something that is not one of its actions runs it (the form earlier releases had)."""
    for k, word in enumerate(argv):
        if word.startswith("-"):
            continue
        if word in names and k + 1 < len(argv) and argv[k + 1].endswith((".yaml", ".yml")):
            return [*argv[: k + 1], "run", *argv[k + 1:]]
        return argv
    return argv


def _at_least(low: int):
    """An argparse type: an integer >= ``low``, or argparse's own clear error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from curate.plugins import installed

        found = list(installed().values())
    except CurateError as err:
        print(f"curate: error: {err}", file=sys.stderr)
        return 2
    parser, handlers = build_parser(found)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_with_default_action(argv, [p.name for p in found]))
    from curate.progress import set_quiet

    set_quiet(args.quiet)
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.quiet and not args.verbose:
        # Round-by-round progress of long loops; the rest of the library speaks only with -v.
        logging.getLogger("curate.loop").setLevel(logging.INFO)
    for noisy in ("httpx", "urllib3", "filelock", "sentence_transformers", "transformers", "faiss"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if args.quiet:
        _silence_hf()
    try:
        return handlers[args.command](args)
    except CurateError as err:
        print(f"curate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("curate: interrupted; what was bought is in the run's journal (`curate resume` continues).",
              file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an unforeseen input: one paragraph, the traceback only with -v
        if args.verbose:
            raise
        print(f"curate: internal error: {type(err).__name__}: {err}\nThis is a bug in curate or an input it does "
              "not check yet; nothing past the last journalled step was bought. Run again with -v for the "
              "traceback, and please report it.", file=sys.stderr)
        return 1


def _silence_hf() -> None:
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


def _env(args) -> int:
    from curate.env import environment_report

    report = environment_report()
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _index(args) -> int:
    from curate.embed import load_embedder
    from curate.index import EmbeddingIndex
    from curate.models import DEFAULT_EMBEDDER
    from curate.pool import load_pool

    if args.index_command == "build":
        check_output(args.out, inputs=[args.pool], folder=True)
        pool = load_pool(args.pool, columns=_columns(args.column), split=args.split, format=args.pool_format)
        embedder = load_embedder(args.embedder or DEFAULT_EMBEDDER)
        index = EmbeddingIndex.from_pool(pool, embedder, kind=args.kind)
        index.save(args.out)
        print(f"Indexed {len(index)} items from {pool.source} ({index.factory_}, dim {index.dim}, "
              f"{embedder.name}) into {args.out}")
        return 0
    index = EmbeddingIndex.load(args.index)
    model = args.embedder or index.model.split("|", 1)[0]
    embedder = load_embedder(model)
    scores, ids = index.search(embedder.encode(args.text), args.k)
    for text, row_s, row_i in zip(args.text, scores, ids, strict=True):
        print(json.dumps({"query": text, "ids": row_i.tolist(), "scores": [round(float(s), 4) for s in row_s]}))
    return 0


def _select(args) -> int:
    import numpy as np
    import yaml

    from curate.acquire import PoolState, make_strategy
    from curate.embed import load_embedder
    from curate.export import save_dataset
    from curate.index import EmbeddingIndex
    from curate.learners import EmbeddingClassifier
    from curate.models import DEFAULT_EMBEDDER
    from curate.pool import load_pool

    check_output(args.out, inputs=[args.pool])
    pool = load_pool(args.pool, columns=_columns(args.column), split=args.split, format=args.pool_format)
    params = {}
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep:
            raise CurateError(f"--param takes KEY=VALUE; got '{item}'.")
        params[key] = yaml.safe_load(raw)
    strategy = make_strategy(args.strategy, **params)
    if hasattr(strategy, "allow_fewer"):
        strategy.allow_fewer = args.allow_fewer
    embedder = load_embedder(args.embedder or DEFAULT_EMBEDDER)
    index = EmbeddingIndex.from_pool(pool, embedder)
    labeled, probs = np.zeros(0, dtype=np.int64), None
    if args.labels:
        classes = [c.strip() for c in args.labels.split(",")]
        raw = [str(v) if v is not None else "" for v in pool.column("label")] if "label" in pool.roles else []
        labeled = np.array([i for i, v in enumerate(raw) if v in classes], dtype=np.int64)
        learner = EmbeddingClassifier(index.vectors, classes)
        learner.fit(labeled, [raw[i] for i in labeled])
        probs = learner.predict_proba(np.arange(len(pool)))
    state = PoolState.of(pool, labeled=labeled, index=index, probs=probs)
    selection = strategy.select(state, args.budget, rng=np.random.default_rng(args.seed))
    rows = pool.select(selection.ids)
    rows = rows.add_column("rank", list(range(1, len(selection.ids) + 1)))
    scores = selection.scores if selection.scores is not None else np.full(len(selection.ids), np.nan)
    rows = rows.add_column("score", [float(s) for s in scores])
    save_dataset(rows, args.out) if not args.out.endswith(".csv") else rows.to_csv(args.out, index=False)
    print(f"Selected {len(selection.ids)} of {len(state.candidates)} unlabelled items ({args.strategy}) into {args.out}")
    return 0


def _run(args, paradigm: str | None = None) -> int:
    from curate.runs import start_run

    chosen, outcome = start_run(args.recipe, args.overrides, args.out, paradigm=paradigm, dry_run=args.dry_run,
                                evaluate=not args.no_eval)
    _report(chosen, outcome)
    return 0


def _resume(args) -> int:
    from curate.runs import resume_run

    chosen, outcome = resume_run(args.run_dir, args.overrides, dry_run=args.dry_run, evaluate=not args.no_eval)
    _report(chosen, outcome)
    return 0


def _export(args) -> int:
    from curate.runs import export_run

    paradigm, path = export_run(args.run_dir, args.out)
    print(json.dumps({"paradigm": paradigm.name, "exported": str(path)}))
    return 0


def _report(paradigm, outcome) -> None:
    print(f"Estimated cost: {outcome.estimate.describe()}")
    if not outcome.dry_run:
        paradigm.report(outcome)


def _bench(args) -> int:
    from curate.bench.cli import run_bench_command

    return run_bench_command(args)


def _label(args) -> int:
    from curate.annotate.terminal import run_labeller

    labels = [c.strip() for c in args.labels.split(",")]
    answers = args.answers
    if answers is None:
        from pathlib import Path

        answers = str(Path(args.batch).with_name("answers.jsonl"))
    run_labeller(args.batch, answers, labels)
    return 0


def _lm_backend(args):
    """The LM of ``--backend``/``--lm``/``--device``/``--base-url``, built as a recipe's ``lm:`` block is
    (:func:`curate.build.backend_from`: the device goes to local transformers only, never to vLLM)."""
    from curate.build import backend_from
    from curate.config import LMConfig
    from curate.models import DEFAULT_LM

    return backend_from(LMConfig(backend=args.backend, model=args.lm or DEFAULT_LM, device=args.device,
                                 base_url=args.base_url))


def _generate(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from curate.budget import Ledger, Prices
    from curate.embed import load_embedder
    from curate.generate import Generator, generate_accepted, standard_filters, worst_case_tokens
    from curate.index import EmbeddingIndex
    from curate.pool import load_pool

    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    if len(labels) < 1:
        raise CurateError("--labels needs at least one label.")
    check_output(args.out, inputs=[args.examples, getattr(args, "pool", None)])
    backend = _lm_backend(args)
    embedder = load_embedder()
    examples = None
    if args.examples:
        ex = load_pool(args.examples, require=("text", "label"))
        examples = {}
        for text, label in zip(ex.texts(), ex.column("label"), strict=True):
            examples.setdefault(str(label), []).append(text)
    pool_texts, index = [], None
    if args.dedup_against:
        against = load_pool(args.dedup_against)
        pool_texts = against.texts()
        index = EmbeddingIndex.from_vectors(embedder.encode(pool_texts), kind="auto")
    filters = standard_filters(backend, embedder, labels=labels, pool_texts=pool_texts, index=index,
                               min_chars=12, max_chars=400, dup_threshold=args.dup_threshold,
                               label_threshold=args.label_threshold, judge_threshold=args.judge_threshold)
    prices = Prices(llm_input_per_million=args.price_in, llm_output_per_million=args.price_out)
    ledger = Ledger(prices, budget=args.max_cost)
    tokens_in, tokens_out = worst_case_tokens(filters, args.max_new_tokens)
    worst = prices.micros(input_tokens=tokens_in, output_tokens=tokens_out)
    gen = Generator(backend, temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    result = generate_accepted(lambda n, rng: gen.for_labels(args.task, labels, n, rng=rng, examples=examples),
                               filters, args.n, rng=np.random.default_rng(args.seed), backends=[backend], ledger=ledger,
                               worst_case_micros=worst, batch_size=args.batch_size, max_batches=max(50, 4 * args.n))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(c.to_row()) + "\n" for c in result.accepted))
    print(result.report.describe())
    print(f"Stopped: {result.stop_reason}. Ledger: {ledger.describe()}")
    print(f"Wrote {len(result.accepted)} examples to {out}")
    return 0


def _score(args) -> int:
    import numpy as np

    from curate.errors import ConfigError
    from curate.export import save_dataset
    from curate.pool import load_pool

    check_output(args.out, inputs=[args.pool])
    pool = load_pool(args.pool, columns=_columns(args.column), split=args.split, format=args.pool_format)
    backend = _lm_backend(args)
    texts = pool.texts()
    if args.kind == "perplexity":
        values = backend.perplexity(texts)
        dataset = pool.dataset.add_column("perplexity", values.tolist())
    else:
        if not args.options or not args.template:
            raise ConfigError("--kind options needs --options (e.g. positive,negative) and --template (with {text}).")
        options = [o.strip() for o in args.options.split(",")]
        # Shells pass "\n" literally; a template is easier to write with escapes read as such.
        template = args.template.replace("\\n", "\n").replace("\\t", "\t")
        rows = pool.dataset
        try:
            prompts = [template.format(**{"text": t, **row}) for t, row in zip(texts, rows, strict=True)]
        except KeyError as err:
            raise ConfigError(f"--template names {{{err.args[0]}}}, which is not a column. "
                              f"Columns: {', '.join(pool.columns)}.") from None
        if args.chat:
            prompts = [backend.chat_prompt([{"role": "user", "content": p}]) for p in prompts]
        logp = backend.option_logprobs(prompts, options)
        probs = np.exp(logp)
        dataset = pool.dataset.add_column("option_logprobs", logp.tolist())
        dataset = dataset.add_column("prediction", [options[i] for i in probs.argmax(1)])
        dataset = dataset.add_column("confidence", probs.max(1).tolist())
    save_dataset(dataset, args.out)
    print(f"Scored {len(pool)} rows ({args.kind}) into {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
