"""Where the embarrassingly parallel work runs: in this process (:class:`Executor`, the default) or
on Ray Data workers (:class:`RayExecutor`), on this machine or a cluster.

The parallel step is a worker class in the Ray Data style: ``__init__`` loads the model once per
worker, ``__call__(batch) -> batch`` maps a dict of column arrays. The same classes run in process
under the local executor. Results come back in input order (every row carries its position), and
the tokens the workers' LMs read and wrote are summed into the caller's :class:`~curate.backends.Usage`,
so the ledger charges them exactly as on the local path. Caches and the journal stay with the driver.

* :func:`embed_texts` — sentence embeddings (workers load the embedder by name);
* :func:`option_logprobs` / :func:`perplexity` — LM scoring (workers build the LM of an ``lm:`` block).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from curate.errors import ConfigError, MissingDependencyError

__all__ = ["EmbedWorker", "Executor", "OptionsWorker", "PerplexityWorker", "RayExecutor", "embed_texts",
           "embed_texts_stream",
           "executor_from", "option_logprobs", "perplexity"]

_POS = "_pos"
_USAGE = "_usage"
# Environment a worker needs to behave as the driver does (offline hub, quiet, the same caches, thread caps).
_PASS_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "CURATE_QUIET", "CURATE_CACHE", "CURATE_MODELS", "OMP_NUM_THREADS",
             "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")


class Executor:
    """In process, one batch after another: today's behaviour, and the reference for the others."""

    kind = "local"

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size

    def map_batches(self, worker: type, columns: Mapping[str, Sequence[Any]], *,
                    args: tuple = ()) -> dict[str, np.ndarray]:
        """``worker(*args)`` once, then called on each batch of ``columns``; the outputs concatenated
        in input order."""
        parts = list(self.map_batches_stream(worker, columns, args=args))
        if not parts:
            return {}
        out = _concat([{_POS: pos, **values} for pos, values in parts])
        order = np.argsort(out.pop(_POS), kind="stable")
        return {k: v[order] for k, v in out.items()}

    def map_batches_stream(self, worker: type, columns: Mapping[str, Sequence[Any]], *,
                           args: tuple = ()) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """``(input positions, outputs)`` of each batch as it is done (here: in order), so that a
        caller can keep each (a cache, a journal) before the next arrives."""
        n = _length(columns)
        if n == 0:
            return
        fn = worker(*args)
        for s in range(0, n, self.batch_size):
            yield np.arange(s, min(n, s + self.batch_size)), fn({k: np.asarray(v[s:s + self.batch_size])
                                                                 for k, v in columns.items()})

    def close(self) -> None:
        pass


class RayExecutor(Executor):
    """Ray Data: ``from_items`` + ``map_batches(worker, concurrency=num_workers)``, one model per worker.

    ``address``: a running cluster (``auto``, ``ray://head:10001``); none starts a Ray on this
    machine (127.0.0.1, no dashboard, ``num_cpus`` CPUs, default min(num_workers, the machine's)).
    Ray is started on first use, not at construction; a Ray already running in this process is used.
    """

    kind = "ray"

    def __init__(self, num_workers: int = 2, batch_size: int = 256, address: str | None = None,
                 num_cpus: int | None = None) -> None:
        super().__init__(batch_size)
        self.num_workers = num_workers
        self.address = address
        self.num_cpus = num_cpus
        self._started = False  # whether this executor started Ray (and so shuts it down)

    def start(self):
        """Ray, started (or joined) with this executor's settings; the ``ray`` module."""
        try:
            import ray
        except ImportError:
            raise MissingDependencyError("executor.kind 'ray' needs Ray Data: pip install 'curate[ray]'.") from None
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
            options: dict[str, Any] = dict(runtime_env={"env_vars": env}, log_to_driver=False,
                                           ignore_reinit_error=True, logging_level=logging.WARNING)
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=self._local_cpus(), include_dashboard=False, _node_ip_address="127.0.0.1", **options)
                self._started = True
            ray.data.DataContext.get_current().enable_progress_bars = False
        return ray

    def _local_cpus(self) -> int:
        return self.num_cpus or max(1, min(self.num_workers, os.cpu_count() or 1))

    def map_batches_stream(self, worker: type, columns: Mapping[str, Sequence[Any]], *,
                           args: tuple = ()) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Ray Data's batches as they come off the workers (in any order; each carries its rows'
        input positions). A worker that dies is restarted by Ray Data and its batch run again."""
        ray = self.start()
        n = _length(columns)
        if n == 0:
            return
        keys = list(columns)
        items = [{_POS: i, **{k: columns[k][i] for k in keys}} for i in range(n)]
        per_worker = cpu_share(ray, self.num_workers)
        ds = ray.data.from_items(items).map_batches(
            _Positioned, fn_constructor_args=(worker, args), batch_size=min(self.batch_size, n), batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.num_workers), num_cpus=per_worker,
            max_restarts=-1, max_task_retries=-1)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            pos = np.asarray(batch.pop(_POS), dtype=np.int64)
            yield pos, batch

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


class _Positioned:
    """Runs ``worker`` on a batch and carries the rows' input positions through (Ray may reorder)."""

    def __init__(self, worker: type, args: tuple) -> None:
        self.fn = worker(*args)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pos = batch.pop(_POS)
        return {**self.fn(batch), _POS: pos}


