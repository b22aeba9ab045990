"""Active SFT through the loop engine: choose prompts by the model's own uncertainty, buy their
responses (gold, a recorded or live teacher, people), let the model answer the easy rest itself,
and fine-tune with TRL's ``SFTTrainer`` each round.

A run folder holds ``config.yaml``, the loop's ``journal.sqlite`` (every bought response, its cost
and round), ``model/round-<n>`` (the latest trained model, a plain folder any backend loads),
``curve.csv``/``curve.png`` (held-out log-likelihood against labels and money) and, at the end,
``data/`` (the curated rows with provenance, ``datasets.load_from_disk`` or TRL as they are).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from curate.config import to_dict
from curate.errors import ConfigError

from .config import SFTConfig, from_dict

__all__ = ["build_sft_loop", "heldout_loglik", "resume_sft", "run_sft", "sft_strategy"]

logger = logging.getLogger(__name__)

UNCERTAINTY = ("entropy", "perplexity", "semantic", "loss", "ifd")
NEEDS_PROBS = ("least_confidence", "margin", "entropy_classes", "bald", "vote_entropy", "kl_disagreement", "badge",
               "density_entropy")


def heldout_loglik(learner, prompts: list[str], responses: list[str]) -> float:
    """Mean per-token log-likelihood (nats) of held-out responses under the learner's current model;
    higher is better (its exp(-x) is the held-out perplexity)."""
    rendered = [learner.render(p) for p in prompts]
    runs = learner.backend().completion_logprobs(rendered, responses)
    total = sum(float(r.logprobs.sum()) for r in runs)
    tokens = sum(len(r.logprobs) for r in runs)
    return total / max(tokens, 1)


def sft_strategy(name: str, learner, *, sample: int | None = 128, samples: int = 4,
                 density_beta: float | None = None, params: dict | None = None, seed: int = 0):
    """A strategy for a response learner: ``entropy``, ``perplexity``, ``semantic``, ``loss`` or ``ifd``
    (the model's own uncertainty, through :class:`~curate.responses.AnswerUncertainty`), or any
    ``curate.acquire`` strategy that needs no class probabilities (random, kcenter, kmeans, votek)."""
    from curate.acquire import make_strategy
    from curate.acquire.strategies import TopK
    from curate.acquire.wrappers import DensityWeighted
    from curate.responses import AnswerUncertainty

    params = dict(params or {})
    if name in UNCERTAINTY:
        scorer = AnswerUncertainty(learner, name, samples=samples, sample=sample, seed=seed, **params)
        if density_beta is not None:
            scorer = DensityWeighted(scorer, density_beta)
        return TopK(scorer)
    if name in NEEDS_PROBS:
        raise ConfigError(f"strategy '{name}' needs class probabilities, which a generative model does not give; "
                          f"use one of {', '.join(UNCERTAINTY)}, or random/kcenter/kmeans/votek.")
    return make_strategy(name, **params)


def _strategy(config: SFTConfig, learner):
    a = config.acquire
    return sft_strategy(a.strategy, learner, sample=a.sample, samples=a.samples, density_beta=a.density_beta,
                        params=a.params, seed=config.seed)


def _annotator(config: SFTConfig, pool):
    from curate.annotate.base import GoldAnnotator
    from curate.responses import RecordedTeacher, TeacherAnnotator

    a = config.annotator
    if a.kind in ("gold", "recorded") and a.column not in pool.columns:
        raise ConfigError(f"annotator.column '{a.column}' is not a column of the pool ({', '.join(pool.columns)}).")
    if a.kind == "gold":
        return GoldAnnotator(column=a.column, source="human")
    if a.kind == "recorded":
        return RecordedTeacher(a.column, tokenizer=config.model).prepare(pool)
    if a.kind == "teacher":
        from curate.backends import load_backend

        kwargs = {"device": a.lm.device} if a.lm.backend != "openai" else {}
        if a.lm.base_url:
            kwargs["base_url"] = a.lm.base_url
        return TeacherAnnotator(load_backend(a.lm.backend, a.lm.model, **kwargs), chat=config.chat,
                                system=config.system, max_new_tokens=a.max_new_tokens,
                                max_input_tokens=a.max_input_tokens)
    from curate.annotate.human import HumanQueueAnnotator

    if not a.queue_dir:
        raise ConfigError("annotator.kind 'human' needs annotator.queue_dir (where prompts are exported for people).")
    return HumanQueueAnnotator(a.queue_dir, labels=None, fmt=a.queue_format)


def build_sft_loop(config: SFTConfig, run_dir: str | Path):
    """Pool, index, learner, strategy, annotator and loop of an SFT recipe."""
    from curate.embed import load_embedder
    from curate.index import EmbeddingIndex
    from curate.ledger import Ledger, Prices
    from curate.loop import ActiveLoop
    from curate.models import resolve_lm
    from curate.pool import load_pool
    from curate.responses import ResponseLearner
    from curate.run import stopping_rule

    run_dir = Path(run_dir)
    pc = config.pool
    pool = load_pool(pc.path, columns=pc.columns, id_column=pc.id_column, format=pc.format, split=pc.split,
                     require=("prompt",))
    embedder = load_embedder(config.embedder)
    prompts = [str(p) for p in pool.column("prompt")]
    index = EmbeddingIndex.from_vectors(embedder.encode(prompts), pool.ids, model=embedder.name)
    model = resolve_lm(config.model)
    learner = ResponseLearner(pool, model, run_dir=run_dir, restart=config.restart, lora=config.lora,
                              train=config.train, chat=config.chat, system=config.system,
                              max_length=config.max_length, max_new_tokens=config.max_new_tokens,
                              self_training=config.self_training, device=config.device, seed=config.seed)
    evaluate = None
    if config.eval is not None:
        ec = config.eval
        test = load_pool(ec.path, columns=ec.columns, id_column=ec.id_column, format=ec.format, split=ec.split,
                         require=("prompt", "response"))
        n = len(test) if config.eval_limit is None else min(config.eval_limit, len(test))
        rows = test.select(np.arange(n))
        test_prompts, test_responses = [str(p) for p in rows["prompt"]], [str(r) for r in rows["response"]]

        def evaluate(model_learner) -> float:
            return heldout_loglik(model_learner, test_prompts, test_responses)

    p = config.prices
    ledger = Ledger(Prices(p.human_per_label, p.llm_input_per_million, p.llm_output_per_million, p.currency),
                    budget=config.stop.money)
    from curate.acquire import make_strategy

    loop = ActiveLoop(pool, strategy=_strategy(config, learner), annotator=_annotator(config, pool),
                      learner=learner, run_dir=run_dir, index=index,
                      init=make_strategy(config.init.strategy, **config.init.params), init_size=config.init.size,
                      batch_size=config.acquire.batch_size, stopping=stopping_rule(config), ledger=ledger,
                      label_budget=config.stop.labels, evaluate=evaluate, seed=config.seed)
    return loop, learner


def run_sft(config: SFTConfig, run_dir: str | Path):
    """Start a run in a new folder (an existing run is continued with :func:`resume_sft`)."""
    run_dir = Path(run_dir)
    if (run_dir / "journal.sqlite").exists():
        raise ConfigError(f"{run_dir} already holds a run; continue it with `curate sft resume {run_dir}`, "
                          "or choose a new --out folder.")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return _finish(config, run_dir)


def resume_sft(run_dir: str | Path):
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not an SFT run folder (no config.yaml). Start one with `curate sft run RECIPE`.")
    return _finish(from_dict(SFTConfig, yaml.safe_load(path.read_text())), run_dir)


def _finish(config: SFTConfig, run_dir: Path) -> dict[str, Any]:
    from curate.export import save_dataset
    from curate.responses import response_dataset
    from curate.run import write_curve

    loop, learner = build_sft_loop(config, run_dir)
    result = loop.run()
    write_curve(result.curve, run_dir, currency=loop.ledger.prices.currency)
    summary: dict[str, Any] = {"stop_reason": result.stop_reason, "labels": len(result.labels),
                               "spent": loop.ledger.spent, "model": learner.current_, "curve": result.curve,
                               "pseudo": len(learner.pseudo_), "rounds": learner.history_}
    if result.labels:
        data = response_dataset(loop.pool, run_dir, pseudo=learner.records(), format=config.export,
                                system_prompt=config.system)
        summary["data"] = str(save_dataset(data, run_dir / "data"))
        summary["rows"] = len(data)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    logger.info("sft run %s: %s; %d labels, %d pseudo; model %s", run_dir, result.stop_reason, len(result.labels),
                len(learner.pseudo_), learner.current_)
    return summary
