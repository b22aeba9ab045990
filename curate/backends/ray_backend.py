"""The recipe's LM on Ray workers: every LM call of a run (LLM labels, judging, generation, teacher
answers, scoring) spread over ``num_workers`` Ray actors, each of which builds the ``lm:`` block
once, on this machine or a cluster.

:class:`RayBackend` is a backend like the others, so annotators, judges, generators, teachers and
strategies use it unchanged: a batch call is split into contiguous chunks, one per worker, and the
answers are put back in input order; :meth:`RayBackend.stream` keeps ``2 x num_workers`` items in
flight and yields each as it completes (the LLM annotator journals every label as it arrives, so a
driver killed mid-job loses nothing it received and resumes with only the rest). Each chunk's
tokens come back with it and are counted in this backend's ``usage``, where the ledger reads them,
and in the usage of the item being streamed. A worker that dies (a node lost, a process killed) is
restarted by Ray and its unfinished calls retried there (``max_restarts`` / ``max_task_retries``):
a result arrives once, so it is charged once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from curate.backends.base import BaseBackend, Generation, OptionScores, ScoringStats, TokenLogprobs, Usage
from curate.backends.streaming import ItemStreams

__all__ = ["RayBackend"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_UNSET = object()
# Chat renderings kept per backend: annotators render one prompt per item, often the same instruction.
_CHAT_CACHE = 4096


class _BackendWorker:
    """One Ray actor: the ``lm:`` block built once, its methods called with the tokens they cost."""

    def __init__(self, lm) -> None:
        from curate.build import backend_from
        from curate.executor import _limit_threads

        _limit_threads()
        self.backend = backend_from(lm)

    def call(self, method: str, args: tuple, kwargs: dict) -> tuple[Any, dict]:
        from curate.executor import spent_by

        target = getattr(self, method) if method.startswith("_") else getattr(self.backend, method)
        return spent_by(self.backend.usage, lambda: target(*args, **kwargs))

    def _score_grouped(self, prompts: list[str], groups: list, **kwargs):
        return self.backend.score_options(prompts, groups=groups, **kwargs)

    def attribute(self, name: str) -> Any:
        return getattr(self.backend, name, None)

    def where(self) -> tuple[int, str]:
        """(process id, Ray node id): which worker on which node answers."""
        import os

        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()


class RayBackend(ItemStreams, BaseBackend):
    """The LM of ``lm`` (an ``lm:`` block) on the workers of ``executor`` (a :class:`~curate.executor.RayExecutor`).

    Workers start on the first call. ``max_restarts`` / ``max_task_retries`` (-1: without limit) say how
    often Ray may restart a dead worker and retry a call that was running on it.
    """

    def __init__(self, lm, executor, *, max_restarts: int = -1, max_task_retries: int = -1) -> None:
        super().__init__()
        self.lm = lm
        self.executor = executor
        self.name = f"ray:{lm.backend}:{lm.model}"
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self._actors: list | None = None
        self._lock = threading.Lock()
        self._chat: OrderedDict[str, str] = OrderedDict()
        self._attributes: dict[str, Any] = {}

    # ---------------------------------------------------------------- workers

    def workers(self) -> list:
        """The Ray actors (started on first use)."""
        with self._lock:
            if self._actors is None:
                ray = self.executor.start()
                n = self.executor.num_workers
                from curate.executor import cpu_share

                per_worker = cpu_share(ray, n)
                actor = ray.remote(max_restarts=self.max_restarts, max_task_retries=self.max_task_retries)(_BackendWorker)
                self._actors = [actor.options(num_cpus=per_worker).remote(self.lm) for _ in range(n)]
                logger.info("%s: %d Ray worker(s), %.2f CPU each", self.name, n, per_worker)
            return self._actors

    def worker_pids(self) -> list[int]:
        return [pid for pid, _ in self.placement()]

    def placement(self) -> list[tuple[int, str]]:
        """``(pid, node id)`` of each worker."""
        import ray

        return ray.get([a.where.remote() for a in self.workers()])

    def close(self) -> None:
        """Stop the workers (and the Ray this backend's executor started)."""
        if self._actors is not None:
            import ray

            for actor in self._actors:
                ray.kill(actor)
            self._actors = None
        self.executor.close()

    def _spread(self, method: str, columns: Sequence[Sequence[Any]], kwargs: dict, join: Callable[[list], Any]):
        """``method(*chunk_columns, **kwargs)`` on contiguous chunks of the rows of ``columns``, one
        chunk per worker; the chunks' values joined in input order by ``join``; tokens counted."""
        import ray

        n = len(columns[0])
        actors = self.workers()
        parts = min(len(actors), n) or 1
        bounds = np.linspace(0, n, parts + 1).astype(int)
        futures = [actors[k].call.remote(method, tuple(list(col[bounds[k]:bounds[k + 1]]) for col in columns), kwargs)
                   for k in range(parts) if bounds[k + 1] > bounds[k]]
        answers = ray.get(futures)
        for _, spent in answers:
            self._count(spent)
        return join([value for value, _ in answers])

    def _count(self, spent: dict) -> None:
        from curate.executor import add_spent

        with self._lock:
            add_spent(self.usage, spent)
        self._count_item(spent["input"], spent["output"], "ray")

    def _attribute(self, name: str) -> Any:
        if name not in self._attributes:
            import ray

            self._attributes[name] = ray.get(self.workers()[0].attribute.remote(name))
        return self._attributes[name]

    # ---------------------------------------------------------------- the backend protocol

    def completion_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenLogprobs]:
        if not len(prompts):
            return []
        return self._spread("completion_logprobs", (list(prompts), list(completions)), {},
                            lambda parts: [r for part in parts for r in part])

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        if not len(prompts):
            return np.zeros((0, len(options)), dtype=np.float64)
        return self._spread("option_logprobs", (list(prompts),), {"options": list(options), "normalize": normalize},
                            lambda parts: np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]))

    def score_options(self, prompts: Sequence[str], options: Sequence[str], *, groups=None, normalize: bool = True,
                      max_batch_tokens: int | None = None, max_batch_size: int | None = None) -> OptionScores:
        """The workers' own ``score_options`` (head sharing within each chunk), joined in order."""
        prompts = list(prompts)
        if not prompts:
            return OptionScores(np.zeros((0, len(options)), dtype=np.float64), ScoringStats())
        columns = (prompts,) if groups is None else (prompts, list(groups))
        kwargs = {"options": list(options), "normalize": normalize, "max_batch_tokens": max_batch_tokens,
                  "max_batch_size": max_batch_size}

        def join(parts: list[OptionScores]) -> OptionScores:
            stats = ScoringStats()
            for part in parts:
                stats.add(part.stats)
            return OptionScores(np.concatenate([np.asarray(p.logprobs, dtype=np.float64) for p in parts]), stats)

        if groups is None:
            return self._spread("score_options", columns, kwargs, join)
        return self._spread("_score_grouped", columns, kwargs, join)

    def perplexity(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        if not len(texts):
            return np.zeros(0, dtype=np.float64)
        if prompts is None:
            return self._spread("perplexity", (list(texts),), {}, lambda parts: np.concatenate(parts))
        return self._spread("perplexity", (list(texts), list(prompts)), {}, lambda parts: np.concatenate(parts))

    def generate(self, prompts: Sequence[str], **kwargs) -> list[list[Generation]]:
        if not len(prompts):
            return []
        return self._spread("generate", (list(prompts),), kwargs, lambda parts: [g for part in parts for g in part])

    def chat_prompt(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        import ray

        key = json.dumps([list(messages), add_generation_prompt], sort_keys=True)
        with self._lock:
            if key in self._chat:
                self._chat.move_to_end(key)
                return self._chat[key]
        value, _ = ray.get(self.workers()[0].call.remote(
            "chat_prompt", (list(messages),), {"add_generation_prompt": add_generation_prompt}))
        with self._lock:
            self._chat[key] = value
            while len(self._chat) > _CHAT_CACHE:
                self._chat.popitem(last=False)
        return value

    @property
    def tokenizer(self):
        """The workers' tokenizer (fetched once; token bounds are counted here, before a call is paid)."""
        return self._attribute("tokenizer")

    @property
    def context_length(self):
        return self._attribute("context_length")

    def stream(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[int, R, Usage]]:
        """``fn(item)`` for every item, ``2 x num_workers`` at once; ``(position, result, usage)`` in
        input order as items finish (see :mod:`curate.backends.streaming`)."""
        if self._in_item():
            for k, item in enumerate(items):
                yield (k, *self._run_item(fn, item))
            return
        self.workers()
        yield from self._fan_out_items(fn, items, 2 * self.executor.num_workers, thread_name="curate-ray")