def executor_from(spec) -> Executor:
    """The executor of an ``executor:`` block (:class:`~curate.config.ExecutorConfig`); None: local."""
    if spec is None or spec.kind == "local":
        return Executor(getattr(spec, "batch_size", 256))
    if spec.kind == "ray":
        return RayExecutor(spec.num_workers, spec.batch_size, spec.address, spec.num_cpus)
    raise ConfigError(f"executor.kind must be 'local' or 'ray'. Got '{spec.kind}' instead.")


# ---------------------------------------------------------------------------------------------- workers


def _limit_threads() -> None:
    # One worker per CPU share: torch's default of every core per process oversubscribes the machine.
    if "OMP_NUM_THREADS" in os.environ:
        import torch

        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))


class EmbedWorker:
    """Texts -> ``vector`` rows, by a sentence-transformers model loaded by name."""

    def __init__(self, model: str, normalize: bool = True, device: str | None = None, batch_size: int = 64) -> None:
        from curate.embed import SentenceTransformerEmbedder

        _limit_threads()
        self.embedder = SentenceTransformerEmbedder(model, device=device, batch_size=batch_size, normalize=normalize)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"vector": self.embedder.encode([str(t) for t in batch["text"]])}


class _LMWorker:
    def __init__(self, lm) -> None:
        from curate.build import backend_from

        _limit_threads()
        self.backend = backend_from(lm)

    def _with_usage(self, n: int, run) -> dict[str, np.ndarray]:
        out, spent = spent_by(self.backend.usage, run)
        usage = np.full(n, "", dtype=object)
        usage[0] = json.dumps(spent)  # the batch's tokens ride on its first row
        return {**out, _USAGE: usage}


class OptionsWorker(_LMWorker):
    """Prompts -> ``logprobs`` rows over ``options``, by the LM of an ``lm:`` block."""

    def __init__(self, lm, options: Sequence[str], normalize: bool = True) -> None:
        super().__init__(lm)
        self.options = list(options)
        self.normalize = normalize

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [str(p) for p in batch["prompt"]]
        return self._with_usage(len(prompts), lambda: {"logprobs": np.asarray(
            self.backend.option_logprobs(prompts, self.options, normalize=self.normalize), dtype=np.float64)})


class PerplexityWorker(_LMWorker):
    """Texts (and their prompts, where given) -> ``perplexity``, by the LM of an ``lm:`` block."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        prompts = [str(p) for p in batch["prompt"]] if "prompt" in batch else None
        return self._with_usage(len(texts), lambda: {"perplexity": np.asarray(
            self.backend.perplexity(texts, prompts), dtype=np.float64)})


# ---------------------------------------------------------------------------------------------- operations


def embed_texts(texts: Sequence[str], model: str, *, executor: Executor, normalize: bool = True,
                device: str | None = None, batch_size: int = 64) -> np.ndarray:
    """``(len(texts), dim)`` float32 rows of ``model``, computed by ``executor``'s workers."""
    out = executor.map_batches(EmbedWorker, {"text": list(texts)}, args=(model, normalize, device, batch_size))
    return np.ascontiguousarray(out["vector"], dtype=np.float32)


