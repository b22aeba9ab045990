"""The loop's learner when labels are responses: a causal LM fine-tuned each round with TRL's
``SFTTrainer``, which also answers the pool itself (for uncertainty and for self-training).

Round by round:

1. the loop hands :meth:`ResponseLearner.fit` every response bought so far (teacher, people, gold);
2. with self-training on, unlabelled prompts the *current* model answers confidently (uncertainty
   below a threshold) get that answer as a pseudo-response, at most a fixed share of the round;
3. the model is trained on the new rows (``restart="continue"``: from the last round's weights) or
   on everything so far (``restart="base"``: from the initial model), and saved to
   ``run_dir/model/round-<n>``; ``state.json`` beside it lets a crashed run resume without
   training twice.

Answers, samples and losses are cached per model folder: a strategy scoring the pool and the
self-training step of the same round share the same generations.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import ConfigError, DataError
from curate.pseudo import pseudo_cap
from curate.train import read_round_state, sft_rows, train_sft, write_json_atomic

__all__ = ["Answer", "ResponseLearner", "SelfTraining"]

logger = logging.getLogger(__name__)

RESTARTS = ("continue", "base")
MEASURES = ("entropy", "perplexity")


@dataclass(frozen=True)
class Answer:
    """The model's own (greedy) answer to a prompt and how sure it was of it."""

    text: str
    entropy: float      # mean next-token entropy over the answer (nats)
    perplexity: float   # exp of the answer's mean negative log-likelihood under the same model
    tokens: int
    finished: bool      # False when the answer ran into max_new_tokens

    def uncertainty(self, measure: str) -> float:
        return self.entropy if measure == "entropy" else self.perplexity


@dataclass(frozen=True)
class SelfTraining:
    """Pseudo-responses for the prompts the model already answers confidently.

    Args:
        threshold: an unlabelled prompt whose answer's uncertainty (``measure``) is below this gets
            the model's own answer as its response, marked ``pseudo`` in the data.
        max_fraction: pseudo rows make up at most this share of a round's training rows
            (0.25 = at most one pseudo row for every three bought ones).
        measure: ``"entropy"`` (mean token entropy, nats) or ``"perplexity"`` of the answer.
        candidates: at most this many unlabelled prompts are answered per round to find them
            (prompts a strategy already answered this round are reused first).
        require_finished: skip answers cut off by ``max_new_tokens``.
    """

    threshold: float
    max_fraction: float = 0.25
    measure: str = "entropy"
    candidates: int = 64
    require_finished: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and self.threshold > 0):
            raise ConfigError(f"self_training.threshold must be a positive number. Got {self.threshold!r} instead.")
        if not 0 <= self.max_fraction < 1:
            raise ConfigError(f"self_training.max_fraction must lie in [0, 1). Got {self.max_fraction!r} instead.")
        if self.measure not in MEASURES:
            raise ConfigError(f"self_training.measure must be one of {', '.join(MEASURES)}. Got {self.measure!r}.")
        if not (isinstance(self.candidates, int) and self.candidates >= 1):
            raise ConfigError(f"self_training.candidates must be an int >= 1. Got {self.candidates!r} instead.")

    def cap(self, bought: int) -> int:
        """The most pseudo rows allowed beside ``bought`` bought rows in one round."""
        return pseudo_cap(self.max_fraction, bought)


