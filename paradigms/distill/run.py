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

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from curate.config import to_dict
from curate.errors import ConfigError

from .config import DistillConfig

__all__ = ["DistillRun", "build_distill", "evaluate_student", "start_distill", "worst_case"]

logger = logging.getLogger(__name__)

_CONFIG = "distill.yaml"


@dataclass
class DistillRun:
    loop: Any
    pool: Any
    learner: Any
    annotator: Any
    probe: Any
    config: DistillConfig
    run_dir: Path


def _teacher_backend(config: DistillConfig):
    from curate.backends import load_backend
    from curate.models import resolve_lm

    t = config.teacher
    kwargs: dict[str, Any] = {}
    if t.kind != "openai":
        kwargs["device"] = t.device
    if t.base_url:
        kwargs["base_url"] = t.base_url
    return load_backend(t.kind, resolve_lm(t.model) if t.kind == "hf" else t.model, **kwargs)


def _strategy(config: DistillConfig, learner, teacher, run_dir: Path, index, embedder):
    """The round strategy and, for the probe, the part that pays while selecting."""
    from curate.acquire import Random, TopK, TopThenDiverse
    from curate.acquire.diversity import KCenterGreedy
    from curate.responses import AnswerUncertainty

    a, seed = config.acquire, config.seed
    m = a.diverse_m or 4 * a.batch_size
    if a.strategy == "random":
        return Random(allow_fewer=True), None
    if a.strategy == "kcenter":
        return KCenterGreedy(), None
    if a.strategy in ("probe", "probe_kcenter"):
        from .probe import TeacherProbe

        probe = TeacherProbe(learner, teacher, tokens=a.probe_tokens, sample=a.sample, chat=config.teacher.chat,
                             system=config.teacher.system,
                             max_input_tokens=a.probe_max_input_tokens or config.teacher.max_input_tokens,
                             seed=seed, cache=run_dir / "probes.json")
        return (TopK(probe, allow_fewer=True) if a.strategy == "probe" else TopThenDiverse(probe, m)), probe
    measure = {"entropy_kcenter": "entropy"}.get(a.strategy, a.strategy)
    scorer = AnswerUncertainty(learner, measure, samples=a.samples, embedder=embedder, sample=a.sample, seed=seed)
    return (TopThenDiverse(scorer, m) if a.strategy.endswith("_kcenter") else TopK(scorer, allow_fewer=True)), None


def build_distill(config: DistillConfig, run_dir: str | Path) -> DistillRun:
    from curate.acquire import Random
    from curate.ledger import Ledger, Prices
    from curate.loop import ActiveLoop
    from curate.models import resolve_lm
    from curate.responses import RecordedTeacher, TeacherAnnotator
    from curate.stopping import MaxRounds

    from .data import load_prompt_pool
    from .learner import student_learner

    run_dir = Path(run_dir)
    pc = config.pool
    pool = load_prompt_pool(pc.path, pc.format, columns=pc.columns, offset=pc.offset, limit=pc.limit)
    student = resolve_lm(config.student.model)
    t = config.teacher
    if t.kind == "recorded":
        if t.column not in pool.columns:
            raise ConfigError(f"teacher.column '{t.column}' is not a column of the pool; it has {pool.columns}.")
        annotator = RecordedTeacher(t.column, tokenizer=resolve_lm(t.tokenizer) if t.tokenizer else student).prepare(pool)
        probe_teacher = annotator
    else:
        probe_teacher = _teacher_backend(config)
        annotator = TeacherAnnotator(probe_teacher, chat=t.chat, system=t.system, max_new_tokens=t.max_new_tokens,
                                     max_input_tokens=t.max_input_tokens)
    s = config.student
    learner = student_learner(pool, student, run_dir=run_dir, mode=s.mode,
                              teacher=resolve_lm(t.model) if s.mode == "token" else None, method=s.method,
                              restart=s.restart, lora=s.lora or None, train=s.train, chat=s.chat, system=s.system,
                              max_length=s.max_length, max_new_tokens=s.max_new_tokens,
                              self_training=s.self_training, device=s.device, seed=config.seed)
    a = config.acquire
    index = embedder = None
    if a.init == "kcenter" or "kcenter" in a.strategy or a.strategy == "semantic":
        from curate.embed import load_embedder
        from curate.index import EmbeddingIndex

        embedder = load_embedder(config.embedder)
        if a.init == "kcenter" or "kcenter" in a.strategy:
            index = EmbeddingIndex.from_vectors(embedder.encode(list(pool.column("prompt"))), pool.ids,
                                                model=embedder.name)
    strategy, probe = _strategy(config, learner, probe_teacher, run_dir, index, embedder)
    if a.init == "kcenter":
        from curate.acquire.diversity import KCenterGreedy

        init = KCenterGreedy()
    else:
        init = Random(allow_fewer=True)
    prices = Prices(**to_dict(config.prices))
    evaluate = None
    ev = config.eval
    if ev is not None and ev.every_round and ev.loss_size:
        rows = _eval_rows(config)

        def evaluate(model):
            return evaluate_student(model, rows, loss_size=ev.loss_size, accuracy_size=0)["loss"]

    loop = ActiveLoop(pool, strategy=strategy, annotator=annotator, learner=learner, run_dir=run_dir, index=index,
                      init=init, init_size=a.init_size, batch_size=a.batch_size,
                      stopping=MaxRounds(config.stop.rounds or 10**9), ledger=Ledger(prices, budget=config.stop.money),
                      evaluate=evaluate, seed=config.seed, probes=[probe] if probe is not None else [])
    return DistillRun(loop, pool, learner, annotator, probe, config, run_dir)


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


