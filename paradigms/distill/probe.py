"""Student-teacher disagreement on a cheap probe: the teacher's first ``k`` tokens for a prompt,
scored by the student.

The probe costs teacher tokens (the prompt in, ``k`` out), so it is paid through the loop's
:class:`~curate.budget.Purse`: the loop keeps the probe's worst case out of the batch's money, hands
the scorer a purse before each selection, and every probe is charged (source ``"probe"``) and
journalled as it is made. A probe is kept once bought: the teacher's opening does not change
between rounds, only the student's view of it does.

The score of a prompt is the student's mean negative log-likelihood (nats per token) of the
teacher's opening, given the prompt in the student's own template: high where the student would not
have started the answer the way the teacher does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from curate.acquire.base import PoolState
from curate.annotate.llm import split_tokens
from curate.budget import Prices
from curate.errors import ConfigError
from curate.train import write_json_atomic

__all__ = ["TeacherProbe"]

logger = logging.getLogger(__name__)

SOURCE = "probe"


class TeacherProbe:
    """Scorer: how much the student disagrees with the opening of the teacher's answer.

    Args:
        learner: the student (:class:`~curate.responses.ResponseLearner`: ``pool``,
            ``response_perplexity``, ``rounds_``).
        teacher: a live teacher (an LM backend that generates) or a
            :class:`~curate.responses.RecordedTeacher` (the opening of the recorded answer, billed as
            if the teacher had written it).
        tokens: ``k``, the length of the probe in teacher tokens.
        sample: probe at most this many candidates per selection (a seeded random subset; the rest
            rank last). None = every candidate; the worst case is then the whole pool.
        chat / system: how a live teacher's prompt is rendered (its own chat template).
        max_input_tokens: longer prompts are not probed (they rank last): part of the cost bound.
        batch_size: prompts per live teacher call.
        seed: seeds the subset.
        cache: a JSON file that keeps bought probes across invocations (a resumed run pays once).
    """

    def __init__(self, learner, teacher, *, tokens: int = 8, sample: int | None = 64, chat: bool = True,
                 system: str | None = None, max_input_tokens: int = 1024, batch_size: int = 8, seed: int = 0,
                 cache: str | Path | None = None) -> None:
        for name, value in (("tokens", tokens), ("max_input_tokens", max_input_tokens), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"The '{name}' parameter of TeacherProbe must be an int >= 1. Got {value!r} instead.")
        if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
            raise ConfigError(f"The 'sample' parameter of TeacherProbe must be None or an int >= 1. Got {sample!r}.")
        self.recorded = callable(getattr(teacher, "item_micros", None)) and hasattr(teacher, "column")
        if not self.recorded and not callable(getattr(teacher, "generate", None)):
            raise ConfigError(f"TeacherProbe needs a teacher backend that generates or a RecordedTeacher; "
                              f"got {type(teacher).__name__}.")
        self.learner = learner
        self.teacher = teacher
        self.tokens = tokens
        self.sample = sample
        self.chat = chat
        self.system = system
        self.max_input_tokens = max_input_tokens
        self.batch_size = batch_size
        self.seed = seed
        self.cache = None if cache is None else Path(cache)
        self.purse = None
        self.probes_: dict[int, str] = {}   # id -> the teacher's opening ("" = nothing to probe)
        self.paid_: list[tuple[int, int, int]] = []  # (id, input tokens, output tokens) of every probe bought

    # ---------------------------------------------------------------- the loop's side

    def use_purse(self, purse) -> None:
        self.purse = purse

    def _count(self) -> int:
        n = len(self.learner.pool)
        return n if self.sample is None else min(self.sample, n)

    def worst_case_micros(self, prices: Prices, *, pool=None, batch: int | None = None) -> int:
        """The most one selection spends: ``sample`` probes at the dearest probe's price."""
        return self._count() * self._dearest(prices)

    def _dearest(self, prices: Prices) -> int:
        if self.recorded:
            pool = self.learner.pool
            self.teacher.prepare(pool)
            return max((prices.micros(input_tokens=i, output_tokens=min(o, self.tokens))
                        for i, o in (self.teacher.tokens(pool, k) for k in range(len(pool)))
                        if i <= self.max_input_tokens), default=0)
        return prices.micros(input_tokens=self.max_input_tokens, output_tokens=self.tokens)

    # ---------------------------------------------------------------- scoring

    def score(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        scores = np.full(len(ids), -np.inf)
        chosen = np.arange(len(ids))
        if self.sample is not None and len(ids) > self.sample:
            rng = np.random.default_rng([self.seed, int(getattr(self.learner, "rounds_", 0)), 13])
            chosen = np.sort(rng.choice(len(ids), size=self.sample, replace=False))
        self.buy(ids[chosen])
        have = [k for k in chosen.tolist() if self.probes_.get(int(ids[k]))]
        if have:
            scores[have] = self.values(ids[have])
        logger.info("teacher probe: %d of %d candidate(s) scored (%d probe(s) bought so far)", len(have), len(ids),
                    len(self.paid_))
        return scores

    def values(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The student's mean NLL (nats/token) of the teacher's opening for each (probed) id."""
        ids = [int(i) for i in ids]
        self._load_cache()
        missing = [i for i in ids if not self.probes_.get(i)]
        if missing:
            raise ConfigError(f"No teacher probe for items {missing[:5]}; buy() them first.")
        ppl = self.learner.response_perplexity(ids, [self.probes_[i] for i in ids])
        return np.log(np.asarray(ppl, dtype=np.float64))

    def buy(self, ids: Sequence[int] | np.ndarray) -> list[int]:
        """Probe the teacher for the ids not probed yet, as far as the purse allows; returns the new ids."""
        self._load_cache()
        todo = [int(i) for i in ids if int(i) not in self.probes_]
        if not todo:
            return []
        bought = self._buy_recorded(todo) if self.recorded else self._buy_live(todo)
        if self.cache is not None and bought:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.cache, {"probes": {str(k): v for k, v in self.probes_.items()}, "paid": self.paid_})
        return bought

    def _load_cache(self) -> None:
        if self.cache is not None and not self.probes_ and self.cache.exists():
            state = json.loads(self.cache.read_text())
            self.probes_ = {int(k): v for k, v in state["probes"].items()}
            self.paid_ = [tuple(p) for p in state["paid"]]

    def _affordable(self, micros: int) -> bool:
        return self.purse is None or self.purse.can_afford(micros)

    def _pay(self, item_id: int, input_tokens: int, output_tokens: int) -> None:
        if self.purse is not None:
            self.purse.charge(SOURCE, input_tokens=input_tokens, output_tokens=output_tokens)
        self.paid_.append((item_id, input_tokens, output_tokens))

    def _price(self, input_tokens: int, output_tokens: int) -> int:
        if self.purse is None:
            return 0
        return self.purse.price(input_tokens=input_tokens, output_tokens=output_tokens)

    def _buy_recorded(self, todo: list[int]) -> list[int]:
        teacher, pool = self.teacher, self.learner.pool
        teacher.prepare(pool)
        tokenizer = teacher.tokenizer
        answers = pool.column(teacher.column)
        bought = []
        for i in todo:
            answer = answers[i]
            ids = tokenizer(str(answer), add_special_tokens=False)["input_ids"][: self.tokens] if answer else []
            tin = teacher.tokens(pool, i)[0]
            if tin > self.max_input_tokens:
                self.probes_[i] = ""  # never probed, never billed: ranked last
                continue
            if not self._affordable(self._price(tin, len(ids))):
                break
            self._pay(i, tin, len(ids))
            self.probes_[i] = tokenizer.decode(ids) if ids else ""
            bought.append(i)
        return bought

    def _buy_live(self, todo: list[int]) -> list[int]:
        backend = self.teacher
        tokenizer = getattr(backend, "tokenizer", None)
        prompts = self.learner.prompts(todo) if hasattr(self.learner, "prompts") else [
            str(p) for p in self.learner.pool.select(np.asarray(todo))["prompt"]]
        bought = []
        queue = list(zip(todo, prompts, strict=True))
        while queue:
            batch, bound = [], 0
            while queue and len(batch) < self.batch_size:
                i, prompt = queue[0]
                rendered = self._render(prompt)
                length = len(tokenizer(rendered, add_special_tokens=False)["input_ids"]) if tokenizer else None
                if length is not None and length > self.max_input_tokens:
                    queue.pop(0)
                    self.probes_[i] = ""  # never sent, never billed: ranked last
                    continue
                cost = self._price(min(length or self.max_input_tokens, self.max_input_tokens), self.tokens)
                if not self._affordable(bound + cost):
                    queue = []
                    break
                queue.pop(0)
                batch.append((i, rendered, length))
                bound += cost
            if not batch:
                break
            before_in, before_out = backend.usage.input_tokens, backend.usage.output_tokens
            outs = backend.generate([r for _, r, _ in batch], n=1, max_new_tokens=self.tokens, temperature=0.0)
            used_in = backend.usage.input_tokens - before_in
            used_out = backend.usage.output_tokens - before_out
            written = [len(row[0].logprobs.logprobs) for row in outs]
            tokens_in = split_tokens(used_in, [n or len(r) for _, r, n in batch])
            tokens_out = split_tokens(used_out, written) if sum(written) else split_tokens(used_out, [1] * len(batch))
            for (i, _, _), row, tin, tout in zip(batch, outs, tokens_in, tokens_out, strict=True):
                # Capped at the bound the purse was checked against, like TeacherAnnotator's bill.
                self._pay(i, min(tin, self.max_input_tokens), min(tout, self.tokens))
                self.probes_[i] = row[0].text
                bought.append(i)
        return bought

    def _render(self, prompt: str) -> str:
        if not self.chat:
            return prompt
        head = [{"role": "system", "content": self.system}] if self.system else []
        return self.teacher.chat_prompt(head + [{"role": "user", "content": prompt}])