class ResponseLearner:
    """Fine-tunes a causal LM on bought responses, round by round, and answers prompts with it.

    Args:
        pool: the prompt pool (a ``prompt`` role; a ``response`` role is used only by scorers that
            ask for it, e.g. IFD).
        model: path or hub id of the initial model (saved folders work offline).
        run_dir: where each round's model goes (``model/round-<n>``) with ``state.json``.
        restart: ``"continue"`` (train the last round's model on the new rows) or ``"base"``
            (train the initial model on every row so far).
        lora: a ``peft.LoraConfig`` as a dict (e.g. ``{"r": 8, "lora_alpha": 16,
            "target_modules": "all-linear"}``); merged after each round. None = full fine-tuning.
        train: keyword arguments for ``trl.SFTConfig``, as they are (over CPU-friendly defaults).
        chat: prompts are user turns in the model's chat template (training, answering, scoring).
        system: an optional system prompt for every conversation.
        max_length: tokens per training row (prompt + response); longer rows are cut.
        max_new_tokens: the length of the model's own answers (uncertainty, self-training).
        self_training: a :class:`SelfTraining` rule, or None.
        device: ``"cpu"``, ``"cuda"``...; scoring: keyword arguments for the scoring backend.
        keep_rounds: keep every round's model folder (default: only the latest).
        seed: seeds the answers' sampling and the self-training candidates.
        trainer: what trains one round, called like :func:`curate.train.train_sft` (``start, rows,
            output_dir, *, lora, train, device, max_length`` -> metrics); default ``train_sft``. The
            distillation paradigm passes token-level distillation here.
    """

    classes = None  # responses, not classes: the loop gives strategies no class probabilities

    capabilities = frozenset({"responses", "add_rows"})

    def __init__(self, pool, model: str | Path, *, run_dir: str | Path, restart: str = "continue",
                 lora: Mapping[str, Any] | None = None, train: Mapping[str, Any] | None = None, chat: bool = True,
                 system: str | None = None, max_length: int = 512, max_new_tokens: int = 64,
                 self_training: SelfTraining | Mapping[str, Any] | None = None, device: str = "cpu",
                 scoring: Mapping[str, Any] | None = None, keep_rounds: bool = False, seed: int = 0,
                 trainer: Callable[..., dict] | None = None) -> None:
        if restart not in RESTARTS:
            raise ConfigError(f"The 'restart' parameter of ResponseLearner must be one of {', '.join(RESTARTS)}. "
                              f"Got {restart!r} instead.")
        if "prompt" not in getattr(pool, "roles", ()):
            raise ConfigError(f"ResponseLearner needs a pool with a 'prompt' role; this one has {getattr(pool, 'roles', None)}.")
        for name, value in (("max_length", max_length), ("max_new_tokens", max_new_tokens)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"The '{name}' parameter of ResponseLearner must be an int >= 1. Got {value!r} instead.")
        if isinstance(self_training, Mapping):
            self_training = SelfTraining(**self_training)
        self.pool = pool
        self.model = str(model)
        self.run_dir = Path(run_dir)
        self.restart = restart
        self.lora = dict(lora) if lora else None
        self.train = dict(train or {})
        self.chat = chat
        self.system = system
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.self_training = self_training
        self.device = device
        self.scoring = dict(scoring or {})
        self.keep_rounds = keep_rounds
        self.seed = seed
        self.trainer = trainer
        self.current_ = self.model            # the model the next round starts from / answers with
        self.trained_ids_: list[int] = []      # bought rows the current model has seen
        self.pseudo_: dict[int, dict] = {}     # id -> {"response", "round", "uncertainty"}
        self.rounds_ = 0
        self.history_: list[dict] = []
        self._restored = False
        self._backends: dict[str, Any] = {}
        self._answers: dict[str, dict[int, Answer]] = {}
        self._prompts: list[str] | None = None

    def add_rows(self, pool, vectors: np.ndarray) -> None:
        """The loop's pool grew (generated prompts): answer and score over the new pool."""
        if "prompt" not in pool.roles:
            raise ConfigError(f"ResponseLearner needs a pool with a 'prompt' role; the grown one has {pool.roles}.")
        self.pool = pool
        self._prompts = None  # answers are cached by id, and old ids keep their rows

    # ---------------------------------------------------------------- training

    def fit(self, ids: np.ndarray, labels: Sequence[Any]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != len(labels):
            raise ConfigError(f"fit got {len(ids)} ids but {len(labels)} responses.")
        bad = [int(i) for i, r in zip(ids.tolist(), labels, strict=True) if not isinstance(r, str) or not r.strip()]
        if bad:
            raise DataError(f"ResponseLearner: responses must be non-empty strings; items {bad[:5]} are not.")
        by_id = dict(zip(ids.tolist(), labels, strict=True))
        if not self._restored:
            self._restore(set(by_id))
            self._restored = True
        new = [i for i in by_id if i not in set(self.trained_ids_)]
        if not new:
            return
        # A bought response replaces a pseudo one for the same prompt.
        for i in new:
            self.pseudo_.pop(i, None)
        round_no = self.rounds_ + 1
        fresh_pseudo = self._pseudo_label(set(by_id), len(new), round_no)
        if self.restart == "continue":
            train_ids, pseudo_ids, start = new, fresh_pseudo, self.current_
        else:
            train_ids, pseudo_ids, start = sorted(by_id), sorted(self.pseudo_), self.model
        prompts = self.prompts(train_ids + pseudo_ids)
        responses = [by_id[i] for i in train_ids] + [self.pseudo_[i]["response"] for i in pseudo_ids]
        target = self.run_dir / "model" / f"round-{round_no}"
        target.parent.mkdir(parents=True, exist_ok=True)
        metrics = (self.trainer or train_sft)(start, sft_rows(prompts, responses, chat=self.chat, system=self.system), target,
                            lora=self.lora, train=self.train, device=self.device, max_length=self.max_length)
        previous = self.current_
        self.current_, self.rounds_ = str(target), round_no
        self.trained_ids_ = sorted(set(self.trained_ids_) | set(new)) if self.restart == "continue" else sorted(by_id)
        self.history_.append({"round": round_no, "bought": len(train_ids), "pseudo": len(pseudo_ids),
                              "new_pseudo": len(fresh_pseudo), **metrics})
        write_json_atomic(self._state_path(), {"model": self.current_, "trained_ids": self.trained_ids_,
                                               "pseudo": {str(k): v for k, v in self.pseudo_.items()},
                                               "rounds": self.rounds_, "history": self.history_})
        self._forget(previous)
        if not self.keep_rounds and previous != self.model and Path(previous).parent == target.parent:
            shutil.rmtree(previous, ignore_errors=True)
        logger.info("sft round %d: %d bought + %d pseudo row(s), loss %.4f, %.1fs -> %s", round_no, len(train_ids),
                    len(pseudo_ids), metrics["train_loss"], metrics["seconds"], target)

    def _pseudo_label(self, labelled: set[int], bought: int, round_no: int) -> list[int]:
        """Give confident unlabelled prompts the current model's answer (capped); returns their ids."""
        rule = self.self_training
        if rule is None or rule.cap(bought) == 0:
            return []
        open_ids = [i for i in range(len(self.pool)) if i not in labelled and i not in self.pseudo_]
        if not open_ids:
            return []
        cached = [i for i in open_ids if i in self._answers.get(self.current_, {})]
        rng = np.random.default_rng([self.seed, round_no, 7])
        rest = np.setdiff1d(np.asarray(open_ids, dtype=np.int64), np.asarray(cached, dtype=np.int64))
        extra = max(rule.candidates - len(cached), 0)
        sampled = rng.choice(rest, size=min(extra, len(rest)), replace=False).tolist() if extra and len(rest) else []
        candidates = (cached + sampled)[: max(rule.candidates, len(cached))]
        answers = self.answers(candidates)
        scored = [(a.uncertainty(rule.measure), i, a) for i, a in zip(candidates, answers, strict=True)
                  if a.text.strip() and (a.finished or not rule.require_finished)]
        confident = sorted(s for s in scored if s[0] < rule.threshold)[: rule.cap(bought)]
        for u, i, a in confident:
            # "round" is the loop round that bought this round's labels (training round n follows loop round n-1).
            self.pseudo_[int(i)] = {"response": a.text, "round": round_no - 1, "uncertainty": float(u)}
        logger.info("self-training: %d of %d answered prompt(s) under %s %.3g; %d taken (cap %d)",
                    len([s for s in scored if s[0] < rule.threshold]), len(scored), rule.measure, rule.threshold,
                    len(confident), rule.cap(bought))
        return sorted(int(i) for _, i, _ in confident)

    def _state_path(self) -> Path:
        return self.run_dir / "model" / "state.json"

    def restore(self, ids) -> None:
        """Adopt the saved round state of a run whose labelled ids are ``ids``, without training
        (an export reads the self-training rows this way)."""
        if not self._restored:
            self._restore({int(i) for i in ids})
            self._restored = True

    def _restore(self, ids: set[int]) -> None:
        """Adopt the model a crashed or paused run saved, if it was trained on responses we still have."""
        state = read_round_state(self._state_path(), ids, model_key="model", what="model", items="items",
                                 known=(self.model,))
        if state is None:
            return
        self.current_, self.trained_ids_ = state["model"], list(state["trained_ids"])
        self.pseudo_ = {int(k): v for k, v in state["pseudo"].items()}
        self.rounds_, self.history_ = int(state["rounds"]), list(state["history"])
        logger.info("sft: resumed model %s (trained on %d item(s))", self.current_, len(self.trained_ids_))

    # ---------------------------------------------------------------- answering and scoring

    def prompts(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        if self._prompts is None:
            self._prompts = [str(p) for p in self.pool.column("prompt")]
        return [self._prompts[int(i)] for i in ids]

    def render(self, prompt: str) -> str:
        """The prompt as the model sees it when answering and scoring (as TRL renders it in training)."""
        if not self.chat:
            return prompt
        head = [{"role": "system", "content": self.system}] if self.system else []
        return self.backend().chat_prompt(head + [{"role": "user", "content": prompt}])

    def backend(self, path: str | None = None):
        """A :class:`~curate.backends.hf.TransformersBackend` on the current model (or ``path``)."""
        path = path or self.current_
        if path not in self._backends:
            from curate.backends.hf import TransformersBackend

            self._backends[path] = TransformersBackend(path, device=self.device, **self.scoring)
        return self._backends[path]

    def _forget(self, path: str) -> None:
        if path != self.current_:
            self._backends.pop(path, None)
            self._answers.pop(path, None)

    def answers(self, ids: Sequence[int] | np.ndarray) -> list[Answer]:
        """The current model's greedy answer to each prompt, with its entropy and perplexity (cached)."""
        cache = self._answers.setdefault(self.current_, {})
        todo = [int(i) for i in dict.fromkeys(int(i) for i in ids) if int(i) not in cache]
        if todo:
            backend = self.backend()
            outs = backend.generate([self.render(p) for p in self.prompts(todo)], n=1,
                                    max_new_tokens=self.max_new_tokens, temperature=0.0)
            for i, (gen,) in zip(todo, outs, strict=True):
                lp = gen.logprobs
                cache[i] = Answer(gen.text, lp.mean_entropy if len(lp.logprobs) else float("inf"),
                                  lp.perplexity if len(lp.logprobs) else float("inf"), len(lp.logprobs),
                                  gen.finish_reason == "stop")
        return [cache[int(i)] for i in ids]

    def samples(self, ids: Sequence[int] | np.ndarray, n: int, *, temperature: float = 1.0,
                seed: int | None = None) -> list[list[str]]:
        """``n`` sampled answers per prompt from the current model (for self-consistency)."""
        outs = self.backend().generate([self.render(p) for p in self.prompts(ids)], n=n,
                                       max_new_tokens=self.max_new_tokens, temperature=temperature,
                                       seed=self.seed if seed is None else seed)
        return [[g.text for g in row] for row in outs]

    def response_perplexity(self, ids: Sequence[int] | np.ndarray, responses: Sequence[str]) -> np.ndarray:
        """Perplexity of given responses to the prompts of ``ids`` under the current model."""
        rendered = [self.render(p) for p in self.prompts(ids)]
        return np.asarray(self.backend().perplexity(list(responses), prompts=rendered), dtype=np.float64)

    def records(self) -> list[dict]:
        """Self-training rows: id, response, round and uncertainty (bought rows live in the journal)."""
        return [{"id": i, **v} for i, v in sorted(self.pseudo_.items())]

    def describe(self) -> dict:
        return {"model": self.current_, "rounds": self.rounds_, "history": self.history_,
                "self_training": None if self.self_training is None else asdict(self.self_training)}
