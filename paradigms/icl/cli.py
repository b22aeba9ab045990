"""``curate icl select | annotate | eval``: argument builders and handlers, wired by ``curate.cli``.

Each command reads an optional recipe (``recipes/icl-*.yaml``, mirroring
:class:`~curate.paradigms.icl.config.ICLConfig`), then ``--set a.b=value`` overrides, then its own
flags. Handlers return an exit code and raise ``CurateError`` for the CLI to print.

* ``select``: per test input, the demonstrations and the rendered prompt -> JSONL rows with
  ``input_id``, ``text``, ``prompt``, ``options``, ``demonstration_ids`` (and ``label`` when known).
* ``annotate``: selective annotation under a budget into a run folder (journal, resumable) and
  ``demonstrations.jsonl`` (the annotated examples, to use as the pool of ``select``/``eval``).
* ``eval``: accuracy on labelled test inputs, mean +- sd over seeds -> JSON; the result is the
  accuracy ``evaluate.primary`` names (default: dataset-calibrated when calibrating, else raw), the
  other calibrations are printed as secondary lines. Beside the JSON, ``<out>.predictions.jsonl``:
  one row per seed and test input (see :func:`~curate.paradigms.icl.evaluate.prediction_rows`), in
  test-set order, so two evaluations of the same inputs pair up row by row.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from curate.errors import ConfigError

__all__ = ["add_actions", "add_annotate_arguments", "add_eval_arguments", "add_select_arguments", "report",
           "run_annotate", "run_eval", "run_select"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- arguments


def _common(p: argparse.ArgumentParser, *, inputs: bool) -> None:
    p.add_argument("recipe", nargs="?", default=None, help="YAML recipe (see recipes/icl-*.yaml); optional")
    p.add_argument("--pool", default=None, help="the labelled pool (select/eval) or the pool to annotate; "
                   "overrides pool.path")
    if inputs:
        p.add_argument("--inputs", default=None, help="the test inputs; overrides inputs.path")
    p.add_argument("--labels", default=None, help="comma-separated label set (default: the labels in the pool)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a recipe value, e.g. retrieve.k=8 or prompt.chat=true; repeatable")


def add_select_arguments(p: argparse.ArgumentParser) -> None:
    """``curate icl select``: demonstrations and prompts for each test input."""
    _common(p, inputs=True)
    p.add_argument("--out", required=True, help="output JSONL, one prompt per test input")
    p.add_argument("--seed", type=int, default=None, help="seed for random retrieval or order (default: recipe seed)")


def add_annotate_arguments(p: argparse.ArgumentParser) -> None:
    """``curate icl annotate``: selective annotation under a budget."""
    _common(p, inputs=False)
    p.add_argument("--out", required=True, help="run folder: journal (resumable), demonstrations.jsonl")
    p.add_argument("--strategy", default=None, help="votek, kcenter, kmeans, random or uncertainty")
    p.add_argument("--budget", type=int, default=None, help="labels to buy")


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """``curate icl eval``: accuracy of the LM with the chosen demonstrations."""
    _common(p, inputs=True)
    p.add_argument("--out", default=None, help="write the results as JSON here, and the per-input predictions "
                   "beside it (<out stem>.predictions.jsonl)")
    p.add_argument("--predictions", default=None, help="write the per-input predictions (JSONL, one row per seed "
                   "and test input) here instead")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: evaluate.seeds)")


def add_actions(sub) -> dict[str, Any]:
    """``curate icl select | annotate | eval`` (``run`` = annotate from a recipe, and ``resume``, come
    from the core)."""
    add_select_arguments(sub.add_parser("select", help="per test input, demonstrations and the prompt -> JSONL"))
    add_annotate_arguments(sub.add_parser("annotate", help="selective annotation under a budget (vote-k, ...)"))
    add_eval_arguments(sub.add_parser("eval", help="accuracy with the chosen demonstrations, mean +- sd over seeds"))
    return {"select": run_select, "annotate": run_annotate, "eval": run_eval}


# ---------------------------------------------------------------------------------------------- shared steps


def _config(args, **flags: Any):
    from .config import load_icl_config

    config = load_icl_config(args.recipe, args.overrides)
    if args.pool:
        config.pool.path = args.pool
    if getattr(args, "inputs", None):
        from curate.config import PoolConfig

        config.inputs = config.inputs or PoolConfig()
        config.inputs.path = args.inputs
    if args.labels:
        config.labels = [c.strip() for c in args.labels.split(",") if c.strip()]
    for key, value in flags.items():
        if value is not None:
            section, name = key.split(".")
            setattr(getattr(config, section), name, value)
    if not config.pool.path:
        raise ConfigError("No pool: pass --pool PATH or set pool.path in the recipe.")
    return config


def _load(pc, require: tuple[str, ...]):
    from .run import load_pool_of

    return load_pool_of(pc, require)


def _roles(config, *roles: str) -> tuple[str, ...]:
    """The roles a pool needs: the text role only for a ``{text}`` template (other templates name
    their columns, checked by ``check_input_fields``)."""
    from .config import template_fields

    return (("text",) if template_fields(config.prompt.input_template) == ("text",) else ()) + roles


def _load_both(config, input_roles: tuple[str, ...]):
    """The labelled pool and the test inputs, their template fields checked before a model is loaded."""
    from .prompts import check_input_fields

    pool = _load(config.pool, _roles(config, "label"))
    check_input_fields(config.prompt, pool, "pool")
    inputs = _inputs(config, _roles(config, *input_roles))
    check_input_fields(config.prompt, inputs, "test inputs")
    return pool, inputs


def _labels(config, pool) -> list[str]:
    from .run import labels_of

    return labels_of(config, pool)


def _backend(config):
    from curate.build import backend_from

    return backend_from(config.lm, config.executor)


def _labelled_set(config, pool, labels: list[str]):
    """Pool ids, labels and inputs (texts, or the template's fields) of the rows whose label is in the label set."""
    import numpy as np

    from .prompts import template_inputs

    raw = [str(v) if v is not None else None for v in pool.column("label")]
    keep = np.array([i for i, v in enumerate(raw) if v in labels], dtype=np.int64)
    if not len(keep):
        raise ConfigError(f"No row of {pool.source} has a label in {labels}. Labels found: "
                          f"{sorted({v for v in raw if v is not None})[:10]}.")
    return keep, [raw[i] for i in keep], template_inputs(config.prompt, pool, keep)


def _retrieval_parts(config, pool, labels, backend):
    """The embedder (None unless demonstrations are chosen by similarity), prompt builder and retriever.

    Only ``knn`` with ``k > 0`` embeds anything: zero-shot, ``random`` and ``fixed`` never load the
    embedder nor encode the pool."""
    from .prompts import PromptBuilder, embedding_texts
    from .retrieve import DemonstrationRetriever

    ids, demo_labels, items = _labelled_set(config, pool, labels)
    embedder = index = None
    if config.retrieve.needs_vectors:
        from curate.embed import load_embedder
        from curate.index import EmbeddingIndex

        embedder = load_embedder(config.embedder)
        index = EmbeddingIndex.from_vectors(embedder.encode(embedding_texts(config.prompt, items)), ids,
                                            model=embedder.name)
    builder = PromptBuilder.for_backend(config.prompt, labels, backend)
    retriever = DemonstrationRetriever(config.retrieve, index=index, ids=ids, labels=demo_labels, texts=items,
                                       backend=backend, builder=builder)
    return embedder, builder, retriever


def _inputs(config, require):
    if config.inputs is None or not config.inputs.path:
        raise ConfigError("No test inputs: pass --inputs PATH or set inputs.path in the recipe.")
    return _load(config.inputs, require)


# ---------------------------------------------------------------------------------------------- select


def run_select(args) -> int:
    import numpy as np

    from .evaluate import build_prompts
    from .prompts import embedding_texts, template_inputs

    config = _config(args)
    pool, inputs = _load_both(config, ())
    labels = _labels(config, pool)
    texts = template_inputs(config.prompt, inputs)
    shown = embedding_texts(config.prompt, texts)
    backend = _backend(config)
    embedder, builder, retriever = _retrieval_parts(config, pool, labels, backend)
    seed = config.seed if args.seed is None else args.seed
    rng = np.random.default_rng(seed)
    vectors = embedder.encode(shown) if embedder is not None else None
    demos = retriever.retrieve(vectors, query_texts=texts, rng=rng)
    prompts = build_prompts(builder, texts, demos, order=config.retrieve.order, rng=rng)
    keys = pool.column("key") if "key" in pool.columns else None
    gold = [str(v) for v in inputs.column("label")] if "label" in inputs.roles else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        for i, (text, prompt) in enumerate(zip(texts, prompts, strict=True)):
            row = {"input_id": int(inputs.ids[i]), "text": shown[i], "prompt": prompt.text, "options": builder.options,
                   "demonstration_ids": prompt.demo_ids, "demonstration_labels": [d.label for d in prompt.demos]}
            if not isinstance(text, str):
                row["fields"] = dict(text)
            if "key" in inputs.columns:
                row["input_key"] = inputs.column("key")[i]
            if keys is not None:
                row["demonstration_keys"] = [keys[d] for d in prompt.demo_ids]
            if prompt.dropped:
                row["dropped_demonstrations"] = prompt.dropped
            if gold is not None:
                row["label"] = gold[i]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    dropped = sum(p.dropped for p in prompts)
    print(f"Wrote {len(prompts)} prompts ({config.retrieve.method}, k={config.retrieve.k}, "
          f"rerank={config.retrieve.rerank}) to {out}" + (f"; {dropped} demonstrations dropped to fit" if dropped else ""))
    return 0


# ---------------------------------------------------------------------------------------------- annotate


def run_annotate(args) -> int:
    from curate.runs import RunFolder, execute

    from . import PARADIGM

    config = _config(args, **{"annotate.strategy": args.strategy, "annotate.budget": args.budget})
    # __post_init__ checks do not rerun on attribute changes: check the flags' values here.
    type(config.annotate)(**vars(config.annotate))
    report(execute(PARADIGM, config, RunFolder(args.out)))
    return 0


def report(outcome) -> None:
    """What selective annotation prints (``curate icl annotate`` / ``run``, ``curate resume``)."""
    s, result = outcome.summary, outcome.result
    print(f"{s['strategy']}: {s['labels']} of {s['pool_size']} examples annotated ({s['stop_reason']}); "
          f"{result.ledger.describe()}")
    print(f"Demonstrations: {s['demonstrations']} (use it as --pool of `curate icl select` / `eval`)")
    if result.waiting:
        print(f"Waiting for people to label the exported batch; then run the same command again to resume "
              f"{outcome.folder}.")


# ---------------------------------------------------------------------------------------------- eval


def run_eval(args) -> int:
    from curate.jsonl import write_jsonl

    from .evaluate import ACCURACY_KEYS, CALIBRATION_MEANING, evaluate_icl, mean_sd, prediction_rows
    from .prompts import embedding_texts, template_inputs

    config = _config(args)
    if args.seeds:
        try:
            config.evaluate.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds takes comma-separated integers, e.g. 0,1,2. Got '{args.seeds}'.") from None
    primary = config.evaluate.result
    calibrations = ("raw", "prompt", "dataset") if config.evaluate.calibrate else ("raw",)
    secondary = [c for c in calibrations if c != primary]
    pool, inputs = _load_both(config, ("label",))
    labels = _labels(config, pool)
    texts = template_inputs(config.prompt, inputs)
    gold = [str(v) for v in inputs.column("label")]
    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise ConfigError(f"Test labels {unknown[:5]} are not in the label set {labels}.")
    input_ids = inputs.column("key") if "key" in inputs.columns else inputs.ids.tolist()
    demo_keys = pool.column("key") if "key" in pool.columns else None
    backend = _backend(config)
    embedder, builder, retriever = _retrieval_parts(config, pool, labels, backend)
    vectors = embedder.encode(embedding_texts(config.prompt, texts)) if embedder is not None else None
    runs, rows = [], []
    for seed in config.evaluate.seeds:
        result = evaluate_icl(backend, builder, retriever, texts, gold, vectors, order=config.retrieve.order, seed=seed,
                              calibrate=config.evaluate.calibrate, content_free=config.evaluate.content_free)
        runs.append({"seed": seed, "result": result.accuracy_of(primary), **result.summary()})
        rows += prediction_rows(result, gold, ids=input_ids, primary=primary, demo_keys=demo_keys, seed=seed)
        others = ", ".join(f"{_NAMES[c]} {result.accuracy_of(c):.4f}" for c in secondary)
        print(f"seed {seed}: result {result.accuracy_of(primary):.4f} ({_NAMES[primary]} accuracy)"
              + (f"; secondary: {others}" if others else "") + f" ({result.inputs_per_second:.2f} inputs/s)")
    stats = {c: mean_sd([r[ACCURACY_KEYS[c]] for r in runs]) for c in calibrations}
    summary = {"result": {"calibration": primary, "metric": ACCURACY_KEYS[primary], "mean": stats[primary][0],
                          "sd": stats[primary][1], "meaning": CALIBRATION_MEANING[primary]},
               "secondary": [{"calibration": c, "metric": ACCURACY_KEYS[c], "mean": stats[c][0], "sd": stats[c][1],
                              "meaning": CALIBRATION_MEANING[c]} for c in secondary]}
    for c in calibrations:  # the flat keys, as before
        summary[f"{ACCURACY_KEYS[c]}_mean"], summary[f"{ACCURACY_KEYS[c]}_sd"] = stats[c]
    print(f"{len(texts)} inputs, {len(runs)} seed(s): result: {_NAMES[primary]} accuracy "
          f"{stats[primary][0]:.4f} +- {stats[primary][1]:.4f} (evaluate.primary={primary}: "
          f"{CALIBRATION_MEANING[primary]})")
    for c in secondary:
        print(f"  secondary: {_NAMES[c]} accuracy {stats[c][0]:.4f} +- {stats[c][1]:.4f} ({CALIBRATION_MEANING[c]})")
    out = Path(args.out) if args.out else None
    predictions = Path(args.predictions) if args.predictions else (
        out.with_name(f"{out.stem}.predictions.jsonl") if out is not None else None)
    if predictions is not None:
        predictions.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(predictions, rows)
        print(f"Predictions: {predictions} ({len(rows)} rows: one per seed and test input)")
    if out is not None:
        from curate.config import to_dict

        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": to_dict(config), "runs": runs, "summary": summary,
                                   "predictions": None if predictions is None else str(predictions)}, indent=2))
        print(f"Results: {out}")
    return 0


_NAMES = {"raw": "raw", "prompt": "per-prompt calibrated", "dataset": "dataset-calibrated"}
