"""``curate distill RECIPE``: uncertainty-driven distillation from a :class:`DistillConfig`.

The steps, in order: the prompt pool -> the teacher (recorded answers, or a live LM) as the loop's
annotator -> the student (:class:`~curate.responses.ResponseLearner`; sequence mode trains on the
teacher's answers with ``SFTTrainer``, token mode distils the teacher's distributions with TRL's
GKD / distillation trainer) -> the strategy (teacher probe, the student's own uncertainty,
diversity on the prompt index, random) -> :class:`curate.loop.ActiveLoop` with the money budget ->
the distilled data with provenance, and the student's held-out numbers.

Running the same recipe into the same folder again resumes the run (the loop's journal, the
student's ``state.json`` and the probe cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.build import (
    available_for,
    index_for,
    ledger_from,
    loop_from,
    stopping_from,
    strategy_from,
    teacher_from,
)
from curate.config import LMConfig
from curate.errors import ConfigError
from curate.runs import Built, RunFolder

from .config import DistillConfig

__all__ = ["ALIASES", "DistillRun", "SPECS", "build", "build_distill", "evaluate_student"]

logger = logging.getLogger(__name__)

# A distill recipe's short names for the student's own uncertainty (the registry's answer_*).
ALIASES = {"entropy": "answer_entropy", "perplexity": "answer_perplexity", "semantic": "answer_semantic",
           "entropy_kcenter": "answer_entropy_kcenter"}


@dataclass
class DistillRun:
    loop: Any
    pool: Any
    learner: Any
    annotator: Any
    probe: Any
    config: DistillConfig
    run_dir: Path


def _probe(ctx, *, diverse: bool = False, tokens: int = 8, sample: int | None = 64, chat: bool = True,
           system: str | None = None, max_input_tokens: int = 1024, m: int | None = None):
    """The teacher probe (:class:`~.probe.TeacherProbe`): how little the student expects the opening
    of the teacher's answer; paid while selecting, from the round's purse."""
    from curate.acquire import TopK, TopThenDiverse

    from .probe import TeacherProbe

    probe = TeacherProbe(ctx.learner, ctx.teacher, tokens=tokens, sample=sample, chat=chat, system=system,
                         max_input_tokens=max_input_tokens, seed=ctx.seed,
                         cache=None if ctx.run_dir is None else Path(ctx.run_dir) / "probes.json")
    if diverse:
        return TopThenDiverse(probe, m if m is not None else 4 * (ctx.batch_size or 16))
    return TopK(probe, allow_fewer=True)


def _specs():
    from curate.acquire.registry import StrategySpec

    needs = frozenset({"responses", "teacher"})
    return (StrategySpec("probe", _probe, needs, "the student's surprise at the teacher's first tokens (paid)",
                         owner="distill"),
            StrategySpec("probe_kcenter", lambda ctx, **p: _probe(ctx, diverse=True, **p), needs | {"index"},
                         "the probe's top prompts, spread out by k-center", owner="distill"))


SPECS = _specs()


def _strategy(config: DistillConfig, name: str, learner, teacher, run_dir: Path, index, embedder):
    from curate.acquire.registry import REGISTRY, StrategyContext

    REGISTRY.add_all(SPECS)  # as the plugin loader does; adding them again changes nothing
    a, t = config.acquire, config.teacher
    resolved = ALIASES.get(name, name)
    params: dict[str, Any] = {}
    if resolved.startswith("probe"):
        params = dict(tokens=a.probe_tokens, sample=a.sample, chat=t.chat, system=t.system,
                      max_input_tokens=a.probe_max_input_tokens or t.max_input_tokens)
    elif resolved.startswith("answer_"):
        params = dict(sample=a.sample, samples=a.samples)
    if resolved.endswith("_kcenter") and a.diverse_m is not None:
        params["m"] = a.diverse_m
    context = StrategyContext(learner=learner, teacher=teacher, embedder=embedder, index=index, seed=config.seed,
                              run_dir=run_dir, batch_size=a.batch_size)
    return strategy_from(name, params, context=context, aliases=ALIASES, who="a distillation run",
                         available=available_for(learner, index=index, teacher=True))


def build_distill(config: DistillConfig, run_dir: str | Path, *, evaluate: bool = True) -> DistillRun:
    """Prompts -> teacher (the loop's annotator) -> student -> index (when a strategy spreads
    prompts) -> strategies (checked before round 0) -> loop with the money budget."""
    from curate.models import resolve_lm

    from .data import load_prompt_pool
    from .learner import student_learner

    run_dir = Path(run_dir)
    pc = config.pool
    pool = load_prompt_pool(pc.path, pc.format, columns=pc.columns, offset=pc.offset, limit=pc.limit)
    student = resolve_lm(config.student.model)
    t = config.teacher
    live = None if t.kind == "recorded" else LMConfig(backend=t.kind, model=resolve_lm(t.model) if t.kind == "hf"
                                                         else t.model, device=t.device, base_url=t.base_url)
    annotator = teacher_from(t.kind, pool, lm=live, column=t.column, executor=config.executor,
                             tokenizer=resolve_lm(t.tokenizer) if t.tokenizer else student, chat=t.chat,
                             system=t.system, max_new_tokens=t.max_new_tokens, max_input_tokens=t.max_input_tokens)
    # The probe asks the same teacher: the recorded answers, or the live teacher's backend.
    probe_teacher = annotator if t.kind == "recorded" else annotator.backend
    s = config.student
    learner = student_learner(pool, student, run_dir=run_dir, mode=s.mode,
                              teacher=resolve_lm(t.model) if s.mode == "token" else None, method=s.method,
                              restart=s.restart, lora=s.lora or None, train=s.train, chat=s.chat, system=s.system,
                              max_length=s.max_length, max_new_tokens=s.max_new_tokens,
                              self_training=s.self_training, device=s.device, seed=config.seed)
    a = config.acquire
    names = (a.init, a.strategy)
    index = embedder = None
    if any("kcenter" in n or "semantic" in n for n in names):
        from curate.embed import load_embedder

        embedder = load_embedder(config.embedder)
        if any("kcenter" in n for n in names):
            index = index_for(list(pool.column("prompt")), embedder, pool.ids)
    strategy = _strategy(config, a.strategy, learner, probe_teacher, run_dir, index, embedder)
    init = _strategy(config, a.init, learner, probe_teacher, run_dir, index, embedder)
    probe = getattr(strategy, "scorer", None)
    probes = [probe] if callable(getattr(probe, "use_purse", None)) else []
    ev = config.eval
    every_round = None
    if evaluate and ev is not None and ev.every_round and ev.loss_size:
        rows = _eval_rows(config)

        def every_round(model):
            return evaluate_student(model, rows, loss_size=ev.loss_size, accuracy_size=0)["loss"]

    stopping = stopping_from(config.stop, higher_is_better=False)  # the metric is a held-out loss
    loop = loop_from(pool, strategy=strategy, init=init, annotator=annotator, learner=learner, run_dir=run_dir,
                     index=index, init_size=a.init_size, batch_size=a.batch_size, stopping=stopping,
                     ledger=ledger_from(config.prices, config.stop.money), label_budget=config.stop.labels,
                     evaluate=every_round, seed=config.seed, probes=probes)
    return DistillRun(loop, pool, learner, annotator, probes[0] if probes else None, config, run_dir)


def build(config: DistillConfig, folder: RunFolder, *, evaluate: bool = True) -> Built:
    run = build_distill(config, folder.path, evaluate=evaluate)

    def export(path: Path | None) -> Path:
        """``distilled.jsonl``: the teacher's bought answers (journal) and self-training rows; the eval
        set's reference answers as the test split (``distilled.test.jsonl``); the dataset card
        (:func:`curate.export.save_run_data`)."""
        from datasets import Dataset

        from curate.export import save_run_data, to_trl
        from curate.journal import Journal
        from curate.responses import response_dataset

        journal = Journal.of(folder.path)
        try:
            run.learner.restore(journal.labels())
        finally:
            journal.close()
        test = None
        if config.eval is not None:
            rows = _eval_rows(config)
            test = to_trl(Dataset.from_dict({"id": list(range(len(rows))), "prompt": [r["prompt"] for r in rows],
                                             "response": [r["response"] for r in rows]}), "messages")
        a = config.acquire
        return save_run_data(response_dataset(run.pool, folder.path, pseudo=run.learner.records()),
                             path or folder.path / "distilled.jsonl", test=test, run_dir=folder.path,
                             paradigm="distill", what="responses", strategy=f"{a.init} (round 0), then {a.strategy}",
                             budget={"money": config.stop.money, "labels": config.stop.labels,
                                     "rounds": config.stop.rounds}, currency=config.prices.currency)

    def finish(result) -> dict[str, Any]:
        data_path = folder.path / "distilled.jsonl"
        if result.labels:
            export(data_path)
        out: dict[str, Any] = {"currency": config.prices.currency, "responses": len(result.labels),
                               "probes": len(run.probe.paid_) if run.probe is not None else 0,
                               "data": str(data_path) if result.labels else None, "student": run.learner.current_,
                               "rounds": run.learner.history_}
        ev = config.eval
        if evaluate and ev is not None and (ev.loss_size or ev.accuracy_size):
            out["eval"] = evaluate_student(run.learner, _eval_rows(config), loss_size=ev.loss_size,
                                           accuracy_size=ev.accuracy_size, max_new_tokens=ev.max_new_tokens)
        return out

    return Built(run.loop, config.stop.rounds, metric="held-out mean NLL (nats/token)", finish=finish,
                 export=export)


def _eval_rows(config: DistillConfig) -> list[dict]:
    from .data import load_prompt_pool, read_gsm8k

    ev = config.eval
    if ev.format == "gsm8k":
        return read_gsm8k(ev.path, offset=ev.offset, limit=ev.limit)
    pool = load_prompt_pool(ev.path, ev.format, columns=ev.columns)
    if "response" not in pool.roles:
        raise ConfigError(f"The eval set needs a response role (reference answers); it has {pool.roles}.")
    finals = pool.column("final") if "final" in pool.columns else [None] * len(pool)
    return [{"prompt": str(p), "response": str(r), "final": f}
            for p, r, f in zip(pool.column("prompt"), pool.column("response"), finals, strict=True)]


def evaluate_student(learner, rows: list[dict], *, loss_size: int, accuracy_size: int,
                     max_new_tokens: int = 160) -> dict:
    """Held-out loss on the first ``loss_size`` reference answers and exact match of the final
    answer on the first ``accuracy_size`` questions, for the learner's current model."""
    from .data import exact_match, heldout_loss

    backend = learner.backend()
    out: dict[str, Any] = {"model": learner.current_}
    if loss_size:
        part = rows[:loss_size]
        out.update(heldout_loss(backend, [learner.render(r["prompt"]) for r in part], [r["response"] for r in part]))
    if accuracy_size:
        part = rows[:accuracy_size]
        if any(r.get("final") is None for r in part):
            raise ConfigError("Exact match needs a final answer for every eval row (GSM8K's '#### N').")
        em = exact_match(backend, [learner.render(r["prompt"]) for r in part], [r["final"] for r in part],
                         max_new_tokens=max_new_tokens)
        out.update({f"em_{k}" if k != "accuracy" else k: v for k, v in em.items()})
    return out
