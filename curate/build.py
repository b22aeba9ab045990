"""THE wiring: recipe blocks in, the loop's parts out. Every paradigm builds its backends, ledger,
stopping rule, annotator, strategies, index and loop through these functions, so that a change to
how one kind of part is made (a backend option, a stop rule, a strategy check) is made once.

* :func:`backend_from` / :class:`LazyBackend` — an LM from an ``lm:`` block (one per block, on first use);
* :func:`prices_from` / :func:`ledger_from` — money (the budget is held by the ledger alone);
* :func:`stopping_from` — the stop rule of a ``stop:`` block;
* :func:`annotator_from` — gold, people, the paradigm's machine annotator (an LLM labeller, a judge, a
  teacher), or machine + people routed by confidence; :func:`labeller_from` — an LLM with a label set;
  :func:`teacher_from` — recorded or live teachers;
* :func:`strategy_from` — a registered strategy, refused before round 0 if the run cannot feed it;
* :func:`index_for` — the shared embedding index over texts;
* :func:`loop_from` — the :class:`~curate.loop.ActiveLoop` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from curate.errors import ConfigError

__all__ = ["LazyBackend", "annotator_from", "available_for", "backend_from", "index_for", "ledger_from", "loop_from",
           "labeller_from", "prices_from", "stopping_from", "strategy_from", "teacher_from"]


# ---------------------------------------------------------------------------------------------- LMs


def backend_from(lm, executor=None) -> Any:
    """The backend of an ``lm:`` block (:class:`~curate.config.LMConfig`): ``backend`` (hf | vllm |
    openai), ``model`` (an id, a path, or a served name), ``device`` (local backends), ``base_url``
    (servers) and ``options`` (the backend's own keyword arguments: vLLM engine arguments, timeouts...).

    With an ``executor:`` block of kind ``ray`` (:class:`~curate.config.ExecutorConfig`), the LM runs on
    that many Ray workers instead (:class:`~curate.backends.ray_backend.RayBackend`), each building
    this same block; every caller uses it unchanged."""
    from curate.backends import load_backend

    if executor is not None and getattr(executor, "kind", "local") == "ray":
        from curate.backends.ray_backend import RayBackend
        from curate.executor import executor_from

        return RayBackend(lm, executor_from(executor))

    options: dict[str, Any] = dict(getattr(lm, "options", None) or {})
    if lm.backend == "hf":
        kwargs = {"device": lm.device, **options}
    elif lm.backend == "vllm":
        # Everything but the seed is an engine argument (gpu_memory_utilization, enable_prefix_caching...).
        kwargs = {"engine_kwargs": options, **({"seed": options.pop("seed")} if "seed" in options else {})}
    else:
        kwargs = options
    if lm.base_url:
        if lm.backend != "openai":
            raise ConfigError(f"lm.base_url is for the openai backend (a server); lm.backend is '{lm.backend}'.")
        kwargs["base_url"] = lm.base_url
    try:
        return load_backend(lm.backend, lm.model, **kwargs)
    except TypeError as err:
        raise ConfigError(f"lm.options: the {lm.backend} backend does not take these options ({err}).") from None


def _require_ray() -> None:
    import importlib.util

    from curate.errors import MissingDependencyError

    if importlib.util.find_spec("ray") is None:
        raise MissingDependencyError("executor.kind 'ray' needs Ray Data: pip install 'curate[ray]' "
                                     "(or remove the executor block to run in process).")


class LazyBackend:
    """An LM built on first call and then reused: a recipe that never needs its LM never loads it."""

    def __init__(self, lm, executor=None) -> None:
        self.lm = lm
        self.executor = executor   # an executor: block; kind ray runs the LM on Ray workers
        self._backend = None
        if getattr(executor, "kind", "local") == "ray":
            _require_ray()   # now, while the run is being built: not at the first LM call, after labels were bought

    def __call__(self):
        if self._backend is None:
            self._backend = backend_from(self.lm, self.executor)
        return self._backend

    @property
    def loaded(self) -> bool:
        return self._backend is not None


# ---------------------------------------------------------------------------------------------- money and stopping


def prices_from(prices):
    from curate.budget import Prices

    return Prices(prices.human_per_label, prices.llm_input_per_million, prices.llm_output_per_million, prices.currency,
                  batch_discount=getattr(prices, "batch_discount", 0.0))


def ledger_from(prices, money: float | None):
    """The run's ledger: its prices and the money budget, held here and nowhere else."""
    from curate.budget import Ledger

    return Ledger(prices_from(prices), budget=money)


def stopping_from(stop, *, higher_is_better: bool = True):
    """The stop rule of a ``stop:`` block (:class:`~curate.config.StopConfig`): rounds, plateau and
    stable predictions combined by ``combine`` (any | all), plus the label budget. The money budget
    is the ledger's: the loop stops when one more label would not fit it. ``higher_is_better``:
    the direction of the paradigm's metric, for the plateau (False for a held-out loss)."""
    from curate.stopping import AllOf, AnyOf, LabelBudget, MaxRounds, Plateau, StablePredictions

    criteria = []
    if stop.rounds is not None:
        criteria.append(MaxRounds(stop.rounds))
    if stop.plateau_window is not None:
        criteria.append(Plateau(stop.plateau_window, stop.plateau_min_gain, higher_is_better=higher_is_better))
    if stop.stable_kappa is not None:
        criteria.append(StablePredictions(stop.stable_kappa, stop.stable_window))
    if not criteria and stop.labels is None and stop.money is None:
        raise ConfigError("stop needs at least one of rounds, labels, money, plateau_window or stable_kappa.")
    rule = (AnyOf(criteria) if stop.combine == "any" else AllOf(criteria)) if criteria else None
    budgets = [LabelBudget(stop.labels)] if stop.labels is not None else []
    if rule is None:
        return AnyOf(budgets or [MaxRounds(10**9)])
    return AnyOf([rule, *budgets]) if budgets else rule


# ---------------------------------------------------------------------------------------------- annotators


def annotator_from(spec, *, labels: Sequence[Any] | None, machine: Callable[[], Any] | None = None,
                   machine_kinds: Iterable[str] = ("llm",), gold_column: str = "label", where: str = "annotator"):
    """The annotator of an ``annotator:`` block.

    ``spec.kind`` is ``gold`` (the pool's ``column``, billed as people), ``human`` (a file queue in
    ``queue_dir``, ``queue_format``), one of ``machine_kinds`` (the paradigm's machine annotator,
    built by ``machine()``: an LLM labeller, a pairwise judge, a teacher), or ``hybrid``: the
    machine's labels at or above ``threshold`` are kept and the rest go to people (``human: queue``)
    or to the gold labels standing in for them (``human: gold``), or to Label Studio (``human:
    labelstudio``). ``labelstudio`` is people in a live Label Studio (options in ``label_studio``:
    project, url, api_key_env, model_version, timeout). ``labels`` is the label set people choose
    from (None: they write free text)."""
    from curate.annotate.base import GoldAnnotator

    kind = spec.kind
    classes = list(labels) if labels and all(isinstance(x, (str, int)) for x in labels) else None
    gold = GoldAnnotator(column=getattr(spec, "column", gold_column), source="human", labels=classes)  # billed as people

    def queue():
        from curate.annotate.human import HumanQueueAnnotator

        if not getattr(spec, "queue_dir", None):
            raise ConfigError(f"{where}.kind '{kind}' needs {where}.queue_dir (where batches for people go).")
        return HumanQueueAnnotator(spec.queue_dir, labels=None if labels is None else list(labels),
                                   fmt=getattr(spec, "queue_format", "jsonl"))

    def label_studio():  # people in a live Label Studio, through label-studio-sdk
        from curate.annotate.label_studio import LabelStudioAnnotator

        if labels is None:
            raise ConfigError(f"{where}: Label Studio is for a label set; people who write free text use kind 'human'.")
        return LabelStudioAnnotator.from_options(list(labels), getattr(spec, "label_studio", None) or {},
                                                 where=f"{where}.label_studio")

    if kind == "gold":
        return gold
    if kind == "human":
        return queue()
    if kind == "labelstudio":
        return label_studio()
    if machine is None:
        raise ConfigError(f"{where}.kind '{kind}' is not known here; use gold or human.")
    if kind in tuple(machine_kinds):
        return machine()
    if kind == "hybrid":
        from curate.annotate.hybrid import HybridAnnotator

        # People first: a missing queue_dir is reported before any model loads. ``human: gold``
        # simulates them with the gold labels.
        people = getattr(spec, "human", "queue")
        human = gold if people == "gold" else label_studio() if people == "labelstudio" else queue()
        llm = machine()
        if people == "labelstudio":  # the LLM's label of a routed item becomes its task's prediction
            from curate.annotate.label_studio import RecordPredictions

            llm = RecordPredictions(llm, human)
        return HybridAnnotator(llm, human, threshold=spec.threshold)
    kinds = ["gold", "human", "labelstudio", *machine_kinds, "hybrid"]
    raise ConfigError(f"{where}.kind must be one of {', '.join(kinds)}. Got '{kind}' instead.")


def labeller_from(spec, labels: Sequence[Any], *, index, backend: Callable[[], Any]):
    """The LLM that labels with a closed label set (:class:`~curate.annotate.llm.LLMAnnotator`), from
    an ``annotator:`` block (:class:`~curate.config.AnnotatorConfig`): its instruction (``{labels}`` is
    filled in), template, verbalizers and ``shots`` retrieved from the labelled items on ``index``."""
    from curate.annotate.llm import LLMAnnotator

    instruction = spec.instruction.replace("{labels}", ", ".join(map(str, labels)))
    return LLMAnnotator(backend(), list(labels), instruction=instruction, template=spec.template, shots=spec.shots,
                        index=index, verbalizers=spec.verbalizers or None)


def teacher_from(kind: str, pool, *, lm=None, column: str = "response", tokenizer: Any = None, chat: bool = True,
                 system: str | None = None, max_new_tokens: int = 256, max_input_tokens: int = 1024, executor=None):
    """The annotator that writes responses: ``recorded`` (the pool's ``column``, billed by the token
    of ``tokenizer`` as if a teacher had written it: exact per-item costs) or a live teacher, the
    LM of ``lm`` (an ``lm:`` block, or a backend already built)."""
    from curate.responses import RecordedTeacher, TeacherAnnotator

    if kind == "recorded":
        if column not in pool.columns:
            raise ConfigError(f"The teacher's column '{column}' is not a column of the pool ({', '.join(pool.columns)}).")
        return RecordedTeacher(column, tokenizer=tokenizer).prepare(pool)
    backend = backend_from(lm, executor) if hasattr(lm, "backend") and hasattr(lm, "model") else lm
    return TeacherAnnotator(backend, chat=chat, system=system, max_new_tokens=max_new_tokens,
                            max_input_tokens=max_input_tokens)


# ---------------------------------------------------------------------------------------------- strategies and index


def available_for(learner, *, index=None, backend: bool = False, teacher: bool = False) -> frozenset[str]:
    """What a run offers its strategies: the learner's capabilities, the pool, and the index, LM and
    teacher it has."""
    from curate.learners import capabilities_of

    have = set(capabilities_of(learner)) | {"pool"}
    if index is not None:
        have.add("index")
    if backend:
        have.add("backend")
    if teacher:
        have.add("teacher")
    return frozenset(have)


def strategy_from(name: str, params: Mapping[str, Any] | None = None, *, context=None,
                  available: Iterable[str] | None = None, aliases: Mapping[str, str] | None = None,
                  who: str = "this run", registry=None):
    """A registered strategy (:mod:`curate.acquire.registry`), after checking that ``available``
    (:func:`available_for`) covers what it needs; a paradigm's own short names are ``aliases``."""
    from curate.acquire.registry import REGISTRY

    return (registry or REGISTRY).build(name, params, context, available=available, aliases=aliases, who=who)


def index_for(texts: Sequence[str], embedder, ids=None, *, kind: str = "auto"):
    """The shared embedding index over ``texts`` (embedded by ``embedder``, cached by content)."""
    from curate.index import EmbeddingIndex

    return EmbeddingIndex.from_vectors(embedder.encode(list(texts)), ids, model=embedder.name, kind=kind)


# ---------------------------------------------------------------------------------------------- the loop


def loop_from(pool, *, strategy, annotator, learner, run_dir, init=None, ledger=None, stopping=None, **options):
    """The :class:`~curate.loop.ActiveLoop` of a run (every keyword of ActiveLoop passes through)."""
    from curate.loop import ActiveLoop

    return ActiveLoop(pool, strategy=strategy, annotator=annotator, learner=learner, run_dir=run_dir, init=init,
                      ledger=ledger, stopping=stopping, **options)