def worst_case(run: DistillRun) -> float:
    """The most the run can spend: the money budget, or every round's worst case without one."""
    loop, prices = run.loop, run.loop.ledger.prices
    if loop.ledger.budget is not None:
        return loop.ledger.budget
    rounds = run.config.stop.rounds
    if rounds is None:
        return float("inf")
    per = (max(loop.annotator.item_micros(run.pool, run.pool.ids, prices)) if hasattr(loop.annotator, "item_micros")
           else loop.annotator.worst_case_micros(prices))
    probe = run.probe.worst_case_micros(prices) if run.probe is not None else 0
    total = loop.init_size * per + (rounds - 1) * (loop.batch_size * per + probe)
    return total / 1e6


def start_distill(config: DistillConfig, out: str | Path, *, dry_run: bool = False, evaluate: bool = True) -> dict:
    """Run (or resume) a distillation recipe into ``out``; returns a summary (also ``summary.json``)."""
    from curate.export import save_dataset
    from curate.responses import response_dataset

    out = Path(out)
    run = build_distill(config, out)
    summary: dict[str, Any] = {"run_dir": str(out), "worst_case": worst_case(run), "currency": config.prices.currency}
    if dry_run:  # nothing is written
        return summary
    out.mkdir(parents=True, exist_ok=True)
    saved = out / _CONFIG
    resolved = yaml.safe_dump(to_dict(config), sort_keys=False)
    if saved.exists() and saved.read_text() != resolved:
        logger.warning("%s was written by another recipe or overrides; continuing with the new one", saved)
    saved.write_text(resolved)
    result = run.loop.run()
    data_path = out / "distilled.jsonl"
    if result.labels:
        save_dataset(response_dataset(run.pool, out, pseudo=run.learner.records()), data_path)
    summary.update(stop_reason=result.stop_reason, ledger=result.ledger.totals(), curve=result.curve,
                   responses=len(result.labels), probes=len(run.probe.paid_) if run.probe is not None else 0,
                   data=str(data_path) if result.labels else None, student=run.learner.current_,
                   rounds=run.learner.history_)
    ev = config.eval
    if evaluate and ev is not None and (ev.loss_size or ev.accuracy_size):
        summary["eval"] = evaluate_student(run.learner, _eval_rows(config), loss_size=ev.loss_size,
                                           accuracy_size=ev.accuracy_size, max_new_tokens=ev.max_new_tokens)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
