"""``curate prefs run`` / ``resume``: an active preference loop from a :class:`PrefsConfig`.

The steps, in order: the pair pool (read, or sampled from the policy once and saved in the run
folder so that a resumed run sees the same pairs) -> prompt embeddings and the shared index ->
the learner (reward model on embeddings, DPO, or TRL reward model) -> the annotator (gold, judge,
people, hybrid) -> strategies -> :class:`curate.loop.ActiveLoop` -> the labelled pairs exported as
``prompt``/``chosen``/``rejected`` with provenance, and the learning curve.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.build import LazyBackend, annotator_from, available_for, ledger_from, loop_from, stopping_from
from curate.errors import ConfigError
from curate.runs import Built, RunFolder

from .config import PrefsConfig
from .pairs import LABELS

__all__ = ["PrefsRun", "build", "build_prefs_loop", "export_run"]

logger = logging.getLogger(__name__)

_PAIRS = "pairs.jsonl"


@dataclass
class PrefsRun:
    loop: Any
    pool: Any
    learner: Any
    annotator: Any
    config: PrefsConfig


def _pool(config: PrefsConfig, run_dir: Path, backend):
    from .data import load_pair_pool

    saved = run_dir / _PAIRS
    if saved.exists():  # sampled candidates are frozen at the first invocation
        return load_pair_pool(saved)
    pc = config.pool
    if pc.format != "prompts":
        return load_pair_pool(pc.path, pc.format, seed=pc.seed, offset=pc.offset, limit=pc.limit)
    from curate.export import save_dataset
    from curate.pool import load_pool

    from .candidates import sample_pairs

    end = None if pc.limit is None else pc.offset + pc.limit
    prompts = list(load_pool(pc.path, require=("prompt",)).column("prompt"))[pc.offset:end]
    c = config.candidates
    pool = sample_pairs(backend(), prompts, n=c.n, temperature=c.temperature, top_p=c.top_p,
                        max_new_tokens=c.max_new_tokens, seed=config.seed, chat=c.chat, pairing=c.pairing)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_dataset(pool.dataset.remove_columns(["text", "id"]), saved)
    return pool


def _annotator(config: PrefsConfig, pool, backend):
    a = config.annotator
    if (a.kind == "gold" or (a.kind == "hybrid" and a.human == "gold")) and "label" not in pool.columns:
        raise ConfigError("annotator.kind 'gold' (or hybrid with human: gold) needs gold labels in the pool; "
                          "these pairs have none. Use annotator.kind judge, human or hybrid.")
    return annotator_from(a, labels=list(LABELS), machine=lambda: _judge(config, backend), machine_kinds=("judge",))


def _judge(config: PrefsConfig, backend):
    from .judge import DEFAULT_INSTRUCTION, PairwiseJudge

    j = config.judge
    return PairwiseJudge(backend(), instruction=j.instruction or DEFAULT_INSTRUCTION, ties=j.ties,
                         tie_band=j.tie_band, consistent=j.consistent, chat=j.chat,
                         max_prompt_tokens=j.max_prompt_tokens, max_response_tokens=j.max_response_tokens,
                         batch_size=j.batch_size)


def _learner(config: PrefsConfig, pool, run_dir: Path, features):
    lc = config.learner
    if lc.kind == "reward_model":
        from .reward import RewardModelLearner

        return RewardModelLearner(features[1], features[2], members=lc.members, C=lc.C, seed=config.seed)
    model = lc.model or config.lm.model
    if lc.kind == "dpo":
        from curate.models import resolve_lm

        from .dpo import DPOLearner

        return DPOLearner(pool, resolve_lm(model), run_dir=run_dir, beta=lc.beta, mode=lc.mode, lora=lc.lora or None,
                          train=lc.train, chat=lc.chat, device=config.lm.device)
    from curate.models import resolve_lm

    from .trl_reward import TRLRewardLearner

    return TRLRewardLearner(pool, resolve_lm(model), run_dir=run_dir, train=lc.train, lora=lc.lora or None,
                            chat=lc.chat)


def _evaluator(config: PrefsConfig, embedder):
    """``learner -> accuracy`` on the eval pairs (ties left out), or None."""
    if config.eval is None:
        return None
    from .data import load_pair_pool

    ec = config.eval
    test = load_pair_pool(ec.path, ec.format, seed=ec.seed, offset=ec.offset, limit=ec.limit)
    if "label" not in test.columns:
        raise ConfigError("eval pairs need gold labels (chosen/rejected, or a label column).")
    keep = np.array([i for i, v in enumerate(test.column("label")) if v in ("a", "b")], dtype=np.int64)
    rows = test.select(keep)
    gold_a = np.array([v == "a" for v in rows["label"]])
    cache: dict[str, Any] = {}

    def evaluate(learner) -> float:
        # s > 0: the learner prefers a; s == 0 (it cannot call the pair) counts as half right.
        if hasattr(learner, "prob_a"):
            if "features" not in cache:
                from .reward import embed_pairs

                cache["features"] = embed_pairs(test, embedder)
            _, fa, fb = cache["features"]
            s = learner.prob_a(fa[keep], fb[keep]) - 0.5
        elif hasattr(learner, "score_pairs"):
            s = learner.score_pairs(rows["prompt"], rows["response_a"], rows["response_b"])[0]
        else:
            s = learner.rewards(rows["prompt"], rows["response_a"]) - learner.rewards(rows["prompt"], rows["response_b"])
        return float(np.mean(np.where(s == 0, 0.5, (s > 0) == gold_a)))

    return evaluate


def build_prefs_loop(config: PrefsConfig, run_dir: str | Path, *, evaluate: bool = True) -> PrefsRun:
    """Pairs (read, or sampled from the policy once) -> prompt embeddings and index -> learner ->
    annotator -> strategies (checked against the learner's arrays) -> loop."""
    from curate.embed import load_embedder

    from .reward import embed_pairs
    from .strategies import make_preference_strategy

    run_dir = Path(run_dir)
    backend = LazyBackend(config.lm, config.executor)
    pool = _pool(config, run_dir, backend)
    embedder = load_embedder(config.embedder)
    features = embed_pairs(pool, embedder)
    index = _index(features[0], pool, embedder)
    learner = _learner(config, pool, run_dir, features)
    annotator = _annotator(config, pool, backend)
    a = config.acquire
    available = available_for(learner, index=index)
    strategy = make_preference_strategy(a.strategy, available=available, **a.params)
    init = make_preference_strategy(a.init, available=available)
    loop = loop_from(pool, strategy=strategy, init=init, annotator=annotator, learner=learner, run_dir=run_dir,
                     index=index, init_size=a.init_size, batch_size=a.batch_size, stopping=stopping_from(config.stop),
                     ledger=ledger_from(config.prices, config.stop.money), label_budget=config.stop.labels,
                     evaluate=_evaluator(config, embedder) if evaluate else None,
                     extra_arrays=lambda model: model.arrays(), seed=config.seed)
    return PrefsRun(loop, pool, learner, annotator, config)


def _index(prompt_vectors, pool, embedder):
    from curate.index import EmbeddingIndex

    return EmbeddingIndex.from_vectors(prompt_vectors, pool.ids, model=embedder.name)


def build(config: PrefsConfig, folder: RunFolder, *, evaluate: bool = True) -> Built:
    run = build_prefs_loop(config, folder.path, evaluate=evaluate)

    def export(out: Path | None) -> Path:
        """The labelled pairs, with margins of the learner refitted on the journal's labels (the
        learner holds no state until fitted), written by :func:`export_run`."""
        from .export import journal_provenance

        labels, _ = journal_provenance(folder.path)
        ids = sorted(labels)
        if ids:
            run.learner.fit(ids, [labels[i] for i in ids])
        return export_run(run, out)

    return Built(run.loop, config.stop.rounds, metric="held-out pair accuracy (gold ties left out)", export=export,
                 finish=lambda result: {"export": str(export_run(run))})


def export_run(run: PrefsRun, out: Path | None = None) -> Path:
    """Write the labelled pairs (TRL preference format, with provenance) into the run folder (or
    ``out``): the ``train`` split; the eval pairs (gold, ties left out) as the ``test`` split; the
    dataset card (:func:`curate.export.save_run_data`)."""
    from curate.export import save_run_data

    from .export import journal_provenance, preference_dataset

    labels, info = journal_provenance(run.loop.run_dir)
    margins = run.learner.margin() if labels else None
    data = preference_dataset(run.pool, labels, provenance=info, margins=margins)
    config = run.config
    test = None
    if config.eval is not None:
        from .data import load_pair_pool

        ec = config.eval
        held = load_pair_pool(ec.path, ec.format, seed=ec.seed, offset=ec.offset, limit=ec.limit)
        if "label" in held.columns:
            gold = {int(i): v for i, v in zip(held.ids.tolist(), held.column("label"), strict=True) if v is not None}
            test = preference_dataset(held, gold, provenance={i: {"judge": "gold"} for i in gold})
    a = config.acquire
    return save_run_data(data, out or run.loop.run_dir / config.export, test=test, run_dir=run.loop.run_dir,
                         paradigm="prefs", what="pairs", strategy=f"{a.init} (round 0), then {a.strategy}",
                         budget={"money": config.stop.money, "labels": config.stop.labels,
                                 "rounds": config.stop.rounds}, currency=config.prices.currency)
