"""``curate run`` / ``curate resume``: build a loop from a :class:`~curate.config.RunConfig` and run it.

A run folder holds the resolved ``config.yaml`` and ``versions.json`` (written before anything
is bought), the journal, and after each invocation ``curve.csv`` and ``curve.png``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from curate.config import RunConfig, from_dict, to_dict
from curate.errors import ConfigError

__all__ = ["CostEstimate", "build_loop", "estimate_cost", "resume_run", "start_run", "write_curve"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CostEstimate:
    labels: int
    per_item_worst_case: float
    total_worst_case: float
    currency: str
    budget: float | None
    generation_worst_case: float = 0.0  # included in total_worst_case

    def describe(self) -> str:
        gen = (f" + generation at most {self.generation_worst_case:.4f} {self.currency}"
               if self.generation_worst_case else "")
        text = (f"up to {self.labels} labels x at most {self.per_item_worst_case:.6f} {self.currency} each{gen} = "
                f"at most {self.total_worst_case:.4f} {self.currency}")
        if self.budget is not None:
            text += f" (money budget {self.budget:.4f}: {'fits' if self.total_worst_case <= self.budget else 'the budget stops it first'})"
        return text


def _planned_labels(config: RunConfig, pool_size: int) -> int:
    stop = config.stop
    rounds = stop.rounds if stop.rounds is not None else max(1, (pool_size - config.init.size) // config.acquire.batch_size + 1)
    total = config.init.size + max(0, rounds - 1) * config.acquire.batch_size
    if stop.labels is not None:
        total = min(total, stop.labels)
    return min(total, pool_size)


def _prices(config: RunConfig):
    from curate.ledger import Prices

    p = config.prices
    return Prices(p.human_per_label, p.llm_input_per_million, p.llm_output_per_million, p.currency)


def estimate_cost(config: RunConfig, pool_size: int, annotator, generators=()) -> CostEstimate:
    """The worst case a recipe can spend, computed before spending anything (labels, and what
    generation may spend in the rounds it is due)."""
    prices = _prices(config)
    per_item = annotator.worst_case_micros(prices) / 1e6
    labels = _planned_labels(config, pool_size)
    total = labels * per_item
    stop = config.stop
    rounds = stop.rounds if stop.rounds is not None else 1 + max(0, labels - config.init.size) // config.acquire.batch_size
    generation = sum(g.worst_case_micros(prices) for g in generators for r in range(rounds) if g.due(r)) / 1e6
    total += generation
    if config.stop.money is not None:
        total = min(total, config.stop.money)
    return CostEstimate(labels, per_item, total, prices.currency, config.stop.money, generation)


def build_annotator(config: RunConfig, pool, index, backend_factory):
    a = config.annotator
    labels = config.labels
    if a.kind == "gold":
        from curate.annotate.base import GoldAnnotator

        return GoldAnnotator(column=a.column)
    if a.kind == "hybrid" and a.human == "gold":
        from curate.annotate.base import GoldAnnotator

        human = GoldAnnotator(column=a.column, source="human")  # people simulated by the gold labels
    elif a.kind in ("human", "hybrid"):
        from curate.annotate.human import HumanQueueAnnotator

        if not a.queue_dir:
            raise ConfigError(f"annotator.kind '{a.kind}' needs annotator.queue_dir (where batches for people go).")
        human = HumanQueueAnnotator(a.queue_dir, labels=labels, fmt=a.queue_format)
        if a.kind == "human":
            return human
    from curate.annotate.llm import LLMAnnotator

    instruction = a.instruction.replace("{labels}", ", ".join(labels))
    llm = LLMAnnotator(backend_factory(), labels, instruction=instruction, template=a.template, shots=a.shots,
                       index=index, verbalizers=a.verbalizers or None)
    if a.kind == "llm":
        return llm
    from curate.annotate.hybrid import HybridAnnotator

    return HybridAnnotator(llm, human, threshold=a.threshold)


def stopping_rule(config):
    """The stop rule of a config with a ``stop`` block (:class:`~curate.config.StopConfig`)."""
    from curate.stopping import AllOf, AnyOf, LabelBudget, MaxRounds, MoneyBudget, Plateau, StablePredictions

    s = config.stop
    criteria = []
    if s.rounds is not None:
        criteria.append(MaxRounds(s.rounds))
    if s.plateau_window is not None:
        criteria.append(Plateau(s.plateau_window, s.plateau_min_gain))
    if s.stable_kappa is not None:
        criteria.append(StablePredictions(s.stable_kappa, s.stable_window))
    if not criteria:
        criteria.append(MaxRounds(10**9))
    rule = AnyOf(criteria) if s.combine == "any" else AllOf(criteria)
    budgets = [c for c in (LabelBudget(s.labels) if s.labels is not None else None,
                           MoneyBudget(s.money) if s.money is not None else None) if c is not None]
    return AnyOf([rule, *budgets]) if budgets else rule


def build_loop(config: RunConfig, run_dir: str | Path):
    """Everything a run needs, from its config: pool, embeddings, index, learner, annotator, loop."""
    from curate.acquire import make_strategy
    from curate.backends import load_backend
    from curate.embed import load_embedder
    from curate.index import EmbeddingIndex
    from curate.learners import EmbeddingClassifier
    from curate.ledger import Ledger
    from curate.loop import ActiveLoop
    from curate.pool import load_pool

    if len(config.labels) < 2:
        raise ConfigError(f"'labels' must list at least two classes. Got {config.labels} instead.")
    pc = config.pool
    pool = load_pool(pc.path, columns=pc.columns, id_column=pc.id_column, format=pc.format, split=pc.split)
    embedder = load_embedder(config.embedder)
    texts = pool.texts()
    vectors = embedder.encode(texts)
    index = EmbeddingIndex.from_vectors(vectors, pool.ids, model=embedder.name, kind=config.index.kind)
    if config.learner.kind != "logreg":
        raise ConfigError(f"learner.kind '{config.learner.kind}' is not known here; use 'logreg'.")
    learner = EmbeddingClassifier(index.vectors, config.labels, C=config.learner.C)
    evaluate = None
    if config.eval is not None:
        ec = config.eval
        test = load_pool(ec.path, columns=ec.columns, id_column=ec.id_column, format=ec.format, split=ec.split,
                         require=("text", "label"))
        test_x = embedder.encode(test.texts())
        test_y = np.array([str(v) for v in test.column("label")])

        def evaluate(model) -> float:
            pred = np.array([str(model.classes[i]) for i in model.predict_proba_vectors(test_x).argmax(1)])
            return float((pred == test_y).mean())

    backend_cache: dict[str, Any] = {}

    def backend_factory():
        if "lm" not in backend_cache:
            kwargs = {"device": config.lm.device} if config.lm.backend != "openai" else {}
            if config.lm.base_url:
                kwargs["base_url"] = config.lm.base_url
            backend_cache["lm"] = load_backend(config.lm.backend, config.lm.model, **kwargs)
        return backend_cache["lm"]

    annotator = build_annotator(config, pool, index, backend_factory)
    params = dict(config.acquire.params)
    if config.acquire.strategy in ("ask_llm", "select_llm", "ifd"):
        params.setdefault("backend", backend_factory())
    strategy = make_strategy(config.acquire.strategy, **params)
    init = make_strategy(config.init.strategy, **config.init.params)
    stop_set = None
    if config.stop.stable_kappa is not None:
        rng = np.random.default_rng([config.seed, 10**6])
        stop_set = np.sort(rng.choice(len(pool), size=min(config.stop.stop_set_size, len(pool)), replace=False))
    ledger = Ledger(_prices(config), budget=config.stop.money)
    generators = [] if config.generate is None else [build_generation(config, texts, index, embedder, backend_factory())]
    loop = ActiveLoop(pool, strategy=strategy, annotator=annotator, learner=learner, run_dir=run_dir, index=index,
                      init=init, init_size=config.init.size, batch_size=config.acquire.batch_size,
                      stopping=stopping_rule(config), ledger=ledger, label_budget=config.stop.labels, evaluate=evaluate,
                      stop_set=stop_set, seed=config.seed, generators=generators)
    return loop, annotator


def build_generation(config: RunConfig, pool_texts: list[str], index, embedder, backend):
    """The recipe's ``generate`` block as a :class:`~curate.generate.GenerationQuery` on the run's
    LM, deduplicating against the pool (``pool_texts``, and the shared index)."""
    from curate.generate import GenerationQuery, Generator, standard_filters, worst_case_tokens

    g = config.generate
    filters = standard_filters(backend, embedder, labels=config.labels if g.kind == "labelled" else None,
                               pool_texts=pool_texts, index=index, min_chars=g.min_chars, max_chars=g.max_chars,
                               dup_threshold=g.dup_threshold, label_threshold=g.label_threshold,
                               judge_threshold=g.judge_threshold)
    generator = Generator(backend, temperature=g.temperature, max_new_tokens=g.max_new_tokens)
    common = dict(filters=filters, embedder=embedder, per_round=g.per_round, every=g.every, first_round=g.first_round,
                  label=g.label, max_candidates=g.max_candidates, batch_size=g.batch_size,
                  worst_case_tokens=worst_case_tokens(filters, g.max_new_tokens))
    if g.kind == "coverage":
        return GenerationQuery.coverage(generator, task=g.task, **common)
    if not g.task:
        raise ConfigError("generate.task is empty: say what the examples are (e.g. 'movie review sentiment').")
    return GenerationQuery.labelled(generator, task=g.task, labels=config.labels, **common)


def _write_metadata(config: RunConfig, run_dir: Path) -> None:
    from curate.env import environment_report

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    (run_dir / "versions.json").write_text(json.dumps(environment_report(), indent=2))


def start_run(config: RunConfig, run_dir: str | Path, *, dry_run: bool = False):
    run_dir = Path(run_dir)
    if (run_dir / "journal.sqlite").exists() and not dry_run:
        raise ConfigError(f"{run_dir} already holds a run; continue it with `curate resume {run_dir}`, "
                          "or choose a new --out folder.")
    loop, annotator = build_loop(config, run_dir)
    estimate = estimate_cost(config, len(loop.pool), annotator, loop.generators)
    if dry_run:
        return None, estimate
    _write_metadata(config, run_dir)
    return _finish(loop), estimate


def resume_run(run_dir: str | Path):
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml). Start one with `curate run RECIPE`.")
    config = from_dict(RunConfig, yaml.safe_load(path.read_text()))
    loop, _ = build_loop(config, run_dir)
    return _finish(loop)


def _finish(loop):
    result = loop.run()
    write_curve(result.curve, loop.run_dir, currency=loop.ledger.prices.currency)
    if loop.generators:
        write_generated(loop.run_dir)
    return result


def write_generated(run_dir: Path) -> Path:
    """``generated.jsonl``: every row generation added to the pool, with the label it was written
    for, the label it got (if bought or kept) and the round; the journal is the source of truth."""
    from curate.journal import Journal

    journal = Journal(Path(run_dir) / "journal.sqlite")
    try:
        labels = {r["item_id"]: r for r in journal.label_rows()}
        rows = [{"id": g["item_id"], **g["row"], "intended_label": g["label"],
                 "label": labels.get(g["item_id"], {}).get("label"), "label_source": labels.get(g["item_id"], {}).get("source"),
                 "round": g["round"], "source": g["source"]} for g in journal.generated()]
    finally:
        journal.close()
    path = Path(run_dir) / "generated.jsonl"
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    return path


def generation_summary(run_dir: Path) -> str | None:
    """One line per generating round (accepted / written, what each filter rejected), or None."""
    from curate.journal import Journal

    journal = Journal(Path(run_dir) / "journal.sqlite")
    try:
        reports = journal.generation_reports()
    finally:
        journal.close()
    if not reports:
        return None
    lines = []
    for round_no, _query, m in reports:
        rejected = ", ".join(f"{f} {n}/{m['seen'].get(f, 0)}" for f, n in m["rejected"].items()) or "none"
        lines.append(f"  round {round_no}: {m['accepted']} accepted of {m['generated']} written "
                     f"(rejected: {rejected}); {m['stop_reason']}")
    return "Generation:\n" + "\n".join(lines)


def write_curve(curve: list[dict], run_dir: Path, *, currency: str = "USD") -> None:
    """``curve.csv`` always; ``curve.png`` (metric vs labels and vs money) when there is a metric."""
    with open(run_dir / "curve.csv", "w", newline="") as handle:
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
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Learning curve: {run_dir.name}")
    fig.tight_layout()
    fig.savefig(run_dir / "curve.png", dpi=100)
    plt.close(fig)
