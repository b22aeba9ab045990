"""Active SFT through the loop engine: choose prompts by the model's own uncertainty, buy their
responses (gold, a recorded or live teacher, people), let the model answer the easy rest itself,
and fine-tune with TRL's ``SFTTrainer`` each round.

A run folder holds ``config.yaml``, the loop's ``journal.sqlite`` (every bought response, its cost
and round), ``model/round-<n>`` (the latest trained model, a plain folder any backend loads),
``curve.csv``/``curve.png`` (held-out log-likelihood against labels and money) and, at the end,
``responses.jsonl`` (the curated rows with provenance, TRL's format; ``responses.test.jsonl``, the
eval pairs; ``README.md``, the dataset card: :func:`curate.export.save_run_data`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from curate.build import (
    annotator_from,
    available_for,
    index_for,
    ledger_from,
    loop_from,
    stopping_from,
    strategy_from,
    teacher_from,
)
from curate.errors import ConfigError
from curate.runs import Built, RunFolder

from .config import SFTConfig

__all__ = ["ALIASES", "build", "heldout_loglik", "sft_strategy"]

logger = logging.getLogger(__name__)

# An SFT recipe's short names for the response learner's own uncertainty (curate.responses).
ALIASES = {"entropy": "answer_entropy", "perplexity": "answer_perplexity", "semantic": "answer_semantic",
           "loss": "answer_loss", "ifd": "answer_ifd"}


def heldout_loglik(learner, prompts: list[str], responses: list[str]) -> float:
    """Mean per-token log-likelihood (nats) of held-out responses under the learner's current model;
    higher is better (its exp(-x) is the held-out perplexity)."""
    rendered = [learner.render(p) for p in prompts]
    runs = learner.backend().completion_logprobs(rendered, responses)
    total = sum(float(r.logprobs.sum()) for r in runs)
    tokens = sum(len(r.logprobs) for r in runs)
    return total / max(tokens, 1)


def sft_strategy(name: str, learner, *, index=None, params: dict | None = None, seed: int = 0, batch_size: int = 16):
    """A strategy for a response learner, from the one registry: the model's own uncertainty
    (``entropy``, ``perplexity``, ``semantic``, ``loss``, ``ifd``: ``answer_*``) or any strategy whose
    needs a response learner meets (random, kcenter, kmeans, votek); refused, naming those, otherwise."""
    from curate.acquire.registry import StrategyContext

    context = StrategyContext(learner=learner, index=index, seed=seed, batch_size=batch_size)
    return strategy_from(name, params, context=context, available=available_for(learner, index=index),
                         aliases=ALIASES, who="an SFT run")


def _params(config: SFTConfig) -> dict:
    a = config.acquire
    spec_name = ALIASES.get(a.strategy, a.strategy)
    if not spec_name.startswith("answer_"):
        return dict(a.params)
    return {"sample": a.sample, "samples": a.samples, "density_beta": a.density_beta, **a.params}


def build(config: SFTConfig, folder: RunFolder, *, evaluate: bool = True) -> Built:
    """Pool -> prompt index -> learner -> strategies (checked before round 0) -> annotator ->
    held-out evaluation -> loop; after it, the curated data and the summary."""
    from curate.embed import load_embedder
    from curate.models import resolve_lm
    from curate.pool import load_pool
    from curate.responses import ResponseLearner

    run_dir = folder.path
    pc = config.pool
    pool = load_pool(pc.path, columns=pc.columns, id_column=pc.id_column, format=pc.format, split=pc.split,
                     require=("prompt",))
    index = index_for([str(p) for p in pool.column("prompt")], load_embedder(config.embedder), pool.ids)
    learner = ResponseLearner(pool, resolve_lm(config.model), run_dir=run_dir, restart=config.restart, lora=config.lora,
                              train=config.train, chat=config.chat, system=config.system,
                              max_length=config.max_length, max_new_tokens=config.max_new_tokens,
                              self_training=config.self_training, device=config.device, seed=config.seed)
    strategy = sft_strategy(config.acquire.strategy, learner, index=index, params=_params(config), seed=config.seed,
                            batch_size=config.acquire.batch_size)
    init = sft_strategy(config.init.strategy, learner, index=index, params=config.init.params, seed=config.seed)
    a = config.annotator
    if a.kind in ("gold", "recorded") and a.column not in pool.columns:
        raise ConfigError(f"annotator.column '{a.column}' is not a column of the pool ({', '.join(pool.columns)}).")
    annotator = annotator_from(a, labels=None, machine_kinds=("recorded", "teacher"), machine=lambda: teacher_from(
        a.kind, pool, lm=a.lm, column=a.column, executor=config.executor, tokenizer=config.model, chat=config.chat, system=config.system,
        max_new_tokens=a.max_new_tokens, max_input_tokens=a.max_input_tokens))
    loop = loop_from(pool, strategy=strategy, init=init, annotator=annotator, learner=learner, run_dir=run_dir,
                     index=index, init_size=config.init.size, batch_size=config.acquire.batch_size,
                     stopping=stopping_from(config.stop), ledger=ledger_from(config.prices, config.stop.money),
                     label_budget=config.stop.labels, evaluate=_loglik(config) if evaluate else None, seed=config.seed)

    def data():
        """Bought responses (journal) and self-training rows, in the recipe's TRL format."""
        from curate.journal import Journal
        from curate.responses import response_dataset

        journal = Journal.of(run_dir)
        try:
            learner.restore(journal.labels())
        finally:
            journal.close()
        return response_dataset(loop.pool, run_dir, pseudo=learner.records(), format=config.export,
                                system_prompt=config.system)

    def save(rows, path: Path | None) -> Path:
        """``responses.jsonl`` (train), the eval pairs in the same format (``responses.test.jsonl``)
        and the dataset card: :func:`curate.export.save_run_data`'s convention."""
        from datasets import Dataset

        from curate.export import save_run_data, to_trl

        test = None
        if config.eval is not None:
            ec = config.eval
            held = load_pool(ec.path, columns=ec.columns, id_column=ec.id_column, format=ec.format, split=ec.split,
                             require=("prompt", "response"))
            pairs = {"id": [int(i) for i in held.ids], "prompt": [str(p) for p in held.column("prompt")],
                     "response": [str(r) for r in held.column("response")]}
            test = to_trl(Dataset.from_dict(pairs), config.export, system_prompt=config.system)
        a = config.acquire
        return save_run_data(rows, path or run_dir / "responses.jsonl", test=test, run_dir=run_dir, paradigm="sft",
                             what="responses", strategy=f"{config.init.strategy} (round 0), then {a.strategy}",
                             budget={"money": config.stop.money, "labels": config.stop.labels,
                                     "rounds": config.stop.rounds}, currency=config.prices.currency)

    def export(path: Path | None) -> Path:
        return save(data(), path)

    def finish(result) -> dict[str, Any]:
        out: dict[str, Any] = {"spent": loop.ledger.spent, "model": learner.current_, "pseudo": len(learner.pseudo_),
                               "rounds": learner.history_}
        if result.labels:
            rows = data()
            out["data"] = str(save(rows, None))
            out["rows"] = len(rows)
        logger.info("sft run %s: %s; %d labels, %d pseudo; model %s", run_dir, result.stop_reason, len(result.labels),
                    len(learner.pseudo_), learner.current_)
        return out

    return Built(loop, config.stop.rounds, metric="held-out mean log-likelihood (nats/token)", finish=finish, export=export)


def _loglik(config: SFTConfig):
    """``learner -> held-out log-likelihood per token`` on the eval pairs, or None without them."""
    if config.eval is None:
        return None
    from curate.pool import load_pool

    ec = config.eval
    test = load_pool(ec.path, columns=ec.columns, id_column=ec.id_column, format=ec.format, split=ec.split,
                     require=("prompt", "response"))
    n = len(test) if config.eval_limit is None else min(config.eval_limit, len(test))
    rows = test.select(np.arange(n))
    prompts, responses = [str(p) for p in rows["prompt"]], [str(r) for r in rows["response"]]
    return lambda learner: heldout_loglik(learner, prompts, responses)