def embed_texts_stream(texts: Sequence[str], model: str, *, executor: Executor, normalize: bool = True,
                       device: str | None = None, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions, float32 rows)`` of each batch of ``texts`` as the workers finish it."""
    for pos, out in executor.map_batches_stream(EmbedWorker, {"text": list(texts)},
                                                args=(model, normalize, device, batch_size)):
        yield pos, np.ascontiguousarray(out["vector"], dtype=np.float32)


def option_logprobs(lm, prompts: Sequence[str], options: Sequence[str], *, normalize: bool = True,
                    executor: Executor | None = None, backend=None, usage=None) -> np.ndarray:
    """``(len(prompts), len(options))`` option log-probs, as ``backend.option_logprobs`` gives them.

    Local (``executor`` None or local): ``backend`` (or one built from the ``lm`` block) answers in
    process. Ray: each worker builds the LM of ``lm``; their tokens are added to ``usage`` (default:
    ``backend.usage``), the counter the ledger reads."""
    if not len(prompts):
        return np.zeros((0, len(options)), dtype=np.float64)
    if executor is None or executor.kind == "local":
        return _local(lm, backend).option_logprobs(list(prompts), list(options), normalize=normalize)
    out = executor.map_batches(OptionsWorker, {"prompt": list(prompts)}, args=(lm, list(options), normalize))
    _add_usage(out.pop(_USAGE), usage if usage is not None else getattr(backend, "usage", None))
    return out["logprobs"].reshape(len(prompts), len(options))


def perplexity(lm, texts: Sequence[str], prompts: Sequence[str] | None = None, *, executor: Executor | None = None,
               backend=None, usage=None) -> np.ndarray:
    """Perplexity of each text (given its prompt), as ``backend.perplexity`` gives it; see
    :func:`option_logprobs` for where it runs and where the tokens are counted."""
    if not len(texts):
        return np.zeros(0, dtype=np.float64)
    if executor is None or executor.kind == "local":
        return np.asarray(_local(lm, backend).perplexity(list(texts), None if prompts is None else list(prompts)))
    columns = {"text": list(texts), **({"prompt": list(prompts)} if prompts is not None else {})}
    out = executor.map_batches(PerplexityWorker, columns, args=(lm,))
    _add_usage(out.pop(_USAGE), usage if usage is not None else getattr(backend, "usage", None))
    return out["perplexity"]


# ---------------------------------------------------------------------------------------------- helpers


def _local(lm, backend):
    if backend is not None:
        return backend
    from curate.build import backend_from

    return backend_from(lm)


def _add_usage(column: np.ndarray, usage) -> None:
    if usage is None:
        return
    for cell in column:
        if cell:
            add_spent(usage, json.loads(cell))


def spent_by(usage, run) -> tuple[Any, dict]:
    """``(run(), the tokens and calls it added to usage)``: what a worker sends back with its answer."""
    before = (usage.input_tokens, usage.output_tokens, usage.calls, dict(usage.by_kind))
    out = run()
    spent = {"input": usage.input_tokens - before[0], "output": usage.output_tokens - before[1],
             "calls": usage.calls - before[2],
             "by_kind": {k: v - before[3].get(k, 0) for k, v in usage.by_kind.items() if v != before[3].get(k, 0)}}
    return out, spent


def add_spent(usage, spent: dict) -> None:
    """Count what a worker spent (:func:`spent_by`) in the caller's ``usage``, where the ledger reads it."""
    usage.input_tokens += spent["input"]
    usage.output_tokens += spent["output"]
    usage.calls += spent["calls"]
    for kind, count in spent["by_kind"].items():
        usage.by_kind[kind] = usage.by_kind.get(kind, 0) + count


def cpu_share(ray, n: int) -> float:
    """The CPUs each of ``n`` new Ray workers asks for: one, or an equal share of those free now. Asking
    for more than is free would wait for CPUs forever (other workers may hold them); with none free
    they ask for none, and share the CPUs with what runs there."""
    free = float(ray.available_resources().get("CPU", 0.0))
    return min(1.0, free / n) if free > 0 else 0.0


def _length(columns: Mapping[str, Sequence[Any]]) -> int:
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ConfigError(f"map_batches takes columns of one length. Got lengths {sorted(lengths)} instead.")
    return lengths.pop() if lengths else 0


def _concat(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not batches:
        return {}
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}
