"""``curate prefs run`` / ``resume``: an active preference loop from a :class:`PrefsConfig`.

The steps, in order: the pair pool (read, or sampled from the policy once and saved in the run
folder so that a resumed run sees the same pairs) -> prompt embeddings and the shared index ->
the learner (reward model on embeddings, DPO, or TRL reward model) -> the annotator (gold, judge,
people, hybrid) -> strategies -> :class:`curate.loop.ActiveLoop` -> the labelled pairs exported as
``prompt``/``chosen``/``rejected`` with provenance, and the learning curve.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from curate.config import to_dict
from curate.errors import ConfigError

from .config import PrefsConfig, load_prefs_config
from .pairs import LABELS

__all__ = ["PrefsRun", "build_prefs_loop", "export_run", "resume_prefs", "start_prefs"]

logger = logging.getLogger(__name__)

_CONFIG = "prefs.yaml"
_PAIRS = "pairs.jsonl"


@dataclass
class PrefsRun:
    loop: Any
    pool: Any
    learner: Any
    annotator: Any
    config: PrefsConfig


def _backend_factory(config: PrefsConfig):
    cache: dict[str, Any] = {}

    def make():
        if "lm" not in cache:
            from curate.backends import load_backend

            kwargs = {"device": config.lm.device} if config.lm.backend != "openai" else {}
            if config.lm.base_url:
                kwargs["base_url"] = config.lm.base_url
            cache["lm"] = load_backend(config.lm.backend, config.lm.model, **kwargs)
        return cache["lm"]

    return make


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
    from curate.annotate.base import GoldAnnotator

    a = config.annotator
    if a.kind == "gold" or (a.kind == "hybrid" and a.human == "gold"):
        if "label" not in pool.columns:
            raise ConfigError("annotator.kind 'gold' (or hybrid with human: gold) needs gold labels in the pool; "
                              "these pairs have none. Use annotator.kind judge, human or hybrid.")
        gold = GoldAnnotator("label", source="human")
        if a.kind == "gold":
            return gold
        human = gold
    if a.kind in ("human", "hybrid") and not (a.kind == "hybrid" and a.human == "gold"):
        from curate.annotate.human import HumanQueueAnnotator

        if not a.queue_dir:
            raise ConfigError(f"annotator.kind '{a.kind}' needs annotator.queue_dir (where pairs for people go).")
        human = HumanQueueAnnotator(a.queue_dir, labels=list(LABELS), fmt=a.queue_format)
        if a.kind == "human":
            return human
    from .judge import DEFAULT_INSTRUCTION, PairwiseJudge

    j = config.judge
    judge = PairwiseJudge(backend(), instruction=j.instruction or DEFAULT_INSTRUCTION, ties=j.ties,
                          tie_band=j.tie_band, consistent=j.consistent, chat=j.chat,
                          max_prompt_tokens=j.max_prompt_tokens, max_response_tokens=j.max_response_tokens,
                          batch_size=j.batch_size)
    if a.kind == "judge":
        return judge
    from curate.annotate.hybrid import HybridAnnotator

    return HybridAnnotator(judge, human, threshold=a.threshold)


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


def _stopping(config: PrefsConfig):
    from curate.stopping import AnyOf, LabelBudget, MaxRounds, MoneyBudget

    s = config.stop
    criteria = [c for c in (MaxRounds(s.rounds) if s.rounds is not None else None,
                            LabelBudget(s.labels) if s.labels is not None else None,
                            MoneyBudget(s.money) if s.money is not None else None) if c is not None]
    if not criteria:
        raise ConfigError("stop needs at least one of rounds, labels or money.")
    return AnyOf(criteria)


def build_prefs_loop(config: PrefsConfig, run_dir: str | Path) -> PrefsRun:
    from curate.embed import load_embedder
    from curate.index import EmbeddingIndex
    from curate.ledger import Ledger, Prices
    from curate.loop import ActiveLoop

    from .reward import embed_pairs
    from .strategies import make_preference_strategy

    run_dir = Path(run_dir)
    backend = _backend_factory(config)
    pool = _pool(config, run_dir, backend)
    embedder = load_embedder(config.embedder)
    features = embed_pairs(pool, embedder)
    index = EmbeddingIndex.from_vectors(features[0], pool.ids, model=embedder.name)
    learner = _learner(config, pool, run_dir, features)
    annotator = _annotator(config, pool, backend)
    a = config.acquire
    strategy = make_preference_strategy(a.strategy, **a.params)
    init = make_preference_strategy(a.init)
    p = config.prices
    ledger = Ledger(Prices(p.human_per_label, p.llm_input_per_million, p.llm_output_per_million, p.currency),
                    budget=config.stop.money)
    loop = ActiveLoop(pool, strategy=strategy, annotator=annotator, learner=learner, run_dir=run_dir, index=index,
                      init=init, init_size=a.init_size, batch_size=a.batch_size, stopping=_stopping(config),
                      ledger=ledger, label_budget=config.stop.labels, evaluate=_evaluator(config, embedder),
                      extra_arrays=lambda model: model.arrays(), seed=config.seed)
    return PrefsRun(loop, pool, learner, annotator, config)


def export_run(run: PrefsRun) -> Path:
    """Write the labelled pairs (TRL preference format, with provenance) into the run folder."""
    from curate.export import save_dataset

    from .export import journal_provenance, preference_dataset

    labels, info = journal_provenance(run.loop.run_dir)
    margins = run.learner.margin() if labels else None
    data = preference_dataset(run.pool, labels, provenance=info, margins=margins)
    return save_dataset(data, run.loop.run_dir / run.config.export)


def _finish(run: PrefsRun):
    from curate.run import write_curve

    result = run.loop.run()
    write_curve(result.curve, run.loop.run_dir, currency=run.loop.ledger.prices.currency)
    return result, export_run(run)


def start_prefs(config: PrefsConfig, run_dir: str | Path, *, dry_run: bool = False):
    """Run a recipe in a new folder. Returns ``(result, export_path, worst_case_cost)``; with
    ``dry_run`` nothing is bought and result and path are None."""
    run_dir = Path(run_dir)
    if (run_dir / "journal.sqlite").exists() and not dry_run:
        raise ConfigError(f"{run_dir} already holds a run; continue it with `curate prefs resume {run_dir}`.")
    run = build_prefs_loop(config, run_dir)
    per_item = run.annotator.worst_case_micros(run.loop.ledger.prices) / 1e6
    planned = config.acquire.init_size + max(0, (config.stop.rounds or 1) - 1) * config.acquire.batch_size
    planned = min(planned, config.stop.labels or planned, len(run.pool))
    worst = planned * per_item
    if dry_run:
        return None, None, worst
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / _CONFIG).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    from curate.env import environment_report

    (run_dir / "versions.json").write_text(json.dumps(environment_report(), indent=2))
    result, path = _finish(run)
    return result, path, worst


def resume_prefs(run_dir: str | Path):
    run_dir = Path(run_dir)
    path = run_dir / _CONFIG
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a prefs run folder (no {_CONFIG}). Start one with `curate prefs run RECIPE`.")
    config = load_prefs_config(data=yaml.safe_load(path.read_text()))
    return _finish(build_prefs_loop(config, run_dir))
